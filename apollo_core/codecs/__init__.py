"""Video and audio codecs: the protocols the model relies on, the tiny VAEs, and their files."""
from .base import (
    AudioCodec,
    VideoCodec,
    check_audio_latents,
    check_codecs,
    check_video_frames,
    check_video_latents,
    check_waveform,
    valid_pixel_frames,
    video_latent_shape,
    video_pixel_frames,
)
from .io import CODEC_KINDS, CodecCheckpointError, load_codec, read_codec_metadata, save_codec
from .tiny_audio import TinyAudioVAE, hop_strides
from .tiny_video import TinyVideoVAE

__all__ = [
    "AudioCodec",
    "CODEC_KINDS",
    "CodecCheckpointError",
    "TinyAudioVAE",
    "TinyVideoVAE",
    "VideoCodec",
    "check_audio_latents",
    "check_codecs",
    "check_video_frames",
    "check_video_latents",
    "check_waveform",
    "hop_strides",
    "load_codec",
    "read_codec_metadata",
    "save_codec",
    "valid_pixel_frames",
    "video_latent_shape",
    "video_pixel_frames",
]
