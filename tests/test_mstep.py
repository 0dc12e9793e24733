"""M-step of cvpo.py: on fixed E-step weights the KL parts stay in their bounds and the likelihood rises."""

import copy

import numpy as np
import pytest
import torch

import cvpo


@pytest.mark.parametrize("env_id", ["SafetyCarCircle-v0", "SafetyBallCircle-v0", "SafetyDroneRun-v0"])
def test_m_step_respects_kl_bounds_and_raises_likelihood(env_id):
    args = cvpo.resolve_args(cvpo.Args(env_id=env_id))
    torch.manual_seed(0)
    obs_dim, act_dim, n, k = 8, 2, 256, args.num_particles
    actor = cvpo.Actor(obs_dim, act_dim)
    target_actor = copy.deepcopy(actor).requires_grad_(False)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    obs = torch.randn(n, obs_dim)
    with torch.no_grad():
        old_mean, old_std = target_actor(obs)
        particles = old_mean.unsqueeze(1) + old_std.unsqueeze(1) * torch.randn(n, k, act_dim)
        # the E-step prefers particles with high a[0] and low a[1], as far as its own KL bound lets it: a shift the
        # trust region must hold back
        score = particles[..., 0] - particles[..., 1]
        eta, _ = cvpo.solve_dual(score.numpy(), np.zeros((n, k)), args.estep_kl, 1e9, np.array([1.0, 0.0]))
        weights = torch.softmax(score / eta, dim=1)
    m1, var = cvpo.particle_moments(particles, weights)
    before = cvpo.m_step_terms(actor, obs, old_mean, old_std, m1, var)[0].item()
    duals = cvpo.MStepDuals()
    for _ in range(50):  # repeated updates on the same batch: the multipliers settle
        cvpo.m_step(actor, target_actor, actor_opt, obs, particles, weights, duals, args)
    log_lik, kl_mean, kl_std = cvpo.m_step_terms(actor, obs, old_mean, old_std, m1, var)
    assert log_lik.item() > before
    assert kl_mean.item() <= 1.5 * args.mstep_kl
    assert kl_std.item() <= 1.5 * args.mstep_kl_std
    assert duals.beta_mean >= 0 and duals.beta_std >= 0


def test_m_step_multipliers_stay_in_their_box_on_an_unreachable_target():
    args = cvpo.resolve_args(cvpo.Args())
    torch.manual_seed(0)
    actor = cvpo.Actor(8, 2)
    target_actor = copy.deepcopy(actor).requires_grad_(False)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    obs = torch.randn(64, 8)
    with torch.no_grad():
        old_mean, _ = target_actor(obs)
    particles = (old_mean + 5.0).unsqueeze(1).expand(-1, 4, -1)  # far outside any trust region
    weights = torch.full((64, 4), 0.25)
    duals = cvpo.MStepDuals()
    for _ in range(20):
        cvpo.m_step(actor, target_actor, actor_opt, obs, particles, weights, duals, args)
    assert duals.beta_mean == pytest.approx(args.mstep_dual_max / args.mstep_kl)
    assert duals.beta_std <= args.mstep_dual_max / args.mstep_kl_std


def test_moment_form_equals_explicit_weighted_log_likelihood():
    torch.manual_seed(1)
    n, k, d = 16, 32, 3
    particles = torch.randn(n, k, d, dtype=torch.float64)
    weights = torch.softmax(torch.randn(n, k, dtype=torch.float64) * 3, dim=1)
    mean, std = torch.randn(n, d, dtype=torch.float64), torch.rand(n, d, dtype=torch.float64) + 0.1
    explicit = (torch.distributions.Normal(mean.unsqueeze(1), std.unsqueeze(1)).log_prob(particles).sum(-1)
                * weights).sum(1).mean()
    m1, var = cvpo.particle_moments(particles, weights)
    assert cvpo.weighted_log_lik(mean, std, m1, var).item() == pytest.approx(explicit.item(), rel=1e-10)


def test_log_std_stays_in_its_range_and_keeps_a_gradient_past_it():
    actor = cvpo.Actor(4, 2)
    obs = torch.randn(16, 4)
    with torch.no_grad():  # push the raw log-std output far above and below its range
        actor.body[-1].bias[2:] = torch.tensor([50.0, -50.0])
    _, std = actor(obs)
    # soft bounds: within 0.01 of the range in log-std (softplus(6) = 6.0025)
    assert (std[:, 0].log() <= cvpo.Actor.LOG_STD_MAX + 0.01).all()
    assert (std[:, 1].log() >= cvpo.Actor.LOG_STD_MIN - 0.01).all()
    std.log().sum().backward()
    # with clamp() this gradient is exactly 0 and a log-std past its bound can never come back
    assert actor.body[-1].bias.grad[2:].abs().min() > 0
