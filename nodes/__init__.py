"""ComfyUI adapters for APOLLO-AV: the node classes the pack registers with ComfyUI.

The repository root's `__init__.py` re-exports these two mappings; V3 node classes go into
NODE_CLASS_MAPPINGS as `{schema.node_id: cls}` because ComfyUI 0.3.75 ignores `comfy_entrypoint`
when a module defines NODE_CLASS_MAPPINGS. Nodes are thin: they convert ComfyUI types and call
apollo_core (imported relatively: ComfyUI loads this folder as a package named after it).
"""
from __future__ import annotations

from . import decode, latent, loaders, sampler, save, text
from .examples import install_example_inputs
from .paths import register_folders

register_folders()  # before the schemas below list models/apollo
install_example_inputs()

NODE_LIST: list[type] = [*loaders.NODES, *text.NODES, *latent.NODES, *sampler.NODES, *decode.NODES, *save.NODES]

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _cls in NODE_LIST:
    _schema = _cls.define_schema()
    NODE_CLASS_MAPPINGS[_schema.node_id] = _cls
    NODE_DISPLAY_NAME_MAPPINGS[_schema.node_id] = _schema.display_name
