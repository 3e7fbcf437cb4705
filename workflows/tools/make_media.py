"""Write the example inputs the templates load (workflows/media/apollo_example.{png,mp4,wav}).

Rendered by the synthetic AV world the embedded apollo-tiny was trained on, so the examples are
in its domain: a large red circle bouncing on a dark blue background with floor impacts at 0.25,
1.0 and 1.75 s (2 s, 64 px, 8 fps, 16 kHz). The PNG is its first frame (TI2V / TI2AV), the mp4
its frames (V2A), the wav its sound (A2V). Prints the world's captions, which the templates use
as prompts (workflow_specs.VIDEO_PROMPT / AUDIO_PROMPT).
Run: .venv/bin/python workflows/tools/make_media.py
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from apollo_core.avio import AVClip, write_mp4, write_wav
from training.data.world import ObjectSpec, SceneSpec, render

OUT = Path(__file__).resolve().parents[1] / "media"
BOUNCES = (0.25, 1.0, 1.75)  # seconds at which the ball touches the floor
SPEC = SceneSpec(seed=0, background="dark blue",
                 objects=(ObjectSpec(shape="circle", color="red", size="large", motion="bounce", times=BOUNCES),))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    sample = render(SPEC)
    Image.fromarray(sample.frames[0], "RGB").save(OUT / "apollo_example.png", optimize=True)
    frames = torch.from_numpy(sample.frames).float() / 255.0  # [T, H, W, 3]
    write_mp4(OUT / "apollo_example.mp4", AVClip(frames=frames, fps=SPEC.fps), crf=18)
    write_wav(OUT / "apollo_example.wav", torch.from_numpy(sample.audio)[None], SPEC.sample_rate)
    for path in sorted(OUT.glob("apollo_example.*")):
        print(f"{path.name}: {path.stat().st_size} bytes")
    print(f"video caption: {sample.video_caption!r}\naudio caption: {sample.audio_caption!r}")


if __name__ == "__main__":
    main()
