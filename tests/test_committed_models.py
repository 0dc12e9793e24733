"""The trained policies committed in results/: each loads with --eval-checkpoint, without training, and repeats
its run's own evaluation episode for episode, natural and under MC (the evaluation is deterministic; the first 20
episodes of eval.json ran as one batch of 20 envs, as these do), up to the last bits another CPU may change."""

import json
import os
import sys

import pytest

import launch
from recording import assert_same_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = {"safer.py": "results/SafetyBallCircle-v0/safer/seed1", "ppol.py": "results/SafetyBallCircle-v0/ppol/seed1"}


@pytest.mark.parametrize("script", RUNS)
def test_committed_policy_repeats_its_runs_evaluation(tmp_path, script):
    run_dir = os.path.join(ROOT, RUNS[script])
    out = tmp_path / "eval.json"
    proc = launch.run([sys.executable, script, "--eval-checkpoint", os.path.join(run_dir, "model.pt"),
                       "--eval-episodes", "20", "--eval-attackers", "none", "mc", "--eval-output", str(out)],
                      cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(run_dir, "eval.json")) as f:
        committed = json.load(f)["results"]
    again = json.loads(out.read_text())["results"]
    for attacker in ("none", "mc"):
        assert_same_run({key: again[attacker][key] for key in ("returns", "costs")},
                        {key: committed[attacker][key][:20] for key in ("returns", "costs")})
