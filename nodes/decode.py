"""Decode an AV latent into core types: IMAGE frames, AUDIO and VIDEO (VideoFromComponents), so core
CreateVideo / SaveVideo / PreviewAudio / SaveAudio and other packs' nodes take them unchanged.

Given streams (the V2A video, the A2V audio) come back as the input itself, not a codec round trip.
A batch of clips becomes one IMAGE batch and one VIDEO played back to back; AUDIO keeps the batch.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

from torch import Tensor

import comfy.model_management as mm
from comfy_api.latest import InputImpl, Types, io

from ..apollo_core.pipeline import decode_audio, decode_video
from .latent import read_latent
from .types import CATEGORY, ApolloCodecs, ApolloCodecsType

_OTHER_NODE = {"video": "Apollo Decode Audio", "audio": "Apollo Decode Video"}


def _check_content(meta: dict[str, Any], stream: str) -> None:
    task = meta.get("task")
    if task is not None and stream not in meta.get("content", []):
        raise ValueError(f"latent: task {task} produced no {stream}; decode it with {_OTHER_NODE[stream]}, or pick a "
                         f"task with {stream} on the sampler")


def decoded_frames(codecs: ApolloCodecs, latent: dict, chunk_frames: int) -> tuple[Tensor, float]:
    """`[B, T, H, W, 3]` 0..1 on the CPU, and the frame rate."""
    video, _, meta = read_latent(latent)
    _check_content(meta, "video")
    given = meta.get("given", {}).get("video")
    if given is not None:
        return given.float().cpu(), float(meta["fps"])
    mm.load_models_gpu([codecs.video_patcher])
    frames = decode_video(codecs.video, video.to(codecs.video_patcher.load_device), meta["frames"], chunk_frames)
    return frames.cpu(), float(meta["fps"])


def decoded_audio(codecs: ApolloCodecs, latent: dict) -> dict[str, Any]:
    _, audio, meta = read_latent(latent)
    _check_content(meta, "audio")
    given = meta.get("given", {}).get("audio")
    if given is None:
        mm.load_models_gpu([codecs.audio_patcher])
        given = decode_audio(codecs.audio, audio.to(codecs.audio_patcher.load_device), meta["samples"])
    return {"waveform": given.float().cpu().contiguous(), "sample_rate": int(meta["sample_rate"])}


def as_video(frames: Tensor, fps: float, audio: dict[str, Any] | None) -> Any:
    """VideoFromComponents of all clips back to back (VIDEO holds one clip; audio batch 1)."""
    images = frames.reshape(-1, *frames.shape[2:])  # [B*T, H, W, 3]
    track = None
    if audio is not None:
        wave = audio["waveform"]  # [B, C, S]
        track = {"waveform": wave.permute(1, 0, 2).reshape(1, wave.shape[1], -1), "sample_rate": audio["sample_rate"]}
    rate = Fraction(fps).limit_denominator(1001)
    return InputImpl.VideoFromComponents(Types.VideoComponents(images=images, frame_rate=rate, audio=track))


def _chunk_input() -> io.Int.Input:
    return io.Int.Input("chunk_frames", default=16, min=0, max=4096,
                        tooltip="Latent frames decoded at a time for long clips (0 = all at once); used when the "
                                "codec supports chunked decoding.")


def _images() -> io.Image.Output:
    return io.Image.Output("images", display_name="images")


def _fps() -> io.Float.Output:
    return io.Float.Output("fps", display_name="fps")


class ApolloDecodeAV(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApolloDecodeAV", display_name="Apollo Decode AV", category=f"{CATEGORY}/latent",
            description="Latent with video and audio -> IMAGE frames, AUDIO, VIDEO (with sound) and the fps.",
            inputs=[ApolloCodecsType.Input("codecs"), io.Latent.Input("latent"), _chunk_input()],
            outputs=[_images(), io.Audio.Output("audio", display_name="audio"),
                     io.Video.Output("video", display_name="video"), _fps()])

    @classmethod
    def execute(cls, codecs: ApolloCodecs, latent: dict, chunk_frames: int) -> io.NodeOutput:
        frames, fps = decoded_frames(codecs, latent, chunk_frames)
        audio = decoded_audio(codecs, latent)
        return io.NodeOutput(frames.reshape(-1, *frames.shape[2:]), audio, as_video(frames, fps, audio), fps)


class ApolloDecodeVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApolloDecodeVideo", display_name="Apollo Decode Video", category=f"{CATEGORY}/latent",
            description="The video stream -> IMAGE frames, a silent VIDEO and the fps (for T2V, TI2V).",
            inputs=[ApolloCodecsType.Input("codecs"), io.Latent.Input("latent"), _chunk_input()],
            outputs=[_images(), io.Video.Output("video", display_name="video"), _fps()])

    @classmethod
    def execute(cls, codecs: ApolloCodecs, latent: dict, chunk_frames: int) -> io.NodeOutput:
        frames, fps = decoded_frames(codecs, latent, chunk_frames)
        return io.NodeOutput(frames.reshape(-1, *frames.shape[2:]), as_video(frames, fps, None), fps)


class ApolloDecodeAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApolloDecodeAudio", display_name="Apollo Decode Audio", category=f"{CATEGORY}/latent",
            description="The audio stream -> AUDIO (for T2A; Preview Audio / Save Audio take it).",
            inputs=[ApolloCodecsType.Input("codecs"), io.Latent.Input("latent")],
            outputs=[io.Audio.Output("audio", display_name="audio")])

    @classmethod
    def execute(cls, codecs: ApolloCodecs, latent: dict) -> io.NodeOutput:
        return io.NodeOutput(decoded_audio(codecs, latent))


NODES = [ApolloDecodeAV, ApolloDecodeVideo, ApolloDecodeAudio]
