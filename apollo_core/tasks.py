"""Tasks as modality masks.

A task decides, per modality, whether the stream is generated (noised, denoised, scored by the
loss), given (clean latents at t=1: the model reads them but they are never changed) or absent
(dropped from the sequence altogether, so an absent modality costs nothing). Caption streams follow
their modality: a video caption is present exactly when video is.

Image conditioning (TI2V, TI2AV) is "generated video whose first latent frame is given": the
per-token timesteps let one frame sit at t=1 while the rest are noisy.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.Enum):
    GENERATE = "generate"
    GIVEN = "given"
    ABSENT = "absent"


@dataclass(frozen=True)
class TaskSpec:
    video: Role
    audio: Role
    first_frame_given: bool = False  # only with video GENERATE

    @property
    def has_video(self) -> bool:
        return self.video is not Role.ABSENT

    @property
    def has_audio(self) -> bool:
        return self.audio is not Role.ABSENT

    @property
    def generates(self) -> tuple[str, ...]:
        out = []
        if self.video is Role.GENERATE:
            out.append("video")
        if self.audio is Role.GENERATE:
            out.append("audio")
        return tuple(out)

    @property
    def streams(self) -> tuple[str, ...]:
        """Active streams, in the fixed sequence order video, video_text, audio_text, audio."""
        out: list[str] = []
        if self.has_video:
            out += ["video", "video_text"]
        if self.has_audio:
            out += ["audio_text", "audio"]
        return tuple(out)


class Task(enum.Enum):
    T2AV = "t2av"
    TI2AV = "ti2av"
    TI2V = "ti2v"
    T2V = "t2v"
    T2A = "t2a"
    V2A = "v2a"
    A2V = "a2v"

    @property
    def spec(self) -> TaskSpec:
        return _SPECS[self]

    @property
    def needs_image(self) -> bool:
        return self.spec.first_frame_given

    @property
    def needs_video(self) -> bool:
        return self.spec.video is Role.GIVEN

    @property
    def needs_audio(self) -> bool:
        return self.spec.audio is Role.GIVEN

    def without(self, modality: str) -> "Task":
        """This task with `modality` absent and the other stream kept as it is (T2AV without video
        -> T2A, TI2AV without audio -> TI2V, V2A without video -> T2A): what the other stream is
        denoised from when it cannot see `modality` (cross-modal guidance)."""
        if modality not in ("video", "audio"):
            raise ValueError(f"modality must be 'video' or 'audio', got {modality!r}")
        spec = self.spec
        want = TaskSpec(video=A if modality == "video" else spec.video,
                        audio=A if modality == "audio" else spec.audio,
                        first_frame_given=spec.first_frame_given and modality != "video")
        for task, other in _SPECS.items():
            if other == want:
                return task
        raise ValueError(f"task {self.value} without {modality} leaves no stream to generate")

    @staticmethod
    def parse(value: "str | Task") -> "Task":
        if isinstance(value, Task):
            return value
        try:
            return Task(str(value).lower())
        except ValueError:
            raise ValueError(
                f"unknown task {value!r}; choose one of {[t.value for t in Task]}"
            ) from None


G, C, A = Role.GENERATE, Role.GIVEN, Role.ABSENT
_SPECS = {
    Task.T2AV: TaskSpec(video=G, audio=G),
    Task.TI2AV: TaskSpec(video=G, audio=G, first_frame_given=True),
    Task.TI2V: TaskSpec(video=G, audio=A, first_frame_given=True),
    Task.T2V: TaskSpec(video=G, audio=A),
    Task.T2A: TaskSpec(video=A, audio=G),
    Task.V2A: TaskSpec(video=C, audio=G),
    Task.A2V: TaskSpec(video=G, audio=C),
}
