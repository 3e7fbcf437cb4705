"""The codec robustness bench: its latent perturbations, and what the detectors read after them."""
from __future__ import annotations

import json

import pytest
import torch

from apollo_core.pipeline import load_bundle
from benchmarks.cli import main as bench_main
from benchmarks.robustness import perturb, run_robustness, spatial_blur, temporal_blur
from training.data.world import HELDOUT_PATH, load_specs


def test_blurs_leave_what_they_average_unchanged_and_mix_by_their_share() -> None:
    g = torch.Generator().manual_seed(0)
    still = torch.randn(1, 4, 1, 5, 6, generator=g).expand(1, 4, 3, 5, 6)  # the same latent frame 3 times
    assert torch.allclose(temporal_blur(still, 0.7), still)
    flat = torch.randn(2, 4, 3, 1, 1, generator=g).expand(2, 4, 3, 5, 6)  # constant within each frame
    assert torch.allclose(spatial_blur(flat, 0.7), flat)
    x = torch.zeros(1, 1, 3, 1, 1)
    x[0, 0, 1] = 1.0  # a pulse in the middle frame
    y = temporal_blur(x, 0.5)[0, 0, :, 0, 0]
    assert torch.allclose(y, torch.tensor([0.25, 0.5, 0.25]))  # each neighbour takes half of the mean


def test_noise_has_the_asked_variance_and_bad_perturbations_are_refused() -> None:
    x = torch.zeros(1, 8, 8, 16, 16)
    z = perturb(x, "noise", 0.05, torch.Generator().manual_seed(1))
    assert abs(float(z.var()) - 0.05) < 0.005
    assert torch.equal(perturb(x, "noise", 0.0), x)
    with pytest.raises(ValueError, match="unknown perturbation kind 'fuzz'"):
        perturb(x, "fuzz", 0.1)
    with pytest.raises(ValueError, match=r"temporal blur share must be in \[0, 1\]"):
        perturb(x, "temporal", 1.5)
    with pytest.raises(ValueError, match="noise variance must be >= 0"):
        perturb(x, "noise", -0.1)


def test_the_shipped_codec_reads_real_clips_back_and_loses_the_motion_under_heavy_blur() -> None:
    specs = load_specs(HELDOUT_PATH)[:3]  # four blinking objects, a bouncing and a pulsing one
    out = run_robustness(load_bundle(None), specs, perturbations=(("none", "noise", 0.0), ("smear", "temporal", 1.0)))
    assert out["none"]["latent_mse"] == 0.0
    assert out["none"]["acc_motion"] == 1.0 and out["none"]["acc_moving"] == 1.0 and out["none"]["acc_colour"] == 1.0
    # each latent frame replaced by its neighbours' mean: the bouncing ball turns into ghosts
    assert out["smear"]["latent_mse"] > 0.1
    assert out["smear"]["acc_moving"] < 0.5


def test_cli_writes_json_and_refuses_a_bad_perturbation(tmp_path, capsys) -> None:
    out = tmp_path / "rob.json"
    assert bench_main(["robustness", "--n", "1", "--quiet", "--perturb", "noise:0.01", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert list(data["perturbations"]) == ["none", "noise 0.01"]
    assert data["command"].startswith("apollo-av bench robustness --n 1")
    with pytest.raises(SystemExit) as exc:
        bench_main(["robustness", "--perturb", "fuzz:1"])
    assert exc.value.code == 2
    assert "unknown perturbation kind 'fuzz'" in capsys.readouterr().err
    assert bench_main(["robustness", "--n", "1", "--video-codec", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert bench_main(["robustness", "--specs", str(tmp_path / "none.jsonl")]) == 2
    assert "--specs" in capsys.readouterr().err
