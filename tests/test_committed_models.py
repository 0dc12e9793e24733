"""The trained policies committed in results/: each loads with --eval-checkpoint, without training, and evaluates
to its committed row, natural and under MC.

On one machine the evaluation is deterministic, but another CPU rounds the physics and the networks in other last
bits and an episode of several hundred steps amplifies them (measured under MKL_CBWR=COMPATIBLE: single returns of
these two policies move by up to 7%, their 20-episode means by up to 0.7 standard errors). So the re-evaluation is
compared as a second sample of the same policy's episodes: the means of the n = 20 episodes must agree within four
standard errors of the difference of two means, 4 sqrt((s_a^2 + s_b^2) / n), which a correct re-evaluation exceeds
with probability below 1e-4; a policy that no longer loads as it was trained misses by far more."""

import json
import math
import os
import sys

import numpy as np
import pytest

import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = {"safer.py": "results/SafetyBallCircle-v0/safer/seed1", "ppol.py": "results/SafetyBallCircle-v0/ppol/seed1"}
EPISODES = 20


def means_agree(a, b, standard_errors=4.0):
    """|mean(a) - mean(b)| within standard_errors of the difference of two independent means."""
    tolerance = standard_errors * math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / len(a))
    return abs(np.mean(a) - np.mean(b)) <= tolerance, abs(np.mean(a) - np.mean(b)), tolerance


def test_means_agree_within_sampling_error_only():
    rng = np.random.default_rng(0)
    sample = rng.normal(100, 10, EPISODES)
    assert means_agree(sample, sample)[0]
    assert means_agree(sample, sample * (1 + rng.normal(0, 0.03, EPISODES)))[0]  # another CPU's last bits
    assert not means_agree(sample, sample + 20)[0]  # a policy evaluated wrongly
    assert means_agree([0.0] * EPISODES, [0.0] * EPISODES)[0]


@pytest.mark.parametrize("script", RUNS)
def test_committed_policy_evaluates_to_its_row(tmp_path, script):
    run_dir = os.path.join(ROOT, RUNS[script])
    out = tmp_path / "eval.json"
    proc = launch.run([sys.executable, script, "--eval-checkpoint", os.path.join(run_dir, "model.pt"),
                       "--eval-episodes", str(EPISODES), "--eval-attackers", "none", "mc", "--eval-output", str(out)],
                      cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(run_dir, "eval.json")) as f:
        committed = json.load(f)["results"]
    again = json.loads(out.read_text())["results"]
    for attacker in ("none", "mc"):
        for key in ("returns", "costs"):
            # the first 20 episodes of eval.json ran as one batch of 20 envs from the same initial states as these
            ok, difference, tolerance = means_agree(again[attacker][key], committed[attacker][key][:EPISODES])
            assert ok, f"{attacker} {key}: means differ by {difference:.3g}, more than {tolerance:.3g}"
