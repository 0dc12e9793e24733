"""ppol.py: PID Lagrangian, GAE with truncation, the eq. (70) loss (its end-to-end run: test_device.py)."""

import numpy as np
import pytest
import torch

import ppol


def test_pid_lagrangian_grows_while_over_limit_and_falls_back():
    pid = ppol.PIDLagrangian(kp=0.1, ki=0.003, kd=0.001, cost_limit=5.0)
    lams = [pid.update(25.0) for _ in range(20)]
    assert all(b > a for a, b in zip(lams[1:], lams[2:]))  # the integral keeps pushing while cost > limit
    assert lams[0] == pytest.approx(0.1 * 20 + 0.003 * 20 + 0.001 * 25)
    under = [pid.update(0.0) for _ in range(200)]
    assert all(lam >= 0 for lam in lams + under)
    assert under[0] < lams[-1] and under[-1] == 0.0
    assert pid.integral == 0.0  # the integral is clipped at 0, never negative


def test_gae_matches_hand_computation_with_truncation():
    gamma, lam = 0.9, 0.5
    # one env, 4 steps: an episode truncated at t=1 (time limit: bootstrap from its final state), then a new
    # episode that terminates at t=3
    rewards = np.array([[1.0], [2.0], [3.0], [4.0]])
    values = np.array([[0.5], [1.0], [1.5], [2.0]])
    next_values = np.array([[1.0], [7.0], [2.0], [9.0]])  # 7.0: V(final obs of the truncated episode)
    terminated = np.array([[0.0], [0.0], [0.0], [1.0]])
    episode_end = np.array([[0.0], [1.0], [0.0], [1.0]])
    adv, ret = ppol.gae(rewards, values, next_values, terminated, episode_end, gamma, lam)
    d3 = 4.0 - 2.0  # terminated: no bootstrap
    d2 = 3.0 + 0.9 * 2.0 - 1.5
    d1 = 2.0 + 0.9 * 7.0 - 1.0  # truncated: bootstrap from the final observation's value
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    expected = [d0 + 0.45 * d1, d1, d2 + 0.45 * d3, d3]  # no recursion across the episode boundary
    assert adv[:, 0] == pytest.approx(expected)
    assert ret[:, 0] == pytest.approx(np.array(expected) + values[:, 0])


def test_ppol_loss_is_eq_70():
    torch.manual_seed(0)
    actor = ppol.Actor(4, 2)
    obs, act = torch.randn(64, 4), torch.rand(64, 2) * 2 - 1
    with torch.no_grad():
        mean, std = actor(obs)
        old_logp = ppol.gaussian_log_prob(mean, std, act) + 0.3 * torch.randn(64)  # ratios away from 1
    adv_r, adv_c = torch.randn(64), torch.randn(64)
    lam, clip = 2.5, 0.2
    loss, approx_kl = ppol.ppol_loss(actor, obs, act, old_logp, adv_r, adv_c, lam, clip)
    ratio = (ppol.gaussian_log_prob(mean, std, act) - old_logp).exp()
    l_ppo = torch.min(ratio * adv_r, ratio.clamp(1 - clip, 1 + clip) * adv_r).mean()
    expected = -(l_ppo - lam * (ratio * adv_c).mean()) / (1 + lam)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert approx_kl.item() >= 0
    # lam = 0 is plain clipped PPO
    loss0, _ = ppol.ppol_loss(actor, obs, act, old_logp, adv_r, adv_c, 0.0, clip)
    assert loss0.item() == pytest.approx(-l_ppo.item(), rel=1e-6)
