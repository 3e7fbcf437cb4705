"""The AV sampler: one node for every task, the task selector decides which streams are generated,
which are given (encoded from the image / video / audio inputs) and which are left out."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from ..apollo_core.avio import fit_audio
from ..apollo_core.codecs import check_codecs
from ..apollo_core.flow import frame_noise
from ..apollo_core.pipeline import denoise, encode_frames, encode_image, encode_waveform, frame_spread
from ..apollo_core.sampling import Solver
from ..apollo_core.tasks import Role, Task
from . import preview
from .latent import check_against, make_latent, read_latent
from .media import audio_waveform, reference_image, video_frames
from .text import fit_batch, from_comfy
from .types import TASKS, CATEGORY, ApolloCodecs, ApolloCodecsType, ApolloModel, ApolloModelType

SOLVERS = [s.value for s in Solver]
# The embedded apollo-tiny's recommended values (its bundle's defaults "steps", "solver" and
# "audio_sync_cfg"; a test keeps them equal): a widget default exists before any model is chosen.
# The sync widgets are optional so API prompts saved before them still run.
STEPS_DEFAULT = 12
SAMPLER_DEFAULT = "euler_ancestral"
AUDIO_SYNC_DEFAULT = 2.5
_NEEDS = {
    "image": "a reference image: connect Load Image (or any IMAGE) to the image input",
    "video": "the input video: connect Load Video (VIDEO) or IMAGE frames to the video input",
    "audio": "the input audio: connect Load Audio (AUDIO) to the audio input",
}


def _batched(x: Tensor, batch: int, input_name: str) -> Tensor:
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:])
    raise ValueError(f"{input_name}: batch of {x.shape[0]} for a latent batch of {batch}; give one or {batch}")


def _require(task: Task, image: Any, video: Any, audio: Any) -> None:
    for name, needed, value in (("image", task.needs_image, image), ("video", task.needs_video, video),
                                ("audio", task.needs_audio, audio)):
        if needed and value is None:
            raise ValueError(f"{name}: task {task.name} needs {_NEEDS[name]}")


def initial_state(model: ApolloModel, codecs: ApolloCodecs, task: Task, geo: Any, batch: int, gen: torch.Generator,
                  image: Any, video: Any, audio: Any) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Noise for generated streams, encoded latents for given ones (drawn from `gen` in the order
    apollo_core.pipeline.generate draws them, so a seed means the same clip in both)."""
    config, spec = model.config, task.spec
    vdev = codecs.video_patcher.load_device
    adev = codecs.audio_patcher.load_device
    init: dict[str, Tensor] = {}
    given: dict[str, Tensor] = {}
    if spec.has_video:
        init["video"] = frame_noise((batch, *geo.video_latent), config.video_noise_corr, generator=gen)
        if spec.video is Role.GIVEN:
            step = config.video.temporal_compression * config.video.patch_t / config.video.fps
            frames = _batched(video_frames(video, config.video.fps, geo.frames, geo.width, geo.height, step),
                              batch, "video")
            init["video"] = encode_frames(codecs.video, frames.to(vdev)).cpu()
            given["video"] = frames.contiguous()
        elif spec.first_frame_given:
            still = _batched(reference_image(image, geo.width, geo.height), batch, "image")
            init["video"][:, :, :1] = encode_image(codecs.video, still.to(vdev)).cpu()
    if spec.has_audio:
        init["audio"] = torch.randn(batch, *geo.audio_latent, generator=gen)
        if spec.audio is Role.GIVEN:
            wave = _batched(audio_waveform(audio, config.audio.sample_rate, geo.audio_latent[1] * config.audio.hop),
                            batch, "audio")
            wave = wave.expand(-1, codecs.audio.channels, -1)
            init["audio"] = encode_waveform(codecs.audio, wave.to(adev)).cpu()
            given["audio"] = torch.stack([fit_audio(w, geo.samples) for w in wave])
    return init, given


class ApolloSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApolloSampler", display_name="Apollo AV Sampler", category=f"{CATEGORY}/sampling",
            description="Generates the streams the task asks for (T2AV text->video+audio, TI2AV/TI2V from a first "
                        "frame, T2V, T2A, V2A video->audio, A2V audio->video).",
            inputs=[ApolloModelType.Input("model"), ApolloCodecsType.Input("codecs"),
                    io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Latent.Input("latent"),
                    io.Combo.Input("task", options=list(TASKS), default="T2AV"),
                    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                    io.Int.Input("steps", default=STEPS_DEFAULT, min=1, max=10000),
                    io.Float.Input("video_cfg", default=3.0, min=0.0, max=30.0, step=0.1, round=0.01,
                                   tooltip="Guidance of the video stream (1 = off)."),
                    io.Float.Input("audio_cfg", default=3.0, min=0.0, max=30.0, step=0.1, round=0.01,
                                   tooltip="Guidance of the audio stream (1 = off)."),
                    io.Float.Input("shift", default=1.0, min=0.01, max=100.0, step=0.05, round=0.01,
                                   tooltip="Timestep shift: > 1 spends more steps near noise."),
                    io.Combo.Input("sampler", options=SOLVERS, default=SAMPLER_DEFAULT,
                                   tooltip="euler_ancestral adds fresh noise each step (eta 0.5); euler is "
                                           "deterministic."),
                    io.Float.Input("video_sync_cfg", default=0.0, min=-10.0, max=30.0, step=0.1, round=0.01,
                                   optional=True,
                                   tooltip="Cross-modal guidance: how hard the video follows the audio in T2AV, "
                                           "TI2AV and A2V (0 = off; one more model pass per step)."),
                    io.Float.Input("audio_sync_cfg", default=AUDIO_SYNC_DEFAULT, min=-10.0, max=30.0, step=0.1,
                                   round=0.01, optional=True,
                                   tooltip="Cross-modal guidance: how hard the audio follows the video in T2AV, "
                                           "TI2AV and V2A, so sounds land on their visual events (0 = off; a "
                                           "cheap extra audio-only pass per step)."),
                    io.Image.Input("image", optional=True, tooltip="First frame for TI2V and TI2AV."),
                    io.MultiType.Input("video", types=[io.Video, io.Image], optional=True,
                                       tooltip="Input video for V2A: a VIDEO, or IMAGE frames at the model's fps."),
                    io.Audio.Input("audio", optional=True, tooltip="Input audio for A2V (any sample rate).")],
            outputs=[io.Latent.Output()],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, model: ApolloModel, codecs: ApolloCodecs, positive: list, negative: list, latent: dict,
                task: str, seed: int, steps: int, video_cfg: float, audio_cfg: float, shift: float, sampler: str,
                video_sync_cfg: float = 0.0, audio_sync_cfg: float = AUDIO_SYNC_DEFAULT,
                image: Tensor | None = None, video: Any = None, audio: dict | None = None) -> io.NodeOutput:
        job = Task.parse(task)
        video0, audio0, meta = read_latent(latent)
        geo = check_against(model, video0, audio0, meta, "latent")
        try:
            check_codecs(model.config, codecs.video, codecs.audio)
        except ValueError as exc:
            raise ValueError(f"codecs: {exc}") from None
        batch = video0.shape[0]
        cond = fit_batch(from_comfy(positive, "positive"), batch, "positive")
        uncond = fit_batch(from_comfy(negative, "negative"), batch, "negative")
        _require(job, image, video, audio)
        mm.load_models_gpu([model.patcher, *codecs.patchers], force_full_load=True)
        gen = torch.Generator().manual_seed(seed)  # the initial noise, then euler_ancestral's, as in generate
        init, given = initial_state(model, codecs, job, geo, batch, gen, image, video, audio)
        device = model.patcher.load_device
        bar = comfy.utils.ProgressBar(steps, node_id=cls.hidden.unique_id)

        def on_step(step: int, total: int, estimate: dict[str, Tensor]) -> None:
            mm.throw_exception_if_processing_interrupted()
            bar.update_absolute(step, total, preview.render(codecs, estimate, job.spec.generates))

        out = denoise(model.patcher.model, job, cond.to(device), uncond.to(device),
                      {k: v.to(device) for k, v in init.items()}, steps=steps, video_cfg=video_cfg,
                      audio_cfg=audio_cfg, shift=shift, solver=sampler, callback=on_step,
                      video_sync_cfg=video_sync_cfg, audio_sync_cfg=audio_sync_cfg, generator=gen,
                      spread=frame_spread(model.defaults, None))  # a model trained to sample so
        result = {k: v.float().cpu() for k, v in out.items()}
        meta = dict(meta, task=job.name, content=[m for m in ("video", "audio") if m in result], given=given)
        return io.NodeOutput(make_latent(result.get("video", video0), result.get("audio", audio0), meta))


NODES = [ApolloSampler]
