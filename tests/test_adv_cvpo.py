"""adv_cvpo.py: ADV-CVPO stores the attacked observation; ADV-EM-CVPO stores benign data; both write outputs."""

import json

import numpy as np
import pytest

import adv_cvpo
from recording import assert_eval_outputs, recorded_run

TINY = ["--env-id", "SafetyBallCircle-v0", "--total-timesteps", "600", "--learning-starts", "200",
        "--num-envs", "1", "--steps-per-epoch", "200", "--batch-size", "32", "--num-particles", "8",
        "--updates-per-step", "0.05",
        "--eval-episodes", "2", "--attack-steps", "3", "--adv-start-epoch", "0", "--adv-ramp-epochs", "1",
        "--train-attack-steps", "5"]


def assert_outputs(run_dir):
    record = json.loads((run_dir / "eval.json").read_text())
    assert set(record["results"]) == {"none", "mc", "mr", "mad", "uniform"}
    assert (run_dir / "model.pt").exists() and (run_dir / "progress.csv").exists()
    assert_eval_outputs(run_dir)


def test_adv_cvpo_stores_attacked_observations(tmp_path):
    run_dir = tmp_path / "run"
    _, obs, next_obs = recorded_run("adv_cvpo", tmp_path, [*TINY, "--run-dir", str(run_dir)])
    # stored obs of step t+1 is nu(s_t+1); stored next obs of step t is the true s_t+1
    change = np.abs(obs[1:] - next_obs[:-1]).max(axis=(1, 2))
    within_episode = (np.arange(len(change)) + 1) % 200 != 0
    assert (change[within_episode] <= 0.05 + 1e-6).all()
    assert (change[200:][within_episode[200:]] > 0).mean() > 0.9  # attacked once eps_t > 0 (epoch >= 1)
    assert_outputs(run_dir)


def test_adv_em_cvpo_stores_benign_data(tmp_path):
    run_dir = tmp_path / "run"
    _, obs, next_obs = recorded_run("adv_cvpo", tmp_path, [*TINY, "--attack-buffer", "--run-dir", str(run_dir)])
    same = np.all(obs[1:] == next_obs[:-1], axis=(1, 2))
    assert np.flatnonzero(~same).tolist() == [199, 399]
    assert_outputs(run_dir)


@pytest.mark.parametrize("epoch,expected", [(0, 0.0), (4, 0.0), (9, 0.025), (14, 0.05), (40, 0.05)])
def test_eps_schedule(epoch, expected):
    assert adv_cvpo.eps_schedule(epoch, 0.05, 4, 10) == pytest.approx(expected)
