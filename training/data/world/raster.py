"""Anti-aliased drawing of whole clips at once: coverage = clip(0.5 - signed distance, 0, 1).

Signed distances are in pixels, negative inside; pixel centres sit at (j + 0.5, i + 0.5).
Arrays are float32 and shaped [T, H, W] so one call draws a shape in every frame.
"""
from __future__ import annotations

import numpy as np

_SQRT5 = np.float32(np.sqrt(5.0))


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates shaped [1, 1, W] (x) and [1, H, 1] (y)."""
    c = np.arange(size, dtype=np.float32) + np.float32(0.5)
    return c[None, None, :], c[None, :, None]


def _col(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)[:, None, None]  # [T] -> [T, 1, 1]


def bounds(cx: np.ndarray, cy: np.ndarray, r: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """Rows y0:y1 and columns x0:x1 holding every pixel a shape touches in any frame."""
    x0 = int(np.floor(np.min(cx - r))) - 1
    x1 = int(np.ceil(np.max(cx + r))) + 2
    y0 = int(np.floor(np.min(cy - r))) - 1
    y1 = int(np.ceil(np.max(cy + r))) + 2
    return max(0, y0), min(size, max(0, y1)), max(0, x0), min(size, max(0, x1))


def coverage(shape: str, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, size: int,
             box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Coverage [T, H, W] in [0, 1] of a shape with centre (cx, cy) and half-extent r ([T] each);
    with box = (y0, y1, x0, x1) only that window, [T, y1 - y0, x1 - x0].

    circle: radius r. square: side 2r. triangle: apex up at (cx, cy - r), base corners at
    (cx +- r, cy + r). All three have their bottom edge at cy + r.
    """
    x, y = grid(size)
    if box is not None:
        y, x = y[:, box[0]:box[1]], x[:, :, box[2]:box[3]]
    dx = x - _col(cx)  # [T, 1, W]
    dy = y - _col(cy)  # [T, H, 1]
    rr = _col(r)
    if shape == "circle":
        sd = np.sqrt(dx * dx + dy * dy) - rr
    elif shape == "square":
        sd = np.maximum(np.abs(dx), np.abs(dy)) - rr
    elif shape == "triangle":
        base = dy - rr
        sides = (2.0 * np.abs(dx) - dy - rr) / _SQRT5  # distance to the two slanted edges
        sd = np.maximum(base, sides)
    else:
        raise ValueError(f"shape {shape!r} is not one of ('circle', 'square', 'triangle')")
    return np.clip(np.float32(0.5) - sd, 0.0, 1.0)


def ellipse(cx: float, cy: float, a: np.ndarray, b: np.ndarray, size: int, top: int = 0, bottom: int | None = None) -> np.ndarray:
    """Coverage [T, bottom - top, W] of an axis-aligned ellipse with half-axes a (x) and b (y),
    [T] each, over pixel rows top .. bottom - 1 (the whole frame by default).

    Uses the first-order distance (f - 1) / |grad f| with f the ellipse's normalised radius, which
    stays a good pixel distance even for a one-pixel-thin (closed) mouth.
    """
    x, y = grid(size)
    y = y[:, top:bottom]
    ax, by = _col(a), _col(b)
    u = (x - np.float32(cx)) / ax  # [T, 1, W]
    v = (y - np.float32(cy)) / by  # [T, H, 1]
    f = np.sqrt(u * u + v * v)  # [T, H, W]
    grad = np.sqrt((u / ax) ** 2 + (v / by) ** 2)
    sd = np.where(grad > 0, (f - 1.0) * f / np.maximum(grad, 1e-12), -1e6)
    return np.clip(np.float32(0.5) - sd, 0.0, 1.0).astype(np.float32)


def blank(frames: int, size: int, rgb: tuple[int, int, int]) -> np.ndarray:
    """A channel-first canvas [3, T, H, W] filled with `rgb`. Channel-first keeps every
    compositing loop contiguous (a trailing axis of 3 made painting ~10x slower)."""
    canvas = np.empty((3, frames, size, size), dtype=np.float32)
    for c in range(3):
        canvas[c].fill(rgb[c])
    return canvas


def paint(canvas: np.ndarray, alpha: np.ndarray, rgb: tuple[int, int, int]) -> None:
    """Composite colour `rgb` over canvas [3, T, H, W] (float32, in place) with alpha [T|1, H, W]."""
    for c in range(3):
        canvas[c] += (np.float32(rgb[c]) - canvas[c]) * alpha


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    """[3, T, H, W] float -> [T, H, W, 3] uint8 (values are already within 0..255)."""
    u = np.rint(canvas).astype(np.uint8)
    return np.stack([u[0], u[1], u[2]], axis=-1)  # 3x faster than copying a transposed view
