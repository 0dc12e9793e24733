"""safer.py: the robust M-step (62), its multipliers, the Table 8 ablations, eps_t (67), benign data only."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

import safer
from recording import assert_eval_outputs, count_old_policy_copies, recorded_run


def fixed_batch(env_id="SafetyCarCircle-v0", seed=0, n=128):
    args = safer.resolve_args(safer.Args(env_id=env_id))
    torch.manual_seed(seed)
    actor = safer.Actor(8, 2)
    target_actor = copy.deepcopy(actor).requires_grad_(False)
    obs = torch.randn(n, 8)
    with torch.no_grad():
        old_mean, old_std = target_actor(obs)
        particles = old_mean.unsqueeze(1) + old_std.unsqueeze(1) * torch.randn(n, args.num_particles, 2)
        # E-step weights at its KL bound, preferring high a[0] and low a[1]
        score = particles[..., 0] - particles[..., 1]
        eta, _ = safer.solve_dual(score.numpy(), np.zeros(score.shape), args.estep_kl, 1e9, np.array([1.0, 0.0]))
        weights = torch.softmax(score / eta, dim=1)
    return args, actor, target_actor, obs, particles, weights


def test_eps_schedule_follows_eq_67():
    eps, t_s, t_i = 0.05, 4, 10
    assert safer.eps_schedule(0, eps, t_s, t_i) == 0
    assert safer.eps_schedule(t_s, eps, t_s, t_i) == 0
    assert safer.eps_schedule(t_s + t_i / 2, eps, t_s, t_i) == pytest.approx(eps / 2)
    assert safer.eps_schedule(t_s + t_i, eps, t_s, t_i) == pytest.approx(eps)
    assert safer.eps_schedule(t_s + 3 * t_i, eps, t_s, t_i) == pytest.approx(eps)


@pytest.mark.parametrize("flag,term", [("no_vanilla_mstep", "vanilla"), ("no_adv_kl", "adv_kl"),
                                       ("no_adv_mle", "adv_mle")])
def test_each_ablation_removes_exactly_its_term(flag, term):
    args, actor, target_actor, obs, particles, weights = fixed_batch()
    obs_adv = obs + 0.05 * torch.sign(torch.randn_like(obs))
    with torch.no_grad():
        old_mean, old_std = target_actor(obs)
        m1, var = safer.particle_moments(particles, weights)
    duals = safer.MStepDuals(0.7, 3.0, 2.0)
    terms, _ = safer.robust_m_step_terms(actor, obs, obs_adv, old_mean, old_std, (m1, var), (m1, var), duals, args)
    full = sum(terms[name] for name in safer.enabled_terms(args))
    ablated_args = dataclasses.replace(args, **{flag: True})
    ablated = sum(terms[name] for name in safer.enabled_terms(ablated_args))
    assert set(safer.enabled_terms(args)) - set(safer.enabled_terms(ablated_args)) == {term}
    assert ablated.item() == pytest.approx(full.item() - terms[term].item(), rel=1e-6)
    # each term really is what eq. (62) says: the adversarial MLE is the weighted log-likelihood on nu(s),
    # decoupled as the vanilla one (mean at nu(s) with the old std, std at nu(s) with the old mean)
    mean_adv, std_adv = actor(obs_adv)

    def log_lik(mean, std):
        return (torch.distributions.Normal(mean.unsqueeze(1), std.unsqueeze(1)).log_prob(particles).sum(-1)
                * weights).sum(1).mean()

    explicit = log_lik(mean_adv, old_std) + log_lik(old_mean, std_adv)
    assert terms["adv_mle"].item() == pytest.approx(-explicit.item(), rel=1e-5)


def test_executed_std_fit_fits_the_std_to_the_particles_clamped_to_the_box(monkeypatch):
    """--std-fit executed: the std terms are the weighted log-likelihood of the clamped particles (what the env
    executes) under the old mean; the mean terms still fit the particles as sampled."""
    args, actor, target_actor, obs, particles, weights = fixed_batch()
    particles = particles * 3  # a third of the particles or more beyond the box
    obs_adv = obs + 0.05 * torch.sign(torch.randn_like(obs))
    with torch.no_grad():
        old_mean, old_std = target_actor(obs)
    sampled = safer.particle_moments(particles, weights)
    executed = safer.particle_moments(particles.clamp(-1, 1), weights)
    terms, _ = safer.robust_m_step_terms(actor, obs, obs_adv, old_mean, old_std, sampled, executed,
                                         safer.MStepDuals(0, 0, 0), args)
    mean, std = actor(obs)

    def log_lik(mean, std, targets):
        return (torch.distributions.Normal(mean.unsqueeze(1), std.unsqueeze(1)).log_prob(targets).sum(-1)
                * weights).sum(1).mean()

    explicit = log_lik(mean, old_std, particles) + log_lik(old_mean, std, particles.clamp(-1, 1))
    assert terms["vanilla"].item() == pytest.approx(-explicit.item(), rel=1e-5)
    # robust_m_step hands the terms the clamped moments for the std with the flag, the sampled ones without it
    seen = []

    def recording_terms(*a, **k):
        seen.append((a[5], a[6]))
        return terms_function(*a, **k)

    terms_function = safer.robust_m_step_terms
    monkeypatch.setattr(safer, "robust_m_step_terms", recording_terms)
    for std_fit, std_target in (("sampled", sampled), ("executed", executed)):
        opt = torch.optim.SGD(actor.parameters(), lr=0.0)
        safer.robust_m_step(actor, target_actor, opt, obs, obs_adv, particles, weights, safer.MStepDuals(0.0, 0.0, 0.0),
                            dataclasses.replace(args, std_fit=std_fit, mstep_iters=1))
        mean_target, got = seen.pop()
        assert all(torch.equal(g, w) for g, w in zip(mean_target + got, sampled + std_target))


def test_ablated_m_step_leaves_its_multiplier_alone_and_trains():
    args, actor, target_actor, obs, particles, weights = fixed_batch()
    args = dataclasses.replace(args, no_adv_kl=True)
    opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    duals = safer.MStepDuals(1.0, 1.0, 5.0)
    before = [p.clone() for p in actor.parameters()]
    safer.robust_m_step(actor, target_actor, opt, obs, obs + 0.05, particles, weights, duals, args)
    assert duals.beta_adv == 5.0
    assert any(not torch.equal(a, b) for a, b in zip(before, actor.parameters()))


def test_adversarial_kl_within_bound_after_robust_m_step():
    args, actor, target_actor, obs, particles, weights = fixed_batch()
    obs_adv = obs + 3 * torch.randn_like(obs)  # a strong, fixed corruption
    opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    duals = safer.MStepDuals()
    with torch.no_grad():
        mean, std = actor(obs)
        kl_start = safer.gaussian_kl(mean, std, *actor(obs_adv)).mean().item()
    assert kl_start > 1.5 * args.xi_adv  # the constraint starts violated
    for _ in range(40):
        kls = safer.robust_m_step(actor, target_actor, opt, obs, obs_adv, particles, weights, duals, args)
    with torch.no_grad():
        mean, std = actor(obs)
        kl_end = safer.gaussian_kl(mean, std, *actor(obs_adv)).mean().item()
    assert kl_end <= 1.5 * args.xi_adv
    assert kls["kl_mean"] <= 1.5 * args.mstep_kl


def test_beta_adv_rises_when_violated_and_falls_to_zero_when_slack():
    args, actor, target_actor, obs, particles, weights = fixed_batch()
    opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    duals = safer.MStepDuals()
    violated = obs + 3 * torch.randn_like(obs)
    safer.robust_m_step(actor, target_actor, opt, obs, violated, particles, weights, duals, args)
    assert duals.beta_adv > 1.0
    for _ in range(30):  # nu(s) = s: the KL is 0, the constraint slack
        safer.robust_m_step(actor, target_actor, opt, obs, obs, particles, weights, duals, args)
    assert duals.beta_adv == 0.0


def test_every_m_step_multiplier_is_capped_in_units_of_its_bound():
    args = fixed_batch()[0]
    for bound in (args.mstep_kl, args.mstep_kl_std, args.xi_adv):
        assert safer.dual_step(100.0, bound, 1.0, args) == pytest.approx(args.mstep_dual_max / bound)
        assert safer.dual_step(1.0, bound, 0.0, args) == pytest.approx(1.0 - args.mstep_dual_lr)
        assert safer.dual_step(0.1, bound, 0.0, args) == 0.0


def test_beta_adv_has_its_own_cap_in_units_of_xi_adv():
    """Car-Circle caps beta_adv at 0.03 / xi_adv = 2.5; the M-step multipliers of the vanilla KL keep 0.1 / bound."""
    args, actor, target_actor, obs, particles, weights = fixed_batch()
    assert (args.adv_dual_max, args.mstep_dual_max, args.xi_adv) == (0.03, 0.1, 0.012)
    opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    duals = safer.MStepDuals(0.0, 0.0, 2.4)
    violated = obs + 3 * torch.randn_like(obs)
    safer.robust_m_step(actor, target_actor, opt, obs, violated, particles, weights, duals, args)
    assert duals.beta_adv == pytest.approx(0.03 / 0.012)
    assert safer.dual_step(100.0, args.xi_adv, 1.0, args) == pytest.approx(0.1 / 0.012)
    assert safer.resolve_args(safer.Args(env_id="SafetyBallCircle-v0")).adv_dual_max == 0.1


TINY = ["--env-id", "SafetyBallCircle-v0", "--total-timesteps", "800", "--learning-starts", "200",
        "--num-envs", "1", "--steps-per-epoch", "200", "--batch-size", "32", "--num-particles", "8",
        "--updates-per-step", "0.05",
        "--eval-episodes", "2", "--attack-steps", "3", "--adv-start-epoch", "1", "--adv-ramp-epochs", "1",
        "--train-attack-steps", "3"]


def test_benign_data_only_and_outputs(tmp_path):
    run_dir = tmp_path / "run"
    proc, obs, next_obs = recorded_run("safer", tmp_path, [*TINY, "--run-dir", str(run_dir)])
    # the stored state of step t+1 is exactly the stored next state of step t, except at the 200-step episode
    # boundaries: nothing was perturbed, although eps_t reached eps during the run
    same = np.all(obs[1:] == next_obs[:-1], axis=(1, 2))
    assert obs.shape[:2] == (800, 1)
    assert np.flatnonzero(~same).tolist() == [199, 399, 599]  # 800 steps of one env, a reset every 200
    record = json.loads((run_dir / "eval.json").read_text())
    assert set(record["results"]) == {"none", "mc", "mr", "mad", "uniform"}
    assert (run_dir / "model.pt").exists() and (run_dir / "progress.csv").exists()
    assert_eval_outputs(run_dir)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = set(EventAccumulator(str(run_dir)).Reload().Tags()["scalars"])
    assert {"losses/kl_adv", "losses/beta_adv", "charts/eps_t", "charts/episodic_cost"} <= tags
    assert "eps_t 0.05" in proc.stdout  # the attack inside the update ran at the full budget


def test_adversarial_kl_does_not_reward_a_wider_std_for_a_mean_shift():
    """With equal stds at s and nu(s), a mean shift must give the std at nu(s) no gradient (the joint KL would push
    it up: its minimiser over that std is sqrt(std^2 + shift^2))."""
    args, _, target_actor, obs, particles, weights = fixed_batch()
    obs_adv = obs + 0.05
    mean = torch.zeros(len(obs), 2)
    std = torch.full((len(obs), 2), 0.5)
    mean_adv = (mean + 1.0).requires_grad_(True)
    std_adv = std.clone().requires_grad_(True)

    def actor(x):
        return (mean_adv, std_adv) if x is obs_adv else (mean, std)

    with torch.no_grad():
        old_mean, old_std = target_actor(obs)
        m1, var = safer.particle_moments(particles, weights)
    terms, kls = safer.robust_m_step_terms(actor, obs, obs_adv, old_mean, old_std, (m1, var), (m1, var),
                                           safer.MStepDuals(), args)
    terms["adv_kl"].backward()
    assert std_adv.grad.abs().max().item() < 1e-6
    assert (mean_adv.grad > 0).all()  # the mean at nu(s) is pulled back toward the benign mean
    assert kls["kl_adv"] == pytest.approx(0.5 * 2 * (1.0 / 0.5) ** 2)  # the full KL of the shift, 2 dims


def test_adversarial_kl_is_measured_from_the_current_policy_decoupled():
    """kl_adv = KL(pi_theta(s) || pi_theta(nu(s))) in its mean part plus its std part, from the current policy (not
    the old one): checked against torch.distributions."""
    args, actor, target_actor, obs, particles, weights = fixed_batch()
    with torch.no_grad():  # the current policy has moved away from the old one
        for p in actor.parameters():
            p.add_(0.05 * torch.randn_like(p))
        old_mean, old_std = target_actor(obs)
        m1, var = safer.particle_moments(particles, weights)
    obs_adv = obs + 0.05 * torch.sign(torch.randn_like(obs))
    _, kls = safer.robust_m_step_terms(actor, obs, obs_adv, old_mean, old_std, (m1, var), (m1, var), safer.MStepDuals(),
                                       args)
    with torch.no_grad():
        mean, std = actor(obs)
        mean_adv, std_adv = actor(obs_adv)
    kl, normal = torch.distributions.kl_divergence, torch.distributions.Normal
    expected = (kl(normal(mean, std), normal(mean_adv, std)).sum(-1).mean()
                + kl(normal(mean, std), normal(mean, std_adv)).sum(-1).mean()).item()
    from_old = (kl(normal(old_mean, old_std), normal(mean_adv, old_std)).sum(-1).mean()
                + kl(normal(old_mean, old_std), normal(old_mean, std_adv)).sum(-1).mean()).item()
    assert kls["kl_adv"] == pytest.approx(expected, rel=1e-5)
    assert abs(kls["kl_adv"] - from_old) > 1e-3


OLD_POLICY_FLAGS = ["--env-id", "SafetyBallCircle-v0", "--total-timesteps", "800", "--learning-starts", "200",
                    "--num-envs", "1", "--steps-per-epoch", "200", "--batch-size", "32", "--num-particles", "8",
                    "--updates-per-step", "0.05", "--eval-episodes", "1", "--eval-attackers", "none"]


@pytest.mark.parametrize("module, iteration_steps, copies",
                         [("safer", 0, 1 + 30), ("safer", 200, 1 + 3), ("cvpo", 200, 1 + 3), ("adv_cvpo", 200, 1 + 3)])
def test_old_policy_is_replaced_once_per_em_iteration(tmp_path, module, iteration_steps, copies):
    """30 updates (600 env steps after learning starts, 0.05 updates per step): the old policy pi_theta_i is
    copied from pi_theta once at the start and then after every update (0), or at the first update 200 or more
    env steps after its previous copy: three times in those 600 steps."""
    flags = [*OLD_POLICY_FLAGS, "--run-dir", str(tmp_path / "run"), "--iteration-steps", str(iteration_steps)]
    assert count_old_policy_copies(module, flags) == copies


def test_safer_without_its_adversarial_terms_trains_exactly_cvpo(tmp_path):
    """Outside the robust M-step the two scripts are the same algorithm: safer.py with neither adversarial term gives
    cvpo.py's episodes and evaluation bit for bit (the attack inside the update still runs), both run here on
    test_device.py's tiny-run flags."""
    from test_device import tiny_run
    # safer's tiny-run flags grow eps_t to eps after the first epoch, so the attack runs at full budget
    ablated = tiny_run("safer", str(tmp_path / "safer"), "--no-adv-kl", "--no-adv-mle")
    assert len(ablated["progress"]) == 3 and ablated == tiny_run("cvpo", str(tmp_path / "cvpo"))


def test_split_adversarial_duals_bound_the_mean_and_std_parts_each():
    """--adv-kl-duals split: beta_adv on the mean part and beta_adv_std on the std part of KL(pi(s) || pi(nu(s))),
    each bounded by xi_adv and stepped by its own part; joint: one multiplier on their sum."""
    args, actor, target_actor, obs, particles, weights = fixed_batch()
    obs_adv = obs + 0.05 * torch.sign(torch.randn_like(obs))
    with torch.no_grad():
        old_mean, old_std = target_actor(obs)
    moments = safer.particle_moments(particles, weights)
    split = dataclasses.replace(args, adv_kl_duals="split")
    duals = safer.MStepDuals(0.0, 0.0, 2.0, 3.0)
    terms, kls = safer.robust_m_step_terms(actor, obs, obs_adv, old_mean, old_std, moments, moments, duals, split)
    assert kls["kl_adv"] == pytest.approx(kls["kl_adv_mean"] + kls["kl_adv_std"])
    assert terms["adv_kl"].item() == pytest.approx(2.0 * (kls["kl_adv_mean"] - args.xi_adv)
                                                   + 3.0 * (kls["kl_adv_std"] - args.xi_adv), rel=1e-5)
    joint, _ = safer.robust_m_step_terms(actor, obs, obs_adv, old_mean, old_std, moments, moments, duals, args)
    assert joint["adv_kl"].item() == pytest.approx(2.0 * (kls["kl_adv"] - args.xi_adv), rel=1e-5)
    opt = torch.optim.SGD(actor.parameters(), lr=0.0)  # the multipliers' steps only
    stepped = dataclasses.replace(duals)
    kls = safer.robust_m_step(actor, target_actor, opt, obs, obs_adv, particles, weights, stepped,
                              dataclasses.replace(split, mstep_iters=1))
    assert stepped.beta_adv == safer.dual_step(2.0, args.xi_adv, kls["kl_adv_mean"], split, args.adv_dual_max)
    assert stepped.beta_adv_std == safer.dual_step(3.0, args.xi_adv, kls["kl_adv_std"], split, args.adv_dual_max)
