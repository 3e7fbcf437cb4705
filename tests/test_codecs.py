"""Tiny codecs: shapes per preset, input validation, checkpoint files, chunked decoding, training."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from apollo_core.codecs import (
    AudioCodec,
    CodecCheckpointError,
    TinyAudioVAE,
    TinyVideoVAE,
    VideoCodec,
    check_codecs,
    check_video_frames,
    hop_strides,
    load_codec,
    read_codec_metadata,
    save_codec,
    video_latent_shape,
)
from apollo_core.codecs.metrics import dominant_frequency, onset_times, psnr, snr
from apollo_core.config import get_preset
from training import codecs as train

torch.set_num_threads(1)


def _video(b: int, t: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, t, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(
    "preset, pixels, latents",
    [("debug", (1, 3, 8, 32, 32), (1, 4, 4, 8, 8)), ("apollo-tiny", (2, 3, 16, 64, 64), (2, 8, 8, 8, 8))],
)
def test_video_shapes_follow_config(preset: str, pixels: tuple, latents: tuple) -> None:
    config = get_preset(preset)
    codec = TinyVideoVAE.from_config(config.video).eval()
    check_codecs(config, video_codec=codec)
    assert isinstance(codec, VideoCodec)
    with torch.no_grad():
        z = codec.encode(_video(pixels[0], pixels[2], pixels[3]))
        out = codec.decode(z)
    assert tuple(z.shape) == latents
    assert video_latent_shape(codec, *pixels[2:]) == latents[1:]
    assert tuple(out.shape) == pixels and out.abs().max() <= 1.0
    assert sum(p.numel() for p in codec.parameters()) < 2_000_000


@pytest.mark.parametrize("preset, samples, latents", [("debug", 16000, (1, 4, 64)), ("apollo-tiny", 32000, (1, 16, 128))])
def test_audio_shapes_follow_config(preset: str, samples: int, latents: tuple) -> None:
    config = get_preset(preset)
    codec = TinyAudioVAE.from_config(config.audio).eval()
    check_codecs(config, audio_codec=codec)
    assert isinstance(codec, AudioCodec)
    with torch.no_grad():
        z = codec.encode(torch.randn(1, 1, samples) * 0.1)
        out = codec.decode(z)
    assert tuple(z.shape) == latents
    assert tuple(out.shape) == (1, 1, samples) and out.abs().max() <= 1.0
    assert sum(p.numel() for p in codec.parameters()) < 2_000_000


def test_hop_strides_multiply_to_hop() -> None:
    assert hop_strides(250) == (5, 5, 10)
    assert hop_strides(1024) == (2, 8, 8, 8)
    for hop in (2, 160, 250, 320, 441, 512, 1024):
        assert math.prod(hop_strides(hop)) == hop
    with pytest.raises(ValueError, match="multiply to hop=250"):
        TinyAudioVAE(hop=250, strides=(5, 5, 5))


def test_check_codecs_names_the_mismatching_field() -> None:
    tiny, debug = get_preset("apollo-tiny"), get_preset("debug")
    with pytest.raises(ValueError, match=r"latent_channels=4 .*video\.latent_channels=8"):
        check_codecs(tiny, video_codec=TinyVideoVAE.from_config(debug.video))
    with pytest.raises(ValueError, match=r"sample_rate=8000 .*audio\.sample_rate=16000"):
        check_codecs(tiny, audio_codec=TinyAudioVAE.from_config(dataclasses.replace(tiny.audio, sample_rate=8000)))
    with pytest.raises(ValueError, match=r"video\.fps"):
        check_codecs(tiny, video_codec=TinyVideoVAE.from_config(dataclasses.replace(tiny.video, fps=24.0)))
    with pytest.raises(ValueError, match="non-causal"):
        TinyVideoVAE.from_config(get_preset("apollo-26b").video)


def test_bad_sizes_say_the_nearest_valid_sizes() -> None:
    video = TinyVideoVAE.from_config(get_preset("apollo-tiny").video)
    with pytest.raises(ValueError, match=r"T=15 .*multiple of 2.*14 or 16"):
        video.encode(_video(1, 15, 64))
    with pytest.raises(ValueError, match=r"H=60 .*56 or 64"):
        video.encode(torch.zeros(1, 3, 16, 60, 64))
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        video.encode(torch.zeros(1, 16, 64, 64, 3))
    with pytest.raises(ValueError, match=r"\[B, 8, T, H, W\]"):
        video.decode(torch.zeros(1, 4, 8, 8, 8))
    audio = TinyAudioVAE.from_config(get_preset("apollo-tiny").audio)
    with pytest.raises(ValueError, match=r"S=32100 .*hop=250.*32000 or 32250"):
        audio.encode(torch.zeros(1, 1, 32100))
    with pytest.raises(ValueError, match=r"\[B, 1, S\]"):
        audio.encode(torch.zeros(1, 32000))
    with pytest.raises(ValueError, match=r"\[B, 16, T\]"):
        audio.decode(torch.zeros(1, 8, 128))


@dataclass
class _CausalCodec:
    latent_channels: int = 16
    temporal_compression: int = 4
    spatial_compression: int = 8
    causal: bool = True
    fps: float = 24.0


def test_causal_frame_rule() -> None:
    codec = _CausalCodec()
    assert video_latent_shape(codec, 17, 64, 64) == (16, 5, 8, 8)
    check_video_frames(codec, torch.zeros(1, 3, 17, 64, 64))
    with pytest.raises(ValueError, match=r"T=16 .*1 \+ a multiple of 4.*13 or 17"):
        check_video_frames(codec, torch.zeros(1, 3, 16, 64, 64))


def _perturbed(codec: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every zero-initialised tensor random values, so the tests see a non-trivial codec."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in codec.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        codec.norm.mean.copy_(torch.randn(codec.norm.mean.shape, generator=gen))
        codec.norm.std.copy_(torch.rand(codec.norm.std.shape, generator=gen) + 0.5)
    return codec.eval()


def test_save_load_round_trip_is_bit_exact(tmp_path: Path) -> None:
    video = _perturbed(TinyVideoVAE(latent_channels=4, spatial_compression=4, widths=(16, 24)))
    audio = _perturbed(TinyAudioVAE(latent_channels=4, sample_rate=8000, widths=(8, 16, 16)))
    x, w = _video(1, 4, 16), torch.randn(1, 1, 2000) * 0.1
    for codec, inp, name in ((video, x, "v.safetensors"), (audio, w, "sub/a.safetensors")):
        path = save_codec(tmp_path / name, codec, extra={"psnr_db": 30.5})
        loaded = load_codec(path)
        assert type(loaded) is type(codec) and loaded.hparams() == codec.hparams()
        for key, value in codec.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        with torch.no_grad():
            assert torch.equal(loaded.decode(loaded.encode(inp)), codec.decode(codec.encode(inp)))
        assert read_codec_metadata(path)["extra"] == {"psnr_db": 30.5}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.safetensors", "sub", "v.safetensors"]  # no temp files


def test_load_errors_name_the_tensor(tmp_path: Path) -> None:
    codec = TinyAudioVAE(latent_channels=4, sample_rate=8000, widths=(8, 16, 16))
    path = save_codec(tmp_path / "a.safetensors", codec)
    meta = {"kind": "tiny_audio", "format_version": "1", "hparams": json.dumps(codec.hparams())}
    state = {k: v.contiguous() for k, v in codec.state_dict().items()}

    missing = dict(state)
    del missing["norm.std"]
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(CodecCheckpointError, match=r"missing tensor\(s\) \['norm.std'\]"):
        load_codec(tmp_path / "missing.safetensors")

    extra = {**state, "decoder.99.weight": torch.zeros(2)}
    save_file(extra, str(tmp_path / "extra.safetensors"), metadata=meta)
    with pytest.raises(CodecCheckpointError, match=r"unexpected tensor\(s\) \['decoder.99.weight'\]"):
        load_codec(tmp_path / "extra.safetensors")

    wrong = {**state, "decoder.0.weight": torch.zeros(3, 3, 3)}
    save_file(wrong, str(tmp_path / "wrong.safetensors"), metadata=meta)
    with pytest.raises(CodecCheckpointError, match=r"'decoder.0.weight' has shape \(3, 3, 3\)"):
        load_codec(tmp_path / "wrong.safetensors")

    save_file(state, str(tmp_path / "bare.safetensors"))
    with pytest.raises(CodecCheckpointError, match="codec kind None"):
        load_codec(tmp_path / "bare.safetensors")
    with pytest.raises(CodecCheckpointError, match="expected 'tiny_video'"):
        load_codec(path, kind="tiny_video")
    with pytest.raises(CodecCheckpointError, match="does not exist"):
        load_codec(tmp_path / "nope.safetensors")


def test_chunked_decode_matches_full_decode() -> None:
    codec = _perturbed(TinyVideoVAE(latent_channels=4, spatial_compression=4, widths=(16, 24), temporal_blocks=2))
    assert codec.decoder_halo == 2
    z = torch.randn(1, 4, 7, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = codec.decode(z)
        for chunk in (1, 2, 3, 7, 10):
            assert torch.allclose(codec.decode_chunked(z, chunk), full, atol=1e-5), chunk
        # Without the overlap the chunk edges differ: the halo is what makes the two agree.
        naive = torch.cat([codec.decode(z[:, :, i:i + 2]) for i in range(0, 7, 2)], dim=2)
    assert (naive - full).abs().max() > 1e-3
    with pytest.raises(ValueError, match="chunk_frames"):
        codec.decode_chunked(z, 0)


def test_latent_stats_give_unit_variance() -> None:
    codec = _perturbed(TinyVideoVAE(latent_channels=4, spatial_compression=4, widths=(16, 24)))
    x = _video(4, 4, 16, seed=3)
    codec.fit_latent_stats(x)
    with torch.no_grad():
        z = codec.encode(x).transpose(0, 1).reshape(4, -1)
    assert torch.allclose(z.mean(dim=1), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std(dim=1), torch.ones(4), atol=1e-3)


def _fixed_loss(codec: torch.nn.Module, batch: torch.Tensor) -> float:
    codec.eval()
    with torch.no_grad():
        if isinstance(codec, TinyVideoVAE):
            return train.video_loss(codec, batch, beta=0.0)[0].item()
        return train.audio_loss(codec, batch, beta=0.0)[0].item()


def test_short_training_lowers_reconstruction_loss() -> None:
    config = get_preset("debug")
    clips = train.load_clips(train.synthetic_source(config, 1.0, 16), [1, 2, 3, 4], config.audio.hop)
    video, audio = clips.video, clips.audio
    assert video.shape == (4, 3, 8, 16, 16) and audio.shape == (4, 1, 8000)
    torch.manual_seed(0)
    vcodec = TinyVideoVAE.from_config(config.video, widths=(16, 32))
    before = _fixed_loss(vcodec, video)
    train.train_codec(vcodec, video, minutes=1.0, batch=4, crop=8, crop_size=16, max_steps=12, lr=3e-3,
                      log=lambda _: None)
    after = _fixed_loss(vcodec, video)
    assert after < 0.6 * before, (before, after)

    acodec = TinyAudioVAE.from_config(config.audio, widths=(8, 16, 16))
    before = _fixed_loss(acodec, audio)
    train.train_codec(acodec, audio, minutes=1.0, batch=4, crop=2000, max_steps=12, lr=3e-3, log=lambda _: None)
    after = _fixed_loss(acodec, audio)
    assert after < 0.8 * before, (before, after)


def test_cli_trains_saves_resumes_and_reports(tmp_path: Path) -> None:
    argv = ["--preset", "debug", "--source", "synthetic", "--out", str(tmp_path), "--minutes", "1",
            "--max-steps", "2", "--clips", "2", "--held-out", "2", "--size", "16", "--seconds", "1"]
    report = train.main(argv)
    video = load_codec(tmp_path / "video_codec.safetensors", kind="tiny_video")
    audio = load_codec(tmp_path / "audio_codec.safetensors", kind="tiny_audio")
    check_codecs(get_preset("debug"), video, audio)
    saved = json.loads((tmp_path / "codecs_report.json").read_text())
    assert saved["video"]["held_out"]["psnr_db"] == report["video"]["held_out"]["psnr_db"]
    assert {"snr_db", "lsd_db", "onset_recall", "pitch_ok_recon", "onset_error_ms_mean"} <= set(saved["audio"]["held_out"])

    resumed = train.main(argv + ["--resume", "--which", "video"])
    assert resumed["video"]["held_out"]["trained_steps"] == 4
    assert resumed["audio"]["held_out"]["trained_steps"] == 2  # the other codec is left as it was
    assert read_codec_metadata(tmp_path / "video_codec.safetensors")["extra"]["trained"]["steps"] == 4


def test_cli_overrides_video_latent_geometry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A finer codec for a model with a larger patch: the codec file records the geometry it was
    # trained at, and a size that TinyVideoVAE cannot build is refused before any rendering.
    argv = ["--preset", "debug", "--source", "synthetic", "--out", str(tmp_path), "--minutes", "1", "--which", "video",
            "--max-steps", "1", "--clips", "2", "--held-out", "2", "--size", "16", "--seconds", "1",
            "--video-latent-channels", "3"]
    with pytest.raises(SystemExit):
        train.main(argv + ["--video-spatial-compression", "3"])
    assert not (tmp_path / "video_codec.safetensors").exists()
    with pytest.raises(SystemExit):
        train.main(argv + ["--video-temporal-compression", "0"])
    assert not (tmp_path / "video_codec.safetensors").exists()
    report = train.main(argv + ["--video-spatial-compression", "2", "--video-temporal-compression", "1"])
    codec = load_codec(tmp_path / "video_codec.safetensors", kind="tiny_video")
    assert (codec.spatial_compression, codec.temporal_compression, codec.latent_channels) == (2, 1, 3)
    assert (report["video_spatial_compression"], report["video_temporal_compression"],
            report["video_latent_channels"]) == (2, 1, 3)
    config = get_preset("debug").replace(**{"video.spatial_compression": 2, "video.temporal_compression": 1,
                                            "video.latent_channels": 3})
    check_codecs(config, video_codec=codec)
    with pytest.raises(ValueError, match="temporal"):
        check_codecs(get_preset("debug").replace(**{"video.spatial_compression": 2, "video.latent_channels": 3}),
                     video_codec=codec)
    # Resuming it without the flags it was trained with is a clear exit, and the file stays as it was.
    before = (tmp_path / "video_codec.safetensors").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train.main(argv + ["--video-spatial-compression", "2", "--resume"])
    out = capsys.readouterr()
    assert "temporal_compression=1" in out.err and "resume with the --preset and --video-*" in out.err
    assert "rendered" not in out.out  # refused before any rendering
    assert (tmp_path / "video_codec.safetensors").read_bytes() == before


def test_cli_shapes_a_new_audio_codec(tmp_path: Path) -> None:
    argv = ["--preset", "debug", "--source", "synthetic", "--out", str(tmp_path), "--minutes", "1", "--which", "audio",
            "--max-steps", "1", "--clips", "2", "--held-out", "2", "--size", "16", "--seconds", "1"]
    hop = get_preset("debug").audio.hop
    with pytest.raises(SystemExit):  # strides that do not multiply to the hop
        train.main(argv + ["--audio-strides", str(hop + 1)])
    with pytest.raises(SystemExit):  # one width for two stages
        train.main(argv + ["--audio-strides", "2", str(hop // 2), "--audio-widths", "8"])
    assert not (tmp_path / "audio_codec.safetensors").exists()
    train.main(argv + ["--audio-strides", "2", str(hop // 2), "--audio-widths", "8", "16"])
    codec = load_codec(tmp_path / "audio_codec.safetensors", kind="tiny_audio")
    assert (codec.strides, codec.widths) == ((2, hop // 2), (8, 16))
    with pytest.raises(SystemExit):  # a resumed codec keeps the layout it was saved with
        train.main(argv + ["--resume", "--audio-strides", "2", str(hop // 2)])


def test_decoder_only_training_keeps_the_latent_space(tmp_path: Path) -> None:
    # A model trained on a codec's latents stays valid only if encode() and the latent statistics
    # are untouched: --decoder-only must change the decoder and nothing else.
    argv = ["--preset", "debug", "--source", "synthetic", "--out", str(tmp_path), "--minutes", "1",
            "--max-steps", "2", "--clips", "2", "--held-out", "2", "--size", "16", "--seconds", "1"]
    with pytest.raises(SystemExit):
        train.main(argv + ["--decoder-only"])  # nothing to finetune without --resume
    with pytest.raises(SystemExit, match="no video codec"):
        train.main(argv + ["--resume", "--decoder-only", "--which", "video"])
    train.main(argv)
    before = {name: load_codec(tmp_path / f"{name}_codec.safetensors").state_dict()
              for name in ("video", "audio")}
    report = train.main(argv + ["--resume", "--decoder-only", "--max-steps", "3", "--lr", "1e-2"])
    for name, prefix in (("video", "dec_"), ("audio", "decoder.")):
        after = load_codec(tmp_path / f"{name}_codec.safetensors").state_dict()
        changed = {k for k, v in after.items() if not torch.equal(v, before[name][k])}
        assert changed and all(k.startswith(prefix) for k in changed), (name, sorted(changed))
        trained = read_codec_metadata(tmp_path / f"{name}_codec.safetensors")["extra"]["trained"]
        assert trained["steps"] == 5 and trained["decoder_only"]["steps"] == 3
        assert report[name]["held_out"]["trained_steps"] == 5
    codec = load_codec(tmp_path / "video_codec.safetensors")
    assert all(p.requires_grad for p in codec.parameters())
    assert {id(p) for p in codec.decoder_parameters()} < {id(p) for p in codec.parameters()}


def test_metrics() -> None:
    x = torch.zeros(1, 1, 100)
    assert psnr(x + 0.02, x) == pytest.approx(10 * math.log10(4 / 0.0004), rel=1e-5)
    sine = torch.sin(2 * math.pi * 440.0 * torch.arange(4000) / 16000)
    assert snr(sine * 1.1, sine) == pytest.approx(20.0, rel=1e-4)
    assert dominant_frequency(sine, 16000) == pytest.approx(440.0, abs=2.0)
    burst = torch.zeros(16000)
    burst[4000:4500] = sine[:500]
    burst[12000:12500] = sine[:500]
    assert onset_times(burst, 16000, 250) == [0.25, 0.75]
