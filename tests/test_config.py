import pytest
import torch

from apollo_core.config import PRESETS, ApolloConfig, get_preset
from apollo_core.memory import count_parameters


def test_presets_build_and_round_trip():
    for name, cfg in PRESETS.items():
        assert cfg.name == name
        assert ApolloConfig.from_json(cfg.to_json()) == cfg


def test_debug_is_under_one_million_parameters():
    assert count_parameters(get_preset("debug")) < 1_000_000


def test_26b_counts_26b_within_3_percent():
    n = count_parameters(get_preset("apollo-26b"))
    assert abs(n - 26e9) / 26e9 <= 0.03, n


def test_unknown_option_names_the_field():
    with pytest.raises(ValueError, match="video.frames_per_second"):
        ApolloConfig.from_dict(get_preset("debug").to_dict() | {"video": {"frames_per_second": 3}})
    with pytest.raises(ValueError, match="depthh"):
        get_preset("debug").replace(depthh=3)


@pytest.mark.parametrize(
    "override, field",
    [
        ({"heads": 3}, "heads"),
        ({"rope_axes": (4, 4, 4)}, "rope_axes"),
        ({"rope_audio": "sideways"}, "rope_audio"),
        ({"rope_time_scale": 0.0}, "rope_time_scale"),
        ({"rope_space_scale": -1.0}, "rope_space_scale"),
        ({"architecture": "three_tower"}, "architecture"),
        ({"prediction": "eps"}, "prediction"),
        ({"video.fps": 0}, "VideoConfig.fps"),
        ({"audio.hop": -1}, "AudioConfig.hop"),
        ({"video_noise_corr": 1.0}, "video_noise_corr"),
        ({"video_noise_corr": -0.1}, "video_noise_corr"),
    ],
)
def test_inconsistent_options_raise(override, field):
    with pytest.raises(ValueError, match=field.split(".")[-1]):
        get_preset("debug").replace(**override)


def test_unknown_preset():
    with pytest.raises(ValueError, match="apollo-tiny"):
        get_preset("apollo-huge")


def test_latent_frame_arithmetic_causal_and_not():
    v = get_preset("apollo-26b").video  # causal, 8x
    assert v.latent_frames(121) == 16 and v.pixel_frames(16) == 121
    t = get_preset("apollo-tiny").video  # 2x, not causal
    assert t.latent_frames(16) == 8 and t.pixel_frames(8) == 16
    assert torch.isclose(torch.tensor(get_preset("apollo-26b").audio.latent_rate), torch.tensor(43.066), atol=1e-3)
