"""ComfyUI entry point: this repository is also a ComfyUI custom node folder.

ComfyUI imports this file as a package named after the folder, so everything below is imported
relatively (ComfyUI has its own top-level `nodes` module).
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
