"""ComfyUI adapters for APOLLO-AV: the node classes the pack registers with ComfyUI.

The repository root's `__init__.py` re-exports these two mappings; V3 node classes go into
NODE_CLASS_MAPPINGS as `{schema.node_id: cls}` because ComfyUI 0.3.75 ignores `comfy_entrypoint`
when a module defines NODE_CLASS_MAPPINGS.
"""
NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
