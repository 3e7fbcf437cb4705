"""Save / preview a VIDEO as mp4 (H.264 + AAC) through apollo_core.avio.write_mp4.

Takes the core VIDEO type, so it also saves what core CreateVideo or LoadVideo make. The audio is
fitted to exactly frames / fps, odd frame sizes are padded to even, and the prompt and workflow are
embedded like core SaveVideo does. The UI result is `{"apollo_av": [file]}`, played by the pack's
web extension (web/apollo_av.js) in an inline player with sound.
"""
from __future__ import annotations

import json
import os
import random
from typing import Any

import folder_paths
from comfy.cli_args import args
from comfy_api.latest import io, ui

from ..apollo_core.avio import AAC_SAMPLE_RATES, AVClip, resample_audio, write_mp4
from .types import CATEGORY

UI_KEY = "apollo_av"
FALLBACK_RATE = 48000


def clip_from_video(video: Any) -> AVClip:
    if not hasattr(video, "get_components"):
        raise ValueError(f"video: expected a VIDEO (Apollo Decode AV, Create Video, Load Video), got "
                         f"{type(video).__name__}")
    parts = video.get_components()
    frames = parts.images[..., :3].float().cpu()
    wave = rate = None
    if parts.audio is not None:
        wave = parts.audio["waveform"][0].float().cpu()  # [C, S]: a VIDEO carries one audio track
        rate = int(parts.audio["sample_rate"])
        if wave.shape[0] > 2:
            wave = wave.mean(0, keepdim=True)
        if rate not in AAC_SAMPLE_RATES:
            wave, rate = resample_audio(wave, rate, FALLBACK_RATE), FALLBACK_RATE
    return AVClip(frames=frames, waveform=wave, fps=float(parts.frame_rate), sample_rate=rate)


def file_metadata(prompt: Any, extra_pnginfo: Any) -> dict[str, str] | None:
    if args.disable_metadata:
        return None
    tags = {key: json.dumps(value) for key, value in (extra_pnginfo or {}).items()}
    if prompt is not None:
        tags["prompt"] = json.dumps(prompt)
    return tags or None


def save_mp4(video: Any, prefix: str, folder: str, crf: int, display_size: int,
             metadata: dict | None) -> tuple[str, str]:
    clip = clip_from_video(video)
    height, width = clip.frames.shape[1:3]
    target = os.path.abspath(os.path.join(folder, os.path.dirname(os.path.normpath(prefix))))
    if os.path.commonpath((os.path.abspath(folder), target)) != os.path.abspath(folder):
        raise ValueError(f"filename_prefix: {prefix!r} points outside the {os.path.basename(folder)} folder; use a "
                         "relative prefix such as apollo/ApolloAV")
    full_folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, folder, width, height)
    filename = f"{name}_{counter:05}_.mp4"
    write_mp4(os.path.join(full_folder, filename), clip, crf=crf, display_size=display_size or None,
              metadata=metadata)
    return filename, subfolder


def _inputs(prefix: str) -> list:
    return [io.Video.Input("video"),
            io.String.Input("filename_prefix", default=prefix),
            io.Int.Input("crf", default=18, min=0, max=51, tooltip="H.264 quality: lower is better and larger "
                                                                   "(18 looks lossless, 23 is x264's default)."),
            io.Int.Input("display_size", default=256, min=0, max=4096, step=8,
                         tooltip="Nearest-neighbour upscale so the larger side is this many pixels (0 keeps the "
                                 "model's size); small models make small frames.")]


class ApolloSaveAV(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApolloSaveAV", display_name="Apollo Save AV (mp4)", category=f"{CATEGORY}/output",
            description="Saves a VIDEO with its sound as mp4 (H.264 + AAC) into the output folder, with the "
                        "workflow embedded, and plays it on the node.",
            inputs=_inputs("apollo/ApolloAV"),
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo], is_output_node=True)

    @classmethod
    def execute(cls, video: Any, filename_prefix: str, crf: int, display_size: int) -> io.NodeOutput:
        metadata = file_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo)
        filename, subfolder = save_mp4(video, filename_prefix, folder_paths.get_output_directory(), crf,
                                       display_size, metadata)
        return io.NodeOutput(ui={UI_KEY: [ui.SavedResult(filename, subfolder, io.FolderType.output)]})


class ApolloPreviewAV(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApolloPreviewAV", display_name="Apollo Preview AV", category=f"{CATEGORY}/output",
            description="Plays a VIDEO with its sound on the node (written to the temp folder, not kept).",
            inputs=_inputs("ApolloAV_preview"),
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo], is_output_node=True)

    @classmethod
    def execute(cls, video: Any, filename_prefix: str, crf: int, display_size: int) -> io.NodeOutput:
        prefix = f"{filename_prefix}_{''.join(random.choices('abcdefghijklmnopqrstuvwxyz', k=5))}"
        metadata = file_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo)
        filename, subfolder = save_mp4(video, prefix, folder_paths.get_temp_directory(), crf, display_size, metadata)
        return io.NodeOutput(ui={UI_KEY: [ui.SavedResult(filename, subfolder, io.FolderType.temp)]})


NODES = [ApolloSaveAV, ApolloPreviewAV]
