import json
import subprocess
import sys

from apollo_core.cli import main


def test_info_26b_json_reports_26b(capsys):
    assert main(["info", "--preset", "apollo-26b", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert abs(data["parameters"] - 26e9) / 26e9 <= 0.03
    assert data["tokens"]["video"] == 15 * 45 * 80  # 5 s at 24 fps -> 15 causal latent frames, 720p / 16
    assert data["tokens"]["audio"] == int(5 * 44100) // 1024
    assert data["flops_per_step_cfg"] == 2 * data["flops_per_step"] > 1e15
    assert data["weight_bytes"]["bf16"] == 2 * data["parameters"]


def test_info_text_and_bad_size(capsys):
    assert main(["info", "--preset", "apollo-tiny", "--seconds", "4"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "video 256" in out
    assert main(["info", "--preset", "apollo-tiny", "--width", "70"]) == 2
    assert "nearest valid: 64 or 80" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "apollo_core.cli", "info", "--preset", "debug"], capture_output=True, text=True, check=True)
    assert "debug" in out.stdout
