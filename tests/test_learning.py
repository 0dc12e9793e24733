"""Learning checks, minutes each, run on demand: pytest tests/ -m slow.

Small Ball-Circle budgets, checked on the deterministic policy's final evaluation (10 episodes). Measured on the
development machine: CVPO 368.5 / 0.00 at 36k steps; SAFER 321.1 / 0.00 at 38.4k steps, MC 381.1 / 6.10 (at 120k
steps the committed SAFER runs are under 1 under MC).
"""

import json
import os
import sys

import pytest

import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(script, run_dir, *flags):
    proc = launch.run([sys.executable, os.path.join(ROOT, script), "--env-id", "SafetyBallCircle-v0", "--seed", "1",
                       "--eval-episodes", "10", "--run-dir", str(run_dir), *flags], cwd=ROOT, timeout=3600)
    assert proc.returncode == 0, proc.stderr
    return json.loads((run_dir / "eval.json").read_text())["results"]


@pytest.mark.slow
def test_cvpo_learns_ball_circle_safely(tmp_path):
    results = train("cvpo.py", tmp_path / "cvpo", "--total-timesteps", "36000", "--eval-attackers", "none")
    assert results["none"]["return_mean"] >= 200 and results["none"]["cost_mean"] <= 5


@pytest.mark.slow
def test_safer_learns_ball_circle_and_stays_safe_under_mc(tmp_path):
    # the attack budget reaches eps at epoch 8 (25.6k steps), so the last third is trained at full eps
    results = train("safer.py", tmp_path / "safer", "--total-timesteps", "38400", "--adv-start-epoch", "4",
                    "--adv-ramp-epochs", "4", "--eval-attackers", "none", "mc")
    assert results["none"]["return_mean"] >= 150 and results["none"]["cost_mean"] <= 5
    assert results["mc"]["cost_mean"] <= 10
