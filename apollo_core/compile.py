"""torch.compile for the MM-DiT, kept outside the model (the model file only wires layers).

Regional compilation: each joint block is compiled on its own, so the compiled graph is reused by
every block of the same structure and compile time does not grow with depth. Inductor fuses the
element-wise work around the matmuls (adaLN modulate, gates, QK norm, RoPE), which is what eager
PyTorch spends its non-matmul time on at small widths.
"""
from __future__ import annotations

import torch
from torch import nn


def compile_blocks(model: nn.Module, *, mode: str | None = None, dynamic: bool | None = None) -> nn.Module:
    """Compile `model.blocks[i]` in place (ApolloDiT, or any module with a `blocks` ModuleList)
    and return the model. Raises ValueError when this PyTorch cannot compile (no inductor or no
    C++ compiler for the CPU backend), naming the fix."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(f"compile_blocks needs a model with a `blocks` ModuleList, got {type(model).__name__}")
    check_compile_available()
    for block in blocks:
        block.compile(mode=mode, dynamic=dynamic)
    return model


def check_compile_available() -> None:
    if not hasattr(torch, "compile"):
        raise ValueError(f"torch {torch.__version__} has no torch.compile; install torch >= 2.1 or run without compile")
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler  # the CPU backend's C++ toolchain probe

        get_cpp_compiler()
    except Exception as exc:  # inductor raises several kinds when no compiler is found
        raise ValueError(f"torch.compile's CPU backend needs a C++ compiler (g++ or clang++) on PATH: {exc}; "
                         "install one (e.g. `apt-get install g++`) or run without compile") from None
