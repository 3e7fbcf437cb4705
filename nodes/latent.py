"""The AV latent: one core LATENT carrying the video and the audio stream plus their metadata.

Where ComfyUI has `comfy.nested_tensor` (0.3.75 does), `samples` is a NestedTensor of
(video `[B, C, T, H, W]`, audio `[B, C, T]`), the layout ComfyUI's samplers understand for
multi-stream latents; otherwise `samples` is the video and the audio sits under "apollo_audio".
Both layouts are read back, so a latent survives either. "apollo" holds the stream metadata.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from comfy_api.latest import io

from ..apollo_core.pipeline import geometry
from .types import CATEGORY, ApolloModel, ApolloModelType

try:
    from comfy.nested_tensor import NestedTensor
except ImportError:  # ComfyUI before nested latents
    NestedTensor = None

META, AUDIO, STREAM = "apollo", "apollo_audio", "apollo_stream"
_MADE_BY = "make it with Apollo Empty AV Latent (or Apollo Join AV Latent)"


def stream_meta(model: ApolloModel, seconds: float, width: int, height: int) -> tuple[dict[str, Any], Any]:
    config = model.config
    geo = geometry(config, seconds, width, height)
    meta = {"preset": config.name, "width": geo.width, "height": geo.height, "frames": geo.frames,
            "samples": geo.samples, "seconds": geo.frames / config.video.fps, "fps": config.video.fps,
            "sample_rate": config.audio.sample_rate, "video_latent_rate": config.video.latent_fps,
            "audio_latent_rate": config.audio.latent_rate, "content": [], "given": {}}
    return meta, geo


def make_latent(video: Tensor, audio: Tensor, meta: dict[str, Any]) -> dict[str, Any]:
    if NestedTensor is not None:
        return {"samples": NestedTensor([video, audio]), META: meta}
    return {"samples": video, AUDIO: audio, META: meta}


def read_latent(latent: Any, input_name: str = "latent") -> tuple[Tensor, Tensor, dict[str, Any]]:
    """(video, audio, metadata) of an AV latent; ValueError naming the input otherwise."""
    if not isinstance(latent, dict) or META not in latent or "samples" not in latent:
        raise ValueError(f"{input_name}: not an APOLLO AV latent (no stream metadata); {_MADE_BY}")
    if latent.get(STREAM) is not None:
        raise ValueError(f"{input_name}: this is only the {latent[STREAM]} part of an AV latent; join it back with "
                         "Apollo Join AV Latent")
    samples = latent["samples"]
    if getattr(samples, "is_nested", False):
        video, audio = samples.unbind()
    elif AUDIO in latent:
        video, audio = samples, latent[AUDIO]
    else:
        raise ValueError(f"{input_name}: the AV latent lost its audio stream; {_MADE_BY}")
    return video, audio, latent[META]


def check_against(model: ApolloModel, video: Tensor, audio: Tensor, meta: dict[str, Any], input_name: str) -> Any:
    """The clip geometry for `model`; raises if the latent was made for another model or size."""
    geo = geometry(model.config, meta["seconds"], meta["width"], meta["height"])
    if tuple(video.shape[1:]) != geo.video_latent or tuple(audio.shape[1:]) != geo.audio_latent:
        raise ValueError(f"{input_name}: latent shapes {tuple(video.shape[1:])} / {tuple(audio.shape[1:])} do not fit "
                         f"{model.name!r} ({geo.video_latent} / {geo.audio_latent}); rebuild it with Apollo Empty AV "
                         "Latent from this model")
    return geo


class ApolloEmptyAVLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApolloEmptyAVLatent", display_name="Apollo Empty AV Latent", category=f"{CATEGORY}/latent",
            description="An empty latent holding both streams for a clip of this size and length. The frame rate "
                        "and sample rate are the model's; sizes must fit its codec and patch sizes.",
            inputs=[ApolloModelType.Input("model"),
                    io.Int.Input("width", default=64, min=8, max=4096, step=8),
                    io.Int.Input("height", default=64, min=8, max=4096, step=8),
                    io.Float.Input("seconds", default=2.0, min=0.05, max=600.0, step=0.25, round=0.001),
                    io.Int.Input("batch_size", default=1, min=1, max=64)],
            outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, model: ApolloModel, width: int, height: int, seconds: float, batch_size: int) -> io.NodeOutput:
        meta, geo = stream_meta(model, seconds, width, height)
        video = torch.zeros(batch_size, *geo.video_latent)
        audio = torch.zeros(batch_size, *geo.audio_latent)
        return io.NodeOutput(make_latent(video, audio, meta))


class ApolloSplitAVLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApolloSplitAVLatent", display_name="Apollo Split AV Latent", category=f"{CATEGORY}/latent",
            description="Hands the video latent [B,C,T,H,W] and the audio latent [B,C,T] to other nodes as "
                        "plain LATENTs.",
            inputs=[io.Latent.Input("latent")],
            outputs=[io.Latent.Output("video", display_name="video"), io.Latent.Output("audio", display_name="audio")])

    @classmethod
    def execute(cls, latent: dict) -> io.NodeOutput:
        video, audio, meta = read_latent(latent)
        return io.NodeOutput({"samples": video, META: meta, STREAM: "video"},
                             {"samples": audio, META: meta, STREAM: "audio"})


class ApolloJoinAVLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApolloJoinAVLatent", display_name="Apollo Join AV Latent", category=f"{CATEGORY}/latent",
            description="Joins a video and an audio LATENT (from Apollo Split AV Latent) back into one AV latent.",
            inputs=[io.Latent.Input("video"), io.Latent.Input("audio")],
            outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, video: dict, audio: dict) -> io.NodeOutput:
        parts = {}
        for name, part in (("video", video), ("audio", audio)):
            if not isinstance(part, dict) or META not in part or not isinstance(part.get("samples"), Tensor):
                raise ValueError(f"{name}: not a part of an APOLLO AV latent; split one with Apollo Split AV Latent")
            dims = 5 if name == "video" else 3
            if part["samples"].dim() != dims:
                raise ValueError(f"{name}: expected a {dims}-d {name} latent, got shape {tuple(part['samples'].shape)}; "
                                 f"connect the {name} output of Apollo Split AV Latent")
            parts[name] = part["samples"]
        if parts["video"].shape[0] != parts["audio"].shape[0]:
            raise ValueError(f"audio: batch {parts['audio'].shape[0]} differs from the video batch "
                             f"{parts['video'].shape[0]}; join parts of the same latent batch")
        meta = dict(video[META])
        meta["content"] = sorted(set(video[META].get("content", [])) & {"video"}
                                 | set(audio[META].get("content", [])) & {"audio"})
        meta["given"] = {k: v for k, v in ((("video", video[META].get("given", {}).get("video")),
                                            ("audio", audio[META].get("given", {}).get("audio")))) if v is not None}
        return io.NodeOutput(make_latent(parts["video"], parts["audio"], meta))


NODES = [ApolloEmptyAVLatent, ApolloSplitAVLatent, ApolloJoinAVLatent]
