"""Tasks meet flow matching: build the model's streams for a task, turn its raw output into
velocities, and score it with the per-modality losses of the paper (Eq. 7-9).

Training and sampling both go through `assemble` and `velocities`, so a task means the same thing
in both places.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import ApolloConfig
from .flow import (clean_estimate, expand_time, frame_noise, interpolate, logit_normal, masked_mse, shift_time,
                   spread_times, time_weight, to_velocity, velocity_target)
from .streams import ApolloInputs, audio_stream, text_stream, video_stream
from .tasks import Role, Task


@dataclass(frozen=True)
class Conditioning:
    """Encoded prompts for a batch: caption embeddings per modality and the speech byte ids."""

    video_tokens: Tensor  # [B, Lv, Dc]
    video_mask: Tensor  # [B, Lv] bool
    audio_tokens: Tensor  # [B, La, Dc]
    audio_mask: Tensor  # [B, La] bool
    speech: Tensor  # [B, S] long byte ids (apollo_core.text.speech)
    speech_mask: Tensor  # [B, S] bool

    @property
    def batch(self) -> int:
        return self.video_tokens.shape[0]

    def index(self, idx: Tensor) -> "Conditioning":
        return Conditioning(*(getattr(self, f)[idx] for f in _FIELDS))

    @staticmethod
    def cat(items: "list[Conditioning]") -> "Conditioning":
        """Batch-concatenate, padding each token axis to the longest (padding is masked out)."""
        out = []
        for f in _FIELDS:
            parts = [getattr(c, f) for c in items]
            longest = max(p.shape[1] for p in parts)
            padded = []
            for p in parts:
                pad = longest - p.shape[1]
                if pad:
                    filler = torch.zeros(p.shape[0], pad, *p.shape[2:], dtype=p.dtype, device=p.device)
                    p = torch.cat([p, filler], dim=1)
                padded.append(p)
            out.append(torch.cat(padded, dim=0))
        return Conditioning(*out)

    def to(self, device: torch.device | str) -> "Conditioning":
        return Conditioning(*(getattr(self, f).to(device) for f in _FIELDS))


@dataclass(frozen=True)
class Swap:
    """Counterfactual clean video for a batch: on `rows` whose flow time lies in [t_min, t_max],
    the noisy video is drawn from `video` (the same scene with an attribute changed) while the
    target stays the clip the caption describes. A sampler's trajectory settles an object's
    place before its shape, and a model trained only on true noisy clips learns to keep
    whatever shape the noisy clip holds by then; these rows reward following the caption
    instead (measured in the apollo-tiny assets README)."""

    video: Tensor  # [B, C, T, H, W]
    rows: Tensor  # [B] bool
    t_min: float = 0.2
    t_max: float = 0.7


@dataclass(frozen=True)
class Retime:
    """Audio timing counterfactual for a batch: on rows with a nonzero `shift` whose flow time lies
    in [t_min, t_max], the noisy audio is drawn from the clip's own audio moved by `shift` latent
    frames (wrapping round), while the target stays the true, in-time audio. A sampler settles
    the onsets' times while the audio is still mostly noise, and a model trained only on true
    noisy clips learns to keep whatever onsets the noisy audio holds by then; these rows reward
    moving them to the video's events instead (measured in the apollo-tiny assets README)."""

    shift: Tensor  # [B] long, audio latent frames (+ = the noisy audio late); 0 = a true row
    t_min: float = 0.0
    t_max: float = 0.35


_FIELDS = ("video_tokens", "video_mask", "audio_tokens", "audio_mask", "speech", "speech_mask")


def assemble(config: ApolloConfig, task: Task, *, video: Tensor | None, audio: Tensor | None, t: Tensor,
             cond: Conditioning, estimate: dict[str, Tensor] | None = None,
             spread: Tensor | None = None) -> ApolloInputs:
    """Streams for `task` with the current latents (noisy where generated, clean where given).
    t: `[B]` flow time of the generated modalities. estimate: the previous clean estimate of the
    generated streams, read by a model with `self_condition` (ignored by one without). spread:
    `[B]` the generated frames' time spread (`flow.spread_times`; None: every frame at t)."""
    spec = task.spec
    reads = estimate_streams(config, task)
    estimate = {k: x for k, x in (estimate or {}).items() if k in reads}
    v_stream = vt_stream = at_stream = a_stream = None
    if spec.has_video:
        if video is None:
            raise ValueError(f"task {task.value} needs video latents")
        v_stream = video_stream(config, video, t, first_frame_given=spec.first_frame_given,
                                given=spec.video is Role.GIVEN, self_cond=estimate.get("video"),
                                frame_t=None if spread is None else spread_times(t, spread, video.shape[2]))
        vt_t = torch.ones_like(t) if spec.video is Role.GIVEN else t
        vt_stream = text_stream(cond.video_tokens, cond.video_mask, vt_t)
    if spec.has_audio:
        if audio is None:
            raise ValueError(f"task {task.value} needs audio latents")
        frames = video.shape[2] if video is not None else None
        a_stream = audio_stream(config, audio, t, given=spec.audio is Role.GIVEN, video_latent_frames=frames,
                                self_cond=estimate.get("audio"),
                                frame_t=None if spread is None else spread_times(t, spread, audio.shape[2]))
        at_t = torch.ones_like(t) if spec.audio is Role.GIVEN else t
        at_stream = text_stream(cond.audio_tokens, cond.audio_mask, at_t, cond.speech, cond.speech_mask)
    return ApolloInputs(video=v_stream, video_text=vt_stream, audio_text=at_stream, audio=a_stream)


def frame_weight(task: Task, video: Tensor) -> Tensor | None:
    """`[B, 1, T, 1, 1]` zeros on a given first frame (not generated, not scored), else None."""
    if not task.spec.first_frame_given:
        return None
    w = torch.ones(video.shape[0], 1, video.shape[2], 1, 1, dtype=video.dtype, device=video.device)
    w[:, :, 0] = 0
    return w


def video_time(task: Task, t: Tensor, frames: int, spread: Tensor | None = None) -> Tensor:
    """Per-latent-frame time `[B, T]`: the given first frame sits at t=1; `spread` as in `assemble`."""
    tf = t.view(-1, 1).expand(-1, frames).clone() if spread is None else spread_times(t, spread, frames)
    if task.spec.first_frame_given:
        tf[:, 0] = 1.0
    return tf


def stream_time(task: Task, name: str, t: Tensor, frames: int, spread: Tensor | None = None) -> Tensor:
    """The flow time of generated stream `name` with `frames` latent frames: `[B]` t, or `[B, T]`
    per frame (video, or any stream with a spread)."""
    if name == "video":
        return video_time(task, t, frames, spread)
    return t if spread is None else spread_times(t, spread, frames)


def velocities(model: nn.Module, task: Task, inputs: ApolloInputs, state: dict[str, Tensor], t: Tensor,
               spread: Tensor | None = None) -> dict[str, Tensor]:
    """Velocities for the generated modalities; zero on a given first frame."""
    raw = model(inputs)
    out = {}
    for name in task.spec.generates:
        x = state[name]
        tt = stream_time(task, name, t, x.shape[2], spread)
        v = to_velocity(raw[name], x.float(), tt, model.config.prediction)
        w = frame_weight(task, x) if name == "video" else None
        out[name] = v if w is None else v * w
    return out


FRAME_SPREAD_SHARE = 0.5  # the share of rows `training_loss` draws at its frame_spread
ONSET_SHARE = 0.1  # the share of a batch's audio latent frames that `onset_weight` boosts


def _boost_top(score: Tensor, boost: float, share: float) -> Tensor:
    """1 + boost where `score` is in its batch's top `share`, else 1 (same shape as score)."""
    threshold = torch.quantile(score.flatten(), 1.0 - share)
    return 1.0 + boost * (score >= threshold).float()


def onset_envelope(audio: Tensor) -> Tensor:
    """`[B, F]` how much audio latents `[B, C, F]` change from the previous frame (frame 0 takes
    frame 1's change): high on onsets."""
    step = (audio[:, :, 1:] - audio[:, :, :-1]).float().norm(dim=1)  # [B, F-1]
    return torch.cat([step[:, :1], step], dim=1)  # [B, F]


def envelope_error(estimate: Tensor, clean: Tensor) -> Tensor:
    """Per-sample `[B]` squared error of the clean estimate's onset envelope against the clip's,
    relative to the batch's mean squared envelope.

    Why: where the audio is mostly noise, the mean squared error of a clean estimate is dominated
    by what no input tells (pitch, timbre), while the onsets' times are told by the video; this
    error scores the timing alone, so a model that ignores the video's events pays for it."""
    target = onset_envelope(clean)  # [B, F]
    err = (onset_envelope(estimate) - target).pow(2).mean(1)  # [B]
    return err / target.pow(2).mean().clamp_min(1e-8)


def onset_weight(audio: Tensor, boost: float, share: float = ONSET_SHARE) -> Tensor:
    """Per-frame loss weights `[B, 1, F]` for clean audio latents `[B, C, F]`: 1 + boost on the
    `share` of the batch's frames whose latent changes most from the previous frame (onsets).

    Why: a sound's timing lives in a few onset frames, and the mean over all frames lets a model
    that ignores when the video's events happen lose almost nothing; the boost makes misplaced
    onsets cost more. The proxy reads the latents alone, so it needs no event labels."""
    return _boost_top(onset_envelope(audio), boost, share).unsqueeze(1)  # [B, 1, F]


FOREGROUND_SHARE = 0.15  # the share of a batch's video latent pixels that `foreground_weight` boosts


def foreground_weight(video: Tensor, boost: float, share: float = FOREGROUND_SHARE) -> Tensor:
    """Per-latent-pixel loss weights `[B, 1, T, H, W]` for clean video latents `[B, C, T, H, W]`:
    1 + boost on the `share` of the batch's latent pixels farthest from their frame's median
    latent (the background), i.e. on the objects.

    Why: objects cover a small part of each frame, so in the plain mean the background dominates
    and a model that blurs or misplaces the objects loses little; the boost spends more of a small
    model's capacity on what the captions describe (measured on apollo-tiny: its assets README)."""
    x = video.float()
    median = x.flatten(3).median(dim=3).values[..., None, None]  # [B, C, T, 1, 1] the frame's background
    dev = (x - median).norm(dim=1, keepdim=True)  # [B, 1, T, H, W]
    return _boost_top(dev, boost, share)  # [B, 1, T, H, W]


MOTION_SHARE = 0.1  # the share of a batch's video latent pixels that `motion_weight` boosts


def motion_weight(video: Tensor, boost: float, share: float = MOTION_SHARE) -> Tensor:
    """Per-latent-pixel loss weights `[B, 1, T, H, W]` for clean video latents `[B, C, T, H, W]`:
    1 + boost on the `share` of the batch's latent pixels that change most between neighbouring
    latent frames (the larger of the change from the previous and to the next frame), i.e. where
    an object arrives or leaves.

    Why: a small model draws a moving object as a still blob at its mean place; per latent pixel
    that costs little, since the object covers about one pixel of each frame. The pixels it
    leaves and enters are where that costs, and this boost makes them weigh more. On apollo-tiny's
    third run it did not move motion and doubled FD video (its assets README): off by default."""
    x = video.float()
    step = (x[:, :, 1:] - x[:, :, :-1]).norm(dim=1, keepdim=True)  # [B, 1, T-1, H, W]
    pad = torch.zeros_like(step[:, :, :1])
    change = torch.maximum(torch.cat([pad, step], dim=2), torch.cat([step, pad], dim=2))  # [B, 1, T, H, W]
    return _boost_top(change, boost, share)  # [B, 1, T, H, W]


SELF_CONDITION_SHARE = 0.5  # the share of training batches that see a first estimate (Analog Bits)


def estimate_streams(config: ApolloConfig, task: Task) -> tuple[str, ...]:
    """The generated streams of `task` that read a self-conditioning estimate (none for a plain
    model, or when the task generates no self-conditioned stream)."""
    return tuple(k for k in task.spec.generates if k in config.self_conditioned)


def clean_estimates(task: Task, state: dict[str, Tensor], v: dict[str, Tensor], t: Tensor,
                    spread: Tensor | None = None) -> dict[str, Tensor]:
    """x1_hat per generated stream from its velocity at flow time `t` `[B]` (a given first frame,
    whose velocity is zero, stays as it is)."""
    out = {}
    for name, u in v.items():
        tt = stream_time(task, name, t, state[name].shape[2], spread)
        out[name] = clean_estimate(state[name].float(), u, tt)
    return out


def self_condition_estimate(model: nn.Module, task: Task, inputs: ApolloInputs, state: dict[str, Tensor],
                            t: Tensor, spread: Tensor | None = None) -> dict[str, Tensor]:
    """The model's clean estimate of the generated streams without one of its own (no gradient):
    what a self-conditioned model reads on the pass that trains it, like the previous step's
    estimate at sampling."""
    with torch.no_grad():
        return clean_estimates(task, state, velocities(model, task, inputs, state, t, spread), t, spread)


def _counterfactual(clean_alt: Tensor, use: Tensor, x0: Tensor, x1: Tensor, xt: Tensor, target: Tensor,
                    tt: Tensor) -> tuple[Tensor, Tensor]:
    """Noisy input and velocity target with the `use` rows `[B]` drawn from `clean_alt` (like x1)."""
    if not bool(use.any()):
        return xt, target
    use = use.view(-1, *([1] * (x1.dim() - 1)))
    alt = interpolate(x0, clean_alt.to(x1), tt)  # like x1
    # The velocity that carries this noisy input to the true clip x1 by t = 1.
    fix = (x1 - alt) / (1.0 - expand_time(tt, x1))
    return torch.where(use, alt, xt), torch.where(use, fix, target)


def _swapped(swap: Swap, x0: Tensor, x1: Tensor, xt: Tensor, target: Tensor, t: Tensor,
             tt: Tensor) -> tuple[Tensor, Tensor]:
    """Noisy video and velocity target with `swap`'s rows drawn from the counterfactual clips."""
    if swap.video.shape != x1.shape or swap.rows.shape != t.shape:
        raise ValueError(f"swap: video {tuple(swap.video.shape)} and rows {tuple(swap.rows.shape)} must match the "
                         f"batch's video {tuple(x1.shape)} and times {tuple(t.shape)}")
    use = swap.rows.to(t.device) & (t >= swap.t_min) & (t <= swap.t_max)  # [B]
    return _counterfactual(swap.video, use, x0, x1, xt, target, tt)


def roll_frames(x: Tensor, shift: Tensor) -> Tensor:
    """`x` `[B, C, F]` with each row moved `shift[b]` frames later along F, wrapping round."""
    f = x.shape[2]
    idx = (torch.arange(f, device=x.device)[None] - shift.to(x.device).view(-1, 1)) % f  # [B, F]
    return x.gather(2, idx[:, None, :].expand(-1, x.shape[1], -1))  # [B, C, F]


def _retimed(retime: Retime, x0: Tensor, x1: Tensor, xt: Tensor, target: Tensor, t: Tensor,
             tt: Tensor) -> tuple[Tensor, Tensor]:
    """Noisy audio and velocity target with `retime`'s rows drawn from the moved audio."""
    if retime.shift.shape != t.shape:
        raise ValueError(f"retime: shift {tuple(retime.shift.shape)} must match the batch's times {tuple(t.shape)}")
    shift = retime.shift.to(t.device)
    use = (shift != 0) & (t >= retime.t_min) & (t <= retime.t_max)  # [B]
    return _counterfactual(roll_frames(x1, shift), use, x0, x1, xt, target, tt)


def training_loss(model: nn.Module, task: Task, *, video: Tensor | None, audio: Tensor | None, cond: Conditioning,
                  generator: torch.Generator | None = None, t: Tensor | None = None, logit_mean: float = 0.0,
                  logit_std: float = 1.0, shift: float = 1.0, onset_boost: float = 0.0,
                  foreground_boost: float = 0.0, motion_boost: float = 0.0,
                  weight_cap: float = 0.0, swap: Swap | None = None, retime: Retime | None = None,
                  frame_spread: float = 0.0, envelope: float = 0.0) -> dict[str, Tensor]:
    """Flow-matching loss of one task on clean latents x1 (Eq. 7-9): a scalar per generated
    modality plus `total`. Given modalities are fed clean; absent ones are not in the sequence.
    `onset_boost` > 0 weights the generated audio's onset frames up (`onset_weight`),
    `foreground_boost` > 0 the generated video's object latent pixels (`foreground_weight`),
    `motion_boost` > 0 its latent pixels that change from frame to frame (`motion_weight`); each
    loss stays a weighted mean, so its scale is comparable. `weight_cap` > 0 caps the weight
    1/(1-t)^2 the velocity loss puts on each sample's clean-estimate error (`flow.time_weight`).
    A model with `self_condition` reads, on a `SELF_CONDITION_SHARE` of the calls, its own no-grad
    clean estimate first. `swap` draws some rows' noisy video from counterfactual clips (`Swap`);
    `retime` some rows' noisy audio from the clip's audio moved in time, when the task has video
    to time it by (`Retime`). `envelope` > 0 adds that times the generated audio's
    `envelope_error` as `audio_envelope` (in `total`, not in `audio`).
    `frame_spread` > 0 puts a `FRAME_SPREAD_SHARE` of the rows' frames at times spread by that much
    (`flow.spread_times`: earlier frames cleaner), as a sampler with the same spread visits them."""
    config: ApolloConfig = model.config
    spec = task.spec
    ref = video if video is not None else audio
    if ref is None:
        raise ValueError("training_loss needs video or audio latents")
    b = ref.shape[0]
    if t is None:
        t = shift_time(logit_normal(b, mean=logit_mean, std=logit_std, generator=generator, device=ref.device), shift)
    spread = None
    if frame_spread > 0:
        # Half the rows at the sampler's spread, half flat: the model keeps both ways of sampling.
        rows = torch.rand(b, generator=generator, device=ref.device) < FRAME_SPREAD_SHARE  # [B]
        spread = rows.float() * frame_spread  # [B]
    clean = {"video": video, "audio": audio}
    noisy: dict[str, Tensor | None] = {"video": None, "audio": None}
    targets = {}
    for name, role in (("video", spec.video), ("audio", spec.audio)):
        x1 = clean[name]
        if role is Role.ABSENT:
            continue
        if x1 is None:
            raise ValueError(f"task {task.value} needs {name} latents")
        if role is Role.GIVEN:
            noisy[name] = x1
            continue
        corr = config.video_noise_corr if name == "video" else 0.0
        x0 = frame_noise(x1.shape, corr, generator=generator, device=x1.device, dtype=x1.dtype)
        tt = stream_time(task, name, t, x1.shape[2], spread)
        xt = interpolate(x0, x1, tt)
        target = velocity_target(x0, x1)
        if name == "video" and swap is not None:
            xt, target = _swapped(swap, x0, x1, xt, target, t, tt)
        if name == "audio" and retime is not None and spec.has_video:
            xt, target = _retimed(retime, x0, x1, xt, target, t, tt)
        if name == "video" and spec.first_frame_given:
            xt[:, :, 0] = x1[:, :, 0]
        noisy[name] = xt
        targets[name] = target
    inputs = assemble(config, task, video=noisy["video"], audio=noisy["audio"], t=t, cond=cond, spread=spread)
    state = {k: v for k, v in noisy.items() if v is not None}
    # Only a task that generates a self-conditioned stream draws, so the other tasks keep their RNG.
    reads = estimate_streams(config, task)
    if reads and float(torch.rand(1, generator=generator, device=ref.device)) < SELF_CONDITION_SHARE:
        estimate = self_condition_estimate(model, task, inputs, state, t, spread)
        inputs = assemble(config, task, video=noisy["video"], audio=noisy["audio"], t=t, cond=cond, estimate=estimate,
                          spread=spread)
    pred = velocities(model, task, inputs, state, t, spread)
    losses: dict[str, Tensor] = {}
    per_sample = time_weight(t.float(), weight_cap)  # [B]
    for name, target in targets.items():
        if name == "video":
            w = frame_weight(task, clean[name])
            if foreground_boost > 0:
                fg = foreground_weight(clean[name], foreground_boost)
                w = fg if w is None else fg * w
            if motion_boost > 0:
                mw = motion_weight(clean[name], motion_boost)
                w = mw if w is None else mw * w
        else:
            w = onset_weight(clean[name], onset_boost) if onset_boost > 0 else None
        losses[name] = (masked_mse(pred[name], target, w) * per_sample).mean()
    if envelope > 0 and "audio" in targets:
        tt = stream_time(task, "audio", t, state["audio"].shape[2], spread)
        estimate = clean_estimate(state["audio"].float(), pred["audio"], tt)  # [B, C, F]
        losses["audio_envelope"] = envelope * envelope_error(estimate, clean["audio"]).mean()
    losses["total"] = sum(losses.values())
    return losses
