"""Write the example inputs the templates load (workflows/media/apollo_example.{png,mp4,wav}).

Drawn here rather than taken from anywhere: a red ball over grass under a blue sky (the TI2V /
TI2AV first frame), the ball bouncing for 2 s at 8 fps (V2A), and 2 s of knocks at 16 kHz (A2V).
Run: .venv/bin/python workflows/tools/make_media.py
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image

from apollo_core.avio import AVClip, write_mp4, write_wav

OUT = Path(__file__).resolve().parents[1] / "media"
SIZE, FPS, SECONDS, RATE = 64, 8.0, 2.0, 16000
BOUNCES = (0.25, 1.0, 1.75)  # seconds at which the ball touches the ground


def scene(ball_y: float) -> torch.Tensor:
    """`[SIZE, SIZE, 3]` 0..1: sky gradient, grass below y=48, a red ball of radius 7 at (32, ball_y)."""
    y = torch.arange(SIZE, dtype=torch.float32)[:, None].expand(SIZE, SIZE)
    x = torch.arange(SIZE, dtype=torch.float32)[None, :].expand(SIZE, SIZE)
    sky = torch.stack([0.35 + 0.4 * y / SIZE, 0.55 + 0.35 * y / SIZE, torch.ones_like(y)], -1)
    grass = torch.tensor([0.2, 0.6, 0.2]).expand(SIZE, SIZE, 3)
    image = torch.where((y >= 48)[..., None], grass, sky)
    ball = ((x - 32) ** 2 + (y - ball_y) ** 2) <= 49
    return torch.where(ball[..., None], torch.tensor([0.9, 0.1, 0.1]).expand(SIZE, SIZE, 3), image)


def ball_height(t: float) -> float:
    """Parabolic bounce between the contacts: 40 (ground) up to 14."""
    period = BOUNCES[1] - BOUNCES[0]
    phase = ((t - BOUNCES[0]) % period) / period
    return 40 - 26 * 4 * phase * (1 - phase)


def knocks() -> torch.Tensor:
    t = torch.arange(int(SECONDS * RATE), dtype=torch.float32) / RATE
    wave = torch.zeros_like(t)
    for at in BOUNCES:
        dt = (t - at).clamp(min=0)
        wave += torch.where(t >= at, torch.sin(2 * math.pi * 180 * dt) * torch.exp(-dt * 30), torch.zeros_like(t))
    return (0.6 * wave)[None]  # [1, S]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    still = (scene(ball_height(0.6)) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(still, "RGB").save(OUT / "apollo_example.png", optimize=True)
    frames = torch.stack([scene(ball_height(i / FPS)) for i in range(int(SECONDS * FPS))])
    write_mp4(OUT / "apollo_example.mp4", AVClip(frames=frames, fps=FPS), crf=18)
    write_wav(OUT / "apollo_example.wav", knocks(), RATE)
    for path in sorted(OUT.glob("apollo_example.*")):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
