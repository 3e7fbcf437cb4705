"""Loaders: the APOLLO model, its video + audio codecs and the caption encoder.

Loaded objects are cached at module level (node classes are locked clones while they execute), keyed
by the file's path, size and mtime, so replacing a file reloads it.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch

import comfy.model_management as mm
import comfy.model_patcher
from comfy_api.latest import io

from ..apollo_core.checkpoint import WEIGHT_DTYPES, load_model, read_config
from ..apollo_core.codecs import AudioCodec, VideoCodec, load_codec
from ..apollo_core.pipeline import AUDIO_CODEC_FILE, VIDEO_CODEC_FILE
from ..apollo_core.text import load_text_encoder
from . import paths
from .types import (CATEGORY, ApolloCodecs, ApolloCodecsType, ApolloModel, ApolloModelType, ApolloTextEncoder,
                    ApolloTextEncoderType)

WEIGHT_DTYPE_CHOICES = ["auto", "bf16", "fp16", "fp32", "fp8_e4m3fn"]
ATTENTION_CHOICES = ["auto", "sdpa", "flash_attn", "sage"]
AUTO_ENCODER = "auto (from checkpoint)"
MINILM = "minilm"

_CACHE: dict[str, OrderedDict] = {"model": OrderedDict(), "codec": OrderedDict(), "text": OrderedDict()}
_CACHE_SIZE = {"model": 2, "codec": 4, "text": 2}


def _cached(kind: str, key: tuple, build: Callable[[], Any]) -> Any:
    cache = _CACHE[kind]
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = build()
    cache[key] = value
    while len(cache) > _CACHE_SIZE[kind]:
        cache.popitem(last=False)
    return value


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _compute_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if mm.should_use_bf16(device) else torch.float32


def load_apollo_model(checkpoint: str, weight_dtype: str = "auto", attention: str = "auto") -> ApolloModel:
    if weight_dtype != "auto" and weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype: {weight_dtype!r} is not one of {WEIGHT_DTYPE_CHOICES}")
    path = paths.resolve_model(checkpoint)
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()

    def build() -> ApolloModel:
        try:
            _, extra = read_config(path)
            model = load_model(path, attention=attention, weight_dtype=weight_dtype,
                               compute_dtype=_compute_dtype(load_device), device=offload_device)
        except ValueError as exc:
            raise ValueError(f"checkpoint {checkpoint!r}: {exc}. Pick an APOLLO-AV model file (the "
                             f"model.safetensors of a bundle folder in models/apollo)") from None
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
        return ApolloModel(patcher, checkpoint, str(extra.get("text_encoder", MINILM)), dict(extra.get("defaults", {})))

    return _cached("model", (_file_key(path), weight_dtype, attention, str(load_device)), build)


def _load_codec(name: str, embedded_file: str, input_name: str, protocol: type) -> tuple[Any, Any]:
    path = paths.resolve_codec(name, embedded_file, input_name)
    load_device, offload_device = mm.vae_device(), mm.vae_offload_device()

    def build() -> tuple[Any, Any]:
        try:
            codec = load_codec(path, device=offload_device)
        except ValueError as exc:
            raise ValueError(f"{input_name} {name!r}: {exc}") from None
        return codec, comfy.model_patcher.ModelPatcher(codec, load_device=load_device, offload_device=offload_device)

    codec, patcher = _cached("codec", (_file_key(path), str(load_device)), build)
    if not isinstance(codec, protocol):
        kind = "a video" if protocol is VideoCodec else "an audio"
        raise ValueError(f"{input_name} {name!r} holds a {type(codec).__name__}, not {kind} codec; pick the "
                         f"{embedded_file} of a bundle")
    return codec, patcher


def load_apollo_codecs(video_codec: str, audio_codec: str) -> ApolloCodecs:
    video, video_patcher = _load_codec(video_codec, VIDEO_CODEC_FILE, "video_codec", VideoCodec)
    audio, audio_patcher = _load_codec(audio_codec, AUDIO_CODEC_FILE, "audio_codec", AudioCodec)
    return ApolloCodecs(video, audio, video_patcher, audio_patcher, f"{video_codec} + {audio_codec}")


def _encoder_spec(choice: str, model: ApolloModel) -> str:
    """'minilm' or a local folder path for apollo_core.text.load_text_encoder."""
    wanted = model.text_encoder if choice == AUTO_ENCODER else choice
    if wanted.strip().lower() in ("", MINILM):
        return MINILM
    folders = paths.text_encoder_folders()
    if wanted in folders:
        return str(folders[wanted])
    by_leaf = [p for n, p in folders.items() if Path(n).name == Path(wanted).name]
    if len(by_leaf) == 1:
        return str(by_leaf[0])
    source = f"the checkpoint {model.name!r} was trained with caption encoder {wanted!r}" if choice == AUTO_ENCODER \
        else f"caption encoder {wanted!r} is not available"
    raise ValueError(f"encoder: {source}; put that transformers folder (config.json, tokenizer, *.safetensors) "
                     f"into models/text_encoders/{Path(wanted).name} and refresh, or choose {MINILM!r}")


def load_apollo_text_encoder(model: ApolloModel, encoder: str = AUTO_ENCODER) -> ApolloTextEncoder:
    spec = _encoder_spec(encoder, model)
    device = mm.text_encoder_device()
    text_encoder = _cached("text", (spec, str(device)), lambda: load_text_encoder(spec, device=device))
    want = model.config.text.caption_dim
    if text_encoder.dim != want:
        raise ValueError(f"encoder: {text_encoder.name!r} gives {text_encoder.dim}-d embeddings but {model.name!r} "
                         f"was trained on {want}-d captions; choose {AUTO_ENCODER!r} or the encoder it was trained with")
    return ApolloTextEncoder(text_encoder, model.config, text_encoder.name)


class ApolloModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApolloModelLoader", display_name="Apollo Load Model", category=f"{CATEGORY}/loaders",
            description="Loads an APOLLO-AV checkpoint from models/apollo or models/diffusion_models "
                        "(the embedded apollo-tiny needs no file).",
            inputs=[io.Combo.Input("checkpoint", options=paths.model_choices(), default=paths.EMBEDDED),
                    io.Combo.Input("weight_dtype", options=WEIGHT_DTYPE_CHOICES, default="auto",
                                   tooltip="Storage of the linear weights; auto keeps the file's. fp8 halves memory "
                                           "again and is upcast at each matmul."),
                    io.Combo.Input("attention", options=ATTENTION_CHOICES, default="auto",
                                   tooltip="auto picks the fastest installed backend.")],
            outputs=[ApolloModelType.Output(display_name="model")])

    @classmethod
    def execute(cls, checkpoint: str, weight_dtype: str, attention: str) -> io.NodeOutput:
        return io.NodeOutput(load_apollo_model(checkpoint, weight_dtype, attention))


class ApolloCodecLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = paths.codec_choices()
        return io.Schema(
            node_id="ApolloCodecLoader", display_name="Apollo Load Codecs (VAE)", category=f"{CATEGORY}/loaders",
            description="Loads the video and audio codecs that turn pixels and waveforms into APOLLO latents.",
            inputs=[io.Combo.Input("video_codec", options=choices, default=paths.EMBEDDED),
                    io.Combo.Input("audio_codec", options=choices, default=paths.EMBEDDED)],
            outputs=[ApolloCodecsType.Output(display_name="codecs")])

    @classmethod
    def execute(cls, video_codec: str, audio_codec: str) -> io.NodeOutput:
        return io.NodeOutput(load_apollo_codecs(video_codec, audio_codec))


class ApolloTextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        options = [AUTO_ENCODER, MINILM, *paths.text_encoder_folders()]
        return io.Schema(
            node_id="ApolloTextEncoderLoader", display_name="Apollo Load Text Encoder", category=f"{CATEGORY}/loaders",
            description="The caption encoder the model was trained with: MiniLM (shipped) or a local transformers "
                        "folder in models/text_encoders. Checked against the model's caption width.",
            inputs=[ApolloModelType.Input("model"),
                    io.Combo.Input("encoder", options=options, default=AUTO_ENCODER)],
            outputs=[ApolloTextEncoderType.Output(display_name="text_encoder")])

    @classmethod
    def execute(cls, model: ApolloModel, encoder: str) -> io.NodeOutput:
        return io.NodeOutput(load_apollo_text_encoder(model, encoder))


NODES = [ApolloModelLoader, ApolloCodecLoader, ApolloTextEncoderLoader]
