import math

import pytest
import torch

from apollo_core import flow, sampling


def exact_velocity(mu: float, s: float):
    """Exact marginal velocity for x0 ~ N(0, 1), x1 ~ N(mu, s^2), x_t = t x1 + (1 - t) x0."""

    def v(state, t):
        x = state["x"]
        var = t * t * s * s + (1 - t) ** 2
        cov = t * s * s - (1 - t)
        return {"x": mu + cov / var * (x - t * mu)}

    return v


@pytest.mark.parametrize("solver, steps, tol", [("euler", 200, 0.03), ("heun", 30, 0.02), ("dpmpp_2m", 30, 0.02)])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_samplers_recover_gaussian_target_moments(solver, steps, tol, shift):
    mu, s = 2.0, 0.5
    x0 = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sampling.sample(exact_velocity(mu, s), {"x": x0}, steps=steps, shift=shift, solver=solver)["x"]
    assert abs(out.mean().item() - mu) < tol
    assert abs(out.std().item() - s) < tol


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ancestral_sampler_recovers_gaussian_target_moments(eta):
    """Fresh noise each step keeps the marginals right (eta = 1 is DDPM's posterior variance)."""
    mu, s = 2.0, 0.5
    x0 = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sampling.sample(exact_velocity(mu, s), {"x": x0}, steps=200, solver="euler_ancestral", eta=eta,
                          generator=torch.Generator().manual_seed(1))["x"]
    assert abs(out.mean().item() - mu) < 0.03
    assert abs(out.std().item() - s) < 0.03


def test_ancestral_sampler_at_eta_zero_is_euler_and_repeats_with_its_generator():
    x0 = torch.randn(1000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def run(eta, seed):
        return sampling.sample(exact_velocity(2.0, 0.5), {"x": x0}, steps=12, solver="euler_ancestral", eta=eta,
                               generator=torch.Generator().manual_seed(seed))["x"]

    euler = sampling.sample(exact_velocity(2.0, 0.5), {"x": x0}, steps=12, solver="euler")["x"]
    assert torch.allclose(run(0.0, 0), euler, atol=1e-12)
    assert torch.equal(run(0.5, 3), run(0.5, 3))
    assert not torch.allclose(run(0.5, 3), run(0.5, 4))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="eta"):
            run(bad, 0)


def test_higher_order_solvers_beat_euler_at_equal_steps():
    mu, s = 2.0, 0.5
    x0 = torch.randn(50_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    err = {}
    for solver in ("euler", "heun", "dpmpp_2m"):
        out = sampling.sample(exact_velocity(mu, s), {"x": x0}, steps=8, solver=solver)["x"]
        err[solver] = abs(out.std().item() - s)
    assert err["heun"] < err["euler"] and err["dpmpp_2m"] < err["euler"], err


def test_zero_velocity_content_stays_fixed_in_every_solver():
    given = torch.randn(10, dtype=torch.float64)
    for solver in sampling.Solver:
        out = sampling.sample(lambda st, t: {"x": torch.zeros_like(st["x"])}, {"x": given}, steps=5, solver=solver)
        assert torch.allclose(out["x"], given, atol=1e-12), solver


def test_callback_sees_every_step():
    seen = []
    sampling.sample(exact_velocity(0.0, 1.0), {"x": torch.zeros(4)}, steps=6, callback=lambda i, n, x: seen.append((i, n)))
    assert seen == [(i, 6) for i in range(1, 7)]


def test_time_grid_and_shift():
    grid = sampling.time_grid(4, shift=3.0)
    assert grid[0] == 0.0 and grid[-1] == 1.0 and all(a < b for a, b in zip(grid, grid[1:]))
    # shift > 1 spends steps near noise: the midpoint moves towards t=0
    assert flow.shift_time(torch.tensor(0.5), 3.0) < 0.5
    with pytest.raises(ValueError):
        sampling.time_grid(0)
    with pytest.raises(ValueError, match="sampler"):
        sampling.sample(exact_velocity(0, 1), {"x": torch.zeros(1)}, steps=2, solver="ddim")


def test_guidance_per_modality():
    c = {"video": torch.ones(2), "audio": torch.ones(2)}
    u = {"video": torch.zeros(2), "audio": torch.zeros(2)}
    g = sampling.guided(c, u, {"video": 5.0, "audio": 2.0})
    assert torch.equal(g["video"], torch.full((2,), 5.0)) and torch.equal(g["audio"], torch.full((2,), 2.0))


def test_logit_normal_and_interpolation():
    t = flow.logit_normal(100_000, generator=torch.Generator().manual_seed(0))
    assert 0 < t.min() and t.max() < 1 and abs(t.median().item() - 0.5) < 0.01
    x0, x1 = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    xt = flow.interpolate(x0, x1, torch.tensor([0.25, 1.0]))
    assert torch.allclose(xt[0], torch.full((3, 4), 0.25)) and torch.allclose(xt[1], torch.ones(3, 4))
    assert torch.equal(flow.velocity_target(x0, x1), x1 - x0)


def test_x1_prediction_converts_to_velocity():
    x0, x1 = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    t = torch.tensor([0.1, 0.5, 0.9])
    xt = flow.interpolate(x0, x1, t)
    v = flow.to_velocity(x1, xt, t, "x1")  # a perfect x1 prediction gives the exact velocity
    assert torch.allclose(v, x1 - x0, atol=1e-5)
    assert torch.allclose(flow.clean_estimate(xt, v, t), x1, atol=1e-5)
    with pytest.raises(ValueError):
        flow.to_velocity(x1, xt, t, "eps")


def test_time_weight_caps_the_clean_estimate_weight():
    t = torch.tensor([0.0, 0.5, 0.75, 0.95])
    assert torch.equal(flow.time_weight(t, 0.0), torch.ones(4))  # 0 = off
    # cap 4: 1/(1-t)^2 <= 4 up to t = 0.5 (unchanged), above it scaled down to exactly 4
    w = flow.time_weight(t, 4.0)
    assert torch.allclose(w, torch.tensor([1.0, 1.0, 0.25, 0.01]))
    assert torch.allclose(w / (1 - t) ** 2, torch.tensor([1.0, 4.0, 4.0, 4.0]))
    with pytest.raises(ValueError, match="cap must be >= 0"):
        flow.time_weight(t, -1.0)


def test_masked_mse_ignores_weighted_out_elements():
    pred, target = torch.zeros(2, 1, 4, 1, 1), torch.ones(2, 1, 4, 1, 1)
    target[:, :, 0] = 100.0
    w = torch.ones(2, 1, 4, 1, 1)
    w[:, :, 0] = 0
    assert torch.allclose(flow.masked_mse(pred, target, w), torch.ones(2))


def test_resolution_shift_grows_with_tokens():
    assert flow.resolution_shift(4096) > flow.resolution_shift(256)
    assert math.isclose(flow.resolution_shift(256), math.exp(0.5))


def test_frame_noise_is_plain_randn_at_zero_and_an_ar1_chain_otherwise():
    shape = (4000, 2, 5, 3)  # [B, C, T, H]
    plain = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(flow.frame_noise(shape, 0.0, generator=torch.Generator().manual_seed(7)), plain)
    z = flow.frame_noise(shape, 0.7, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    frames = z.transpose(0, 2).reshape(5, -1)  # [T, everything else]
    assert torch.allclose(frames.var(dim=1), torch.ones(5, dtype=torch.float64), atol=0.03)
    corr = torch.corrcoef(frames)
    for lag in (1, 2, 4):
        assert torch.diagonal(corr, lag).mean().item() == pytest.approx(0.7**lag, abs=0.02)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="corr"):
            flow.frame_noise(shape, bad)


def exact_velocity_correlated(mu: float, s: float, rho: float, frames: int):
    """Exact velocity for x0 ~ N(0, S) over `frames` (S_ij = rho^|i-j|), x1 ~ N(mu, s^2 I), on
    states `[N, 1, frames]`: E[x1 - x0 | x_t] from the joint Gaussian."""
    idx = torch.arange(frames, dtype=torch.float64)
    cov0 = rho ** (idx[:, None] - idx[None, :]).abs()  # [T, T]
    eye = torch.eye(frames, dtype=torch.float64)

    def v(state, t):
        x = state["x"][:, 0]  # [N, T]
        gain = torch.linalg.inv(t * t * s * s * eye + (1 - t) ** 2 * cov0)  # [T, T]
        r = (x - t * mu) @ gain  # [N, T], gain is symmetric
        x1 = mu + t * s * s * r
        x0 = (1 - t) * r @ cov0
        return {"x": (x1 - x0)[:, None]}

    return v


@pytest.mark.parametrize("matched", [True, False])
def test_ancestral_sampler_needs_the_models_frame_correlation(matched):
    """With frame-correlated model noise, the ancestral solver reaches independent frames only if
    its fresh noise has the same correlation; independent fresh noise leaves them correlated."""
    mu, s, rho, frames = 1.0, 0.5, 0.8, 4
    init = flow.frame_noise((40_000, 1, frames), rho, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64)
    out = sampling.sample(exact_velocity_correlated(mu, s, rho, frames), {"x": init}, steps=100,
                          solver="euler_ancestral", eta=1.0, generator=torch.Generator().manual_seed(1),
                          noise_corr={"x": rho} if matched else None)["x"][:, 0]
    assert abs(out.mean().item() - mu) < 0.02
    lag1 = torch.diagonal(torch.corrcoef(out.T), 1).mean().item()
    if matched:
        assert abs(lag1) < 0.03 and abs(out.std().item() - s) < 0.02
    else:
        assert abs(lag1) > 0.1
