"""ComfyUI entry point: this repository is also a ComfyUI custom node folder.

ComfyUI imports this file as a package named after the folder, so everything below is imported
relatively (ComfyUI has its own top-level `nodes` module).
"""
import importlib.util

WEB_DIRECTORY = "./web"

if importlib.util.find_spec("comfy") is None:
    # Imported outside ComfyUI (pytest collecting this folder as a package, packaging tools):
    # there is no node registry to fill.
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
