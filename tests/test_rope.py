import math

import torch

from apollo_core.config import get_preset
from apollo_core.model import rope


def test_relative_position_invariance():
    """q.k after rotation depends only on the position difference."""
    cfg = get_preset("debug")
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 1, cfg.head_dim, generator=g)
    k = torch.randn(1, 1, 1, cfg.head_dim, generator=g)

    def score(pq, pk):
        cq, sq = rope.rope_cos_sin(cfg, torch.tensor([pq], dtype=torch.float32))
        ck, sk = rope.rope_cos_sin(cfg, torch.tensor([pk], dtype=torch.float32))
        return (rope.apply_rope(q, cq, sq) * rope.apply_rope(k, ck, sk)).sum()

    base = score([1.0, 2.0, 3.0], [0.5, 1.0, 7.0])
    shifted = score([11.25, 5.0, -1.0], [10.75, 4.0, 3.0])
    assert torch.allclose(base, shifted, atol=1e-5)
    assert not torch.allclose(base, score([1.0, 2.0, 3.0], [0.0, 1.0, 7.0]), atol=1e-3)


def test_rotation_preserves_norm_and_zero_is_identity():
    cfg = get_preset("debug")
    x = torch.randn(2, 5, 2, cfg.head_dim)
    pos = torch.rand(5, 3) * 10
    cos, sin = rope.rope_cos_sin(cfg, pos)
    assert torch.allclose(rope.apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    c0, s0 = rope.rope_cos_sin(cfg, torch.zeros(5, 3))
    assert torch.equal(rope.apply_rope(x, c0, s0), x)


def test_positions_are_physical_time_on_one_clock():
    for name in ("apollo-tiny", "apollo-26b"):
        cfg = get_preset(name)
        rate = cfg.video.latent_fps * cfg.rope_time_scale
        vpos = rope.video_positions(cfg, 16, 1, 1)[:, 0].double()
        apos = rope.audio_positions(cfg, 400, video_latent_frames=16)[:, 0].double()
        assert torch.allclose(vpos, rope.video_frame_times(cfg, 16) * rate, atol=1e-4)
        assert torch.allclose(apos, rope.audio_token_times(cfg, 400) * rate, atol=1e-3)


def test_audio_and_video_token_at_same_instant_get_same_temporal_phase():
    # 8 fps video with 1 frame per latent, audio tokens of exactly 1/8 s: token j and frame j coincide
    cfg = get_preset("debug").replace(**{"video.temporal_compression": 1, "audio.hop": 500, "audio.patch": 2})
    vpos = rope.video_positions(cfg, 6, 2, 2).view(6, 4, 3)[:, 0]  # (t, h=0, w=0) per frame
    apos = rope.audio_positions(cfg, 6, video_latent_frames=6)
    assert torch.allclose(rope.rope_angles(cfg, vpos), rope.rope_angles(cfg, apos), atol=1e-9)
    # and a different instant gives a different phase
    assert not torch.allclose(rope.rope_angles(cfg, vpos[1:]), rope.rope_angles(cfg, apos[:-1]), atol=1e-3)


def test_causal_first_frame_is_its_own_instant():
    cfg = get_preset("apollo-26b")
    t = rope.video_frame_times(cfg, 3)
    fps = cfg.video.fps
    assert math.isclose(float(t[0]), 0.5 / fps)
    assert math.isclose(float(t[1]), (1 + 3.5 + 0.5) / fps)  # pixel frames 1..8, centre 4.5 -> +0.5 offset
    # audio at exactly that time gets exactly that temporal position
    assert math.isclose(float(rope.video_positions(cfg, 3, 1, 1)[1, 0]), float(t[1]) * cfg.video.latent_fps, rel_tol=1e-6)


def test_time_scale_stretches_the_shared_clock_only():
    """rope_time_scale multiplies every temporal position (video and audio alike, so simultaneous
    tokens still share a phase) and leaves the spatial axes alone; old checkpoints, whose config
    has no such field, load with 1.0."""
    cfg = get_preset("apollo-tiny").replace(rope_time_scale=1.0)
    fine = cfg.replace(rope_time_scale=8.0)
    v, vf = rope.video_positions(cfg, 8, 4, 4), rope.video_positions(fine, 8, 4, 4)
    a, af = (rope.audio_positions(c, 64, video_latent_frames=8) for c in (cfg, fine))
    assert torch.allclose(vf[:, 0], 8.0 * v[:, 0]) and torch.equal(vf[:, 1:], v[:, 1:])
    assert torch.allclose(af[:, 0], 8.0 * a[:, 0]) and torch.equal(af[:, 1:], a[:, 1:])
    # adjacent audio tokens: 1/8 of a latent frame apart at scale 1, a whole position at scale 8
    assert math.isclose(float(a[1, 0] - a[0, 0]), 0.125) and math.isclose(float(af[1, 0] - af[0, 0]), 1.0)
    legacy = cfg.to_dict()
    del legacy["rope_time_scale"]
    assert type(cfg).from_dict(legacy).rope_time_scale == 1.0


def test_space_scale_sharpens_the_spatial_axes_only():
    """rope_space_scale multiplies video h/w positions, so the same patch step turns every spatial
    pair further; time and audio are untouched, and configs without the field load with 1.0."""
    cfg = get_preset("apollo-tiny").replace(rope_space_scale=1.0)
    sharp = cfg.replace(rope_space_scale=3.0)
    v, vs = rope.video_positions(cfg, 4, 4, 4), rope.video_positions(sharp, 4, 4, 4)
    assert torch.allclose(vs[:, 1:], 3.0 * v[:, 1:]) and torch.equal(vs[:, 0], v[:, 0])
    assert torch.equal(rope.audio_positions(cfg, 32, video_latent_frames=4),
                       rope.audio_positions(sharp, 32, video_latent_frames=4))
    # neighbouring patches along w: each spatial pair turns three times as far
    t_pairs, h_pairs = cfg.rope_axes[0], cfg.rope_axes[1]
    w_band = slice(t_pairs + h_pairs, None)
    step = rope.rope_angles(cfg, v[1:2] - v[0:1])[0, w_band]
    step_s = rope.rope_angles(sharp, vs[1:2] - vs[0:1])[0, w_band]
    assert torch.allclose(step_s, 3.0 * step) and bool((step > 0).all())
    legacy = cfg.to_dict()
    del legacy["rope_space_scale"]
    assert type(cfg).from_dict(legacy).rope_space_scale == 1.0


def test_offset_variant_starts_after_last_video_id():
    for scale in (1.0, 8.0):
        cfg = get_preset("apollo-tiny").replace(rope_audio="offset", rope_time_scale=scale)
        apos = rope.audio_positions(cfg, 64, video_latent_frames=8)[:, 0]
        last_video = float(rope.video_positions(cfg, 8, 1, 1)[:, 0].max())
        assert apos[0] == 8 * scale > last_video and torch.equal(apos[1:] - apos[:-1], torch.ones(63))


def test_audio_has_identity_rotation_on_spatial_bands():
    cfg = get_preset("debug")
    pos = rope.audio_positions(cfg, 10, video_latent_frames=4)
    ang = rope.rope_angles(cfg, pos)
    t_pairs = cfg.rope_axes[0]
    assert torch.all(ang[:, t_pairs:] == 0) and torch.any(ang[:, :t_pairs] != 0)
