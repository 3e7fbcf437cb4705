"""End-to-end `apollo-av generate`: per task, the pipeline's phases timed in-process (load, text
encoding, input encoding, sampling, decoding, mux) and the whole command's wall time and peak
resident memory in a fresh process."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import torch

from apollo_core import avio
from apollo_core.checkpoint import save_model
from apollo_core.codecs import TinyAudioVAE, TinyVideoVAE, save_codec
from apollo_core.config import get_preset
from apollo_core.model.dit import ApolloDiT
from apollo_core.pipeline import (Bundle, Request, default_checkpoint, generate, load_bundle, resolve_checkpoint,
                                  sampling_steps)
from apollo_core.tasks import Task

PRESET_DEFAULTS = {"apollo-tiny": {"seconds": 2.0, "width": 64, "height": 64}, "debug": {"seconds": 2.0, "width": 32, "height": 32}}
PROMPTS = {"video_prompt": "a small red circle bounces on a dark blue background",
           "audio_prompt": "a low knock each time it hits the floor"}


def make_random_bundle(folder: Path, preset: str = "apollo-tiny", seed: int = 0) -> Path:
    """A bundle with the preset's architecture and untrained weights: the same compute as the
    trained checkpoint, for timing before one exists."""
    if preset not in PRESET_DEFAULTS:
        raise ValueError(f"random bundle preset {preset!r}: choose one of {sorted(PRESET_DEFAULTS)}")
    config = get_preset(preset)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ApolloDiT(config, attention="sdpa")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    save_model(folder / "model.safetensors", model, extra={"text_encoder": "minilm", "defaults": PRESET_DEFAULTS[preset]})
    save_codec(folder / "video_codec.safetensors", TinyVideoVAE.from_config(config.video))
    save_codec(folder / "audio_codec.safetensors", TinyAudioVAE.from_config(config.audio))
    return folder


def resolve_bench_checkpoint(path: str | Path | None) -> Path:
    """The checkpoint to time: the given one, else the embedded default; a clear error if neither."""
    target = Path(path) if path is not None else default_checkpoint()
    try:
        resolve_checkpoint(target)
    except ValueError as exc:
        raise ValueError(f"{exc}. For timing before a checkpoint exists, pass --random-bundle apollo-tiny") from None
    return target


class _Timed:
    """Forwards every attribute; the listed methods add their wall time to `clock[phase]`."""

    def __init__(self, obj: Any, clock: dict[str, float], phases: dict[str, str]) -> None:
        self._obj, self._clock, self._phases = obj, clock, phases

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        phase = self._phases.get(name)
        if phase is None or not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._clock[phase] += time.perf_counter() - start

        return timed


def write_task_inputs(folder: Path, bundle: Bundle) -> dict[str, Path]:
    """A still, a clip and a waveform at the bundle's default size for ti2v/ti2av, v2a and a2v."""
    config, d = bundle.config, bundle.defaults
    h, w, seconds = int(d.get("height", 64)), int(d.get("width", 64)), float(d.get("seconds", 2.0))
    frames = max(1, round(seconds * config.video.fps))
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    video = torch.stack([torch.stack([xx, yy, torch.full_like(xx, i / frames)], dim=-1) for i in range(frames)])  # [T, H, W, 3]
    sr = config.audio.sample_rate
    wave = 0.3 * torch.sin(2 * torch.pi * 220.0 * torch.arange(round(seconds * sr)) / sr)[None]  # [1, S]
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"image": folder / "image.png", "video": folder / "video.mp4", "audio": folder / "audio.wav"}
    _write_png(paths["image"], (video[0] * 255).round().to(torch.uint8).numpy())
    avio.write_mp4(paths["video"], avio.AVClip(frames=video, fps=config.video.fps))
    avio.write_wav(paths["audio"], wave, sr)
    return paths


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """An 8-bit RGB still `[H, W, 3]` through FFmpeg's png encoder (what avio.read_image decodes)."""
    h, w, _ = rgb.shape
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = w, h, "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _request(task: Task, bundle: Bundle, inputs: dict[str, Path], steps: int) -> Request:
    config = bundle.config
    image = avio.read_image(inputs["image"]) if task.needs_image else None
    video = avio.read_video(inputs["video"], fps=config.video.fps).frames if task.needs_video else None
    audio = avio.read_audio(inputs["audio"], sample_rate=config.audio.sample_rate, mono=True)[0] if task.needs_audio else None
    return Request(task=task, image=image, video=video, audio=audio, steps=steps, **PROMPTS)


def _phases(bundle: Bundle, task: Task, request: Request, out: Path) -> dict[str, float]:
    clock = {"encode_text": 0.0, "encode_inputs": 0.0, "decode": 0.0}
    codec_phases = {"encode": "encode_inputs", "decode": "decode"}
    timed = Bundle(bundle.model, _Timed(bundle.video_codec, clock, codec_phases), _Timed(bundle.audio_codec, clock, codec_phases),
                   _Timed(bundle.text_encoder, clock, {"encode": "encode_text"}), bundle.defaults)
    start = time.perf_counter()
    clip = generate(timed, request)
    total = time.perf_counter() - start
    start = time.perf_counter()
    if task is Task.T2A:
        avio.write_wav(out.with_suffix(".wav"), clip.waveform, clip.sample_rate)
    else:
        avio.write_mp4(out.with_suffix(".mp4"), clip, display_size=256)
    clock["mux"] = time.perf_counter() - start
    clock["sample"] = total - clock["encode_text"] - clock["encode_inputs"] - clock["decode"]
    clock["generate"] = total
    return clock


def run_cli(args: list[str], *, timeout_s: float = 900.0) -> dict[str, float]:
    """Wall time and peak RSS of `python -m apollo_core.cli ARGS` in a fresh process."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "apollo_core.cli", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, usage = _wait4(proc, timeout_s)
        finally:
            if proc.returncode is None and proc.poll() is None:
                proc.kill()
                proc.wait()
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            log.seek(0)
            raise RuntimeError(f"apollo-av {' '.join(args)} exited {code}:\n{log.read().decode(errors='replace')[-3000:]}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024.0}  # Linux reports KiB


def _wait4(proc: subprocess.Popen, timeout_s: float) -> tuple[int, int, Any]:
    """os.wait4 on one child: its own rusage (RUSAGE_CHILDREN would mix in every earlier child)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage
        if time.monotonic() > deadline:
            raise TimeoutError(f"apollo-av did not finish within {timeout_s:g} s")
        time.sleep(0.02)


def measure_end_to_end(checkpoint: Path, tasks: list[Task], *, steps: int | None = None,
                       log: Callable[[str], None] | None = None) -> dict:
    """Per task: in-process phase times (after one warm-up generate) and the CLI's wall time and
    peak RSS. The same seed, prompts, steps, CFG and display size as `apollo-av generate`; steps
    None: the command's own default (the checkpoint's recommended steps)."""
    start = time.perf_counter()
    bundle = load_bundle(checkpoint)
    load_s = time.perf_counter() - start
    given = steps
    steps = sampling_steps(bundle, steps)
    rows = []
    with tempfile.TemporaryDirectory(prefix="apollo-perf-e2e-") as tmp:
        folder = Path(tmp)
        inputs = write_task_inputs(folder / "inputs", bundle)
        generate(bundle, Request(task=Task.T2AV, steps=1, **PROMPTS))  # first-call costs stay out of the phases
        for task in tasks:
            if log:
                log(f"perf: end-to-end {task.value}")
            phases = _phases(bundle, task, _request(task, bundle, inputs, steps), folder / f"inproc-{task.value}")
            phases["load"] = load_s
            out = folder / f"cli-{task.value}{'.wav' if task is Task.T2A else '.mp4'}"
            args = ["generate", "--task", task.value, "--checkpoint", str(checkpoint), "--quiet", "--out", str(out),
                    "--video-prompt", PROMPTS["video_prompt"], "--audio-prompt", PROMPTS["audio_prompt"]]
            if given is not None:
                args += ["--steps", str(given)]
            for flag in ("image", "video", "audio"):
                if getattr(task, f"needs_{flag}"):
                    args += [f"--{flag}", str(inputs[flag])]
            cli = run_cli(args)
            if not out.is_file() or out.stat().st_size == 0:
                raise RuntimeError(f"apollo-av generate --task {task.value} wrote no output at {out}")
            rows.append({"task": task.value, "phases_s": phases, "cli_wall_s": cli["wall_s"], "cli_peak_rss_mib": cli["peak_rss_mib"]})
    return {"checkpoint": str(checkpoint), "preset": bundle.config.name, "defaults": bundle.defaults, "steps": steps,
            "steps_from": "command line" if given is not None else "checkpoint default",
            "tasks": rows}
