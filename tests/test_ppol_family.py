"""sa_ppol.py and adv_ppol.py: the SA regulariser, ADV-PPOL's attacked rollouts, smoke runs, bad input."""

import json
import os
import sys

import numpy as np
import pytest
import torch

import adv_ppol
import sa_ppol
from attacks import gaussian_kl
from recording import ROOT, assert_eval_outputs, recorded_run
import launch

TINY = ["--env-id", "SafetyBallCircle-v0", "--total-timesteps", "600", "--steps-per-epoch", "200",
        "--num-envs", "1", "--q-steps", "5", "--eval-episodes", "2", "--attack-steps", "3",
        "--train-attack-steps", "3"]


def test_sa_regulariser_is_zero_without_perturbation_and_grows_with_it():
    torch.manual_seed(0)
    actor = sa_ppol.Actor(8, 2)
    obs = torch.randn(64, 8)
    assert sa_ppol.sa_regulariser(actor, obs, obs).item() == 0.0
    kl = sa_ppol.sa_regulariser(actor, obs, obs + 0.5 * torch.randn_like(obs))
    assert kl.item() > 0
    kl.backward()  # gradient flows only through the adversarial path, into the actor
    assert all(p.grad is not None for p in actor.mean.parameters())


def test_sa_regulariser_is_two_sigma_squared_times_algorithm_4s_kl():
    """With one state-independent std sigma in every dimension, ||mu(s) - mu(s_adv)||^2 = 2 sigma^2 KL(pi(s) ||
    pi(s_adv)): the authors' squared distance with weight 1 is the KL with weight 2 sigma^2."""
    torch.manual_seed(1)
    actor = sa_ppol.Actor(8, 2)
    with torch.no_grad():
        actor.log_std.fill_(np.log(0.3))
    obs = torch.randn(64, 8)
    obs_adv = obs + 0.1 * torch.randn_like(obs)
    with torch.no_grad():
        mean, std = actor(obs)
        kl = gaussian_kl(mean, std, *actor(obs_adv)).mean()
    assert sa_ppol.sa_regulariser(actor, obs, obs_adv).item() == pytest.approx(2 * 0.3**2 * kl.item(), rel=1e-5)


def assert_outputs(run_dir):
    record = json.loads((run_dir / "eval.json").read_text())
    assert set(record["results"]) == {"none", "mc", "mr", "mad", "uniform"}
    assert (run_dir / "model.pt").exists() and len((run_dir / "progress.csv").read_text().splitlines()) == 4
    assert_eval_outputs(run_dir)


def test_adv_ppol_budget_grows_as_the_authors_schedule():
    """eps_t = 0 before the start, then eps (1 - exp(-5 (t - start) / ramp)): 1 - e^-1 of eps a fifth of the way
    through the ramp, 99.3% at its end; Car-Circle's preset starts at 2M of 4M steps and ends at 92% of eps."""
    import adv_ppol
    eps, start, ramp = 0.05, 2_000_000, 4_000_000
    assert adv_ppol.eps_schedule(0, eps, start, ramp) == 0 and adv_ppol.eps_schedule(start, eps, start, ramp) == 0
    assert adv_ppol.eps_schedule(start + ramp // 5, eps, start, ramp) == pytest.approx(eps * (1 - np.exp(-1)))
    assert adv_ppol.eps_schedule(start + ramp, eps, start, ramp) == pytest.approx(eps * 0.99326, rel=1e-4)
    car = adv_ppol.resolve_args(adv_ppol.Args(env_id="SafetyCarCircle-v0"))
    assert (car.adv_start_steps, car.adv_ramp_steps, car.total_timesteps) == (start, ramp, 4_000_000)
    end = adv_ppol.eps_schedule(car.total_timesteps, car.eps, car.adv_start_steps, car.adv_ramp_steps)
    assert end == pytest.approx(0.918 * car.eps, rel=1e-3)


@pytest.mark.parametrize("attacker", ["mc"])  # mad, the default: test_device.py runs it end to end
def test_sa_ppol_smoke(attacker, tmp_path):
    run_dir = tmp_path / "run"
    proc = launch.run([sys.executable, os.path.join(ROOT, "sa_ppol.py"), *TINY, "--attacker", attacker,
                       "--run-dir", str(run_dir)], timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert_outputs(run_dir)


@pytest.mark.parametrize("attacker", ["mr"])  # mc: test_adv_ppol_td_residuals_compare_attacked_states_only
def test_adv_ppol_stores_attacked_observations_within_eps(attacker, tmp_path):
    run_dir = tmp_path / "run"
    flags = [*TINY, "--attacker", attacker, "--adv-start-steps", "1", "--adv-ramp-steps", "1", "--run-dir",
             str(run_dir)]
    _, obs, next_obs = recorded_run("adv_ppol", tmp_path, flags, buffer_class="Rollout")
    # rollout row t+1 holds nu(s_t+1); row t's next obs is the true s_t+1 (episodes are 200 vector steps)
    change = np.abs(obs[1:] - next_obs[:-1]).max(axis=(1, 2))
    within_episode = (np.arange(len(change)) + 1) % 200 != 0
    assert (change[within_episode] <= 0.05 + 1e-6).all()
    assert (change[200:][within_episode[200:]] > 0).all()  # epochs >= 1 run at eps_t = eps
    assert (change[:199] < 1e-6).all()  # epoch 0: eps_t = 0 (float32 rounding only)
    assert_outputs(run_dir)


def test_attacked_next_obs_is_the_next_stored_observation_or_the_attacked_true_next_state():
    rollout = adv_ppol.Rollout(4, 2, 3, 1)
    rollout.obs = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    rollout.next_obs = -np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    rollout.episode_end[1, 0] = 1  # env 0's episode ends at step 1
    next_seen = adv_ppol.attacked_next_obs(rollout, lambda states: states + 1000)
    for t in range(4):
        for e in range(2):
            boundary = t == 3 or (t, e) == (1, 0)
            expected = rollout.next_obs[t, e] + 1000 if boundary else rollout.obs[t + 1, e]
            assert np.array_equal(next_seen[t, e], expected), (t, e)


GAE_RECORDER = """
import sys, numpy as np, tyro
import adv_ppol
calls = []
gae = adv_ppol.gae
def recording_gae(rewards, values, next_values, terminated, episode_end, *rest):
    calls.append((values.copy(), next_values.copy(), episode_end.copy()))
    return gae(rewards, values, next_values, terminated, episode_end, *rest)
adv_ppol.gae = recording_gae
adv_ppol.train(adv_ppol.resolve_args(tyro.cli(adv_ppol.Args, args=sys.argv[2:])))
np.savez(sys.argv[1], **{f"{k}{i}": a for i, c in enumerate(calls) for k, a in zip(("v", "nv", "end"), c)})
"""


def test_adv_ppol_td_residuals_compare_attacked_states_only(tmp_path):
    """Within an episode V(nu(s')) is the value of the next step's stored nu(s): next_values[t] == values[t + 1]."""
    from recording import run_child
    record = tmp_path / "gae.npz"
    run_child(GAE_RECORDER, str(record), *TINY, "--attacker", "mc", "--adv-start-steps", "1", "--adv-ramp-steps", "1",
              "--total-timesteps", "400", "--eval-attackers", "none", "--run-dir", str(tmp_path / "run"))
    calls = np.load(record)
    attacked = 0
    for i in range(len([k for k in calls if k.startswith("v")])):
        values, next_values, end = calls[f"v{i}"], calls[f"nv{i}"], calls[f"end{i}"].astype(bool)
        inside = ~end[:-1]
        assert np.allclose(next_values[:-1][inside], values[1:][inside], rtol=0, atol=1e-6)
        attacked += inside.sum()
    assert attacked > 0
