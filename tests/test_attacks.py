"""attacks.py: the eps-ball, eps = 0, per-sample eps, strength against no attack and noise, batching."""

import pytest
import torch
import torch.nn as nn

from attacks import ATTACKERS, gaussian_kl, perturb

OBS_DIM, ACT_DIM, B = 6, 2, 32


class Policy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(OBS_DIM, 32), nn.Tanh(), nn.Linear(32, 2 * ACT_DIM))

    def forward(self, obs):
        mean, log_std = self.net(obs).chunk(2, -1)
        return torch.tanh(mean), log_std.clamp(-3, 1).exp()


class Critic(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(OBS_DIM + ACT_DIM, 32), nn.Tanh(), nn.Linear(32, 1))

    def forward(self, obs, act):
        return self.net(torch.cat([obs, act], -1)).squeeze(-1)


@pytest.fixture
def victim():
    torch.manual_seed(0)
    policy, qr, qc = Policy(), Critic(), Critic()
    policy.eval()
    qr.train()
    obs = torch.randn(B, OBS_DIM)
    return policy, qr, qc, obs


def run(attacker, victim, eps, steps=50, seed=0):
    policy, qr, qc, obs = victim
    return perturb(attacker, obs, eps, policy, qr, qc, steps=steps, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attacker", ATTACKERS)
@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_stays_in_ball_and_leaves_models_alone(attacker, eps, victim):
    policy, qr, qc, obs = victim
    adv = run(attacker, victim, eps)
    assert adv.shape == obs.shape
    assert (adv - obs).abs().max() <= eps + 1e-6
    for model in (policy, qr, qc):
        assert all(p.grad is None for p in model.parameters())
    assert not policy.training and qr.training and qc.training


@pytest.mark.parametrize("attacker", ATTACKERS)
def test_zero_eps_changes_nothing(attacker, victim):
    assert torch.equal(run(attacker, victim, 0.0), victim[3])


@pytest.mark.parametrize("attacker", ATTACKERS)
def test_per_sample_eps(attacker, victim):
    obs = victim[3]
    eps = torch.linspace(0, 0.5, B)
    delta = (run(attacker, victim, eps) - obs).abs().amax(1)
    assert (delta <= eps + 1e-6).all()
    assert delta[0] == 0
    if attacker != "none":
        assert delta[-1] > 0.25  # the large budgets are used


def test_negative_eps_is_rejected(victim):
    with pytest.raises(ValueError, match="eps"):
        run("mc", victim, -0.1)


def test_unknown_attacker_is_rejected(victim):
    with pytest.raises(ValueError, match="unknown attacker 'foo'"):
        run("foo", victim, 0.1)


def q_of_attack(critic, victim, adv):
    policy, _, _, obs = victim
    with torch.no_grad():
        return critic(obs, policy(adv)[0]).mean()


@pytest.mark.parametrize("attacker,critic_index", [("mc", 2), ("mr", 1)])
def test_critic_attack_raises_its_q(attacker, critic_index, victim):
    critic, eps = victim[critic_index], 0.2
    clean = q_of_attack(critic, victim, victim[3])
    noise = q_of_attack(critic, victim, run("uniform", victim, eps))
    attacked = q_of_attack(critic, victim, run(attacker, victim, eps))
    assert attacked > clean + 1e-3 and attacked > noise + 1e-3


def test_critic_attack_keeps_best_iterate_per_sample(victim):
    policy, _, qc, obs = victim
    adv = run("mc", victim, 0.2)
    with torch.no_grad():
        assert (qc(obs, policy(adv)[0]) >= qc(obs, policy(obs)[0]) - 1e-6).all()


def test_mad_raises_kl(victim):
    policy, _, _, obs = victim
    eps = 0.2
    with torch.no_grad():
        mean0, std0 = policy(obs)
        kl = lambda adv: gaussian_kl(mean0, std0, *policy(adv)).mean()  # noqa: E731
        assert kl(run("mad", victim, eps)) > 2 * kl(run("uniform", victim, eps))


@pytest.mark.parametrize("attacker", ["mc", "mr"])
def test_batch_equals_separate_calls(attacker, victim):
    policy, qr, qc, obs = victim
    batched = perturb(attacker, obs, 0.2, policy, qr, qc, steps=30)
    single = torch.cat([perturb(attacker, obs[i:i + 1], 0.2, policy, qr, qc, steps=30) for i in range(B)])
    assert torch.allclose(batched, single, atol=1e-5)


def reference_pgd(objective, obs, eps, delta, steps, attack_lr):
    """Algorithm 3's iteration written plainly, every step run: a gradient pass and a separate value pass at every
    iterate, the best iterate kept."""
    eps_col = torch.full((obs.shape[0], 1), eps)
    best_val = objective(obs + delta).detach()
    best_delta = delta.clone()
    for _ in range(steps):
        delta_var = delta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(obs + delta_var).sum(), delta_var)
        delta = (delta + attack_lr * eps_col * grad.sign()).clamp(-eps, eps)
        val = objective(obs + delta).detach()
        better = val > best_val
        best_val, best_delta = torch.where(better, val, best_val), torch.where(better[:, None], delta, best_delta)
    return obs + best_delta


@pytest.mark.parametrize("steps", [1, 5, 200])
@pytest.mark.parametrize("attacker", ["mc", "mr"])
@pytest.mark.parametrize("grad_mode", [torch.enable_grad, torch.no_grad])
def test_pgd_with_its_early_stops_gives_every_step_run(grad_mode, attacker, steps, victim):
    """Evaluating each iterate once and freezing samples (Algorithm 3's stop, two-cycles) change no result, and
    the 200-step attack stops long before its last step."""
    policy, qr, qc, obs = victim
    q_fn = qc if attacker == "mc" else qr
    expected = reference_pgd(lambda s: q_fn(obs, policy(s)[0]), obs, 0.1, torch.zeros_like(obs), steps, 0.2)
    calls = []

    def counting_q(obs, act):
        calls.append(1)
        return q_fn(obs, act)

    with grad_mode():
        adv = perturb(attacker, obs, 0.1, policy, counting_q if attacker == "mr" else qr,
                      counting_q if attacker == "mc" else qc, steps=steps)
    assert torch.equal(adv, expected)
    assert len(calls) <= steps + 1
    if steps == 200:
        assert len(calls) < 50


def test_corner_attack_moves_every_dimension_by_eps_with_either_sign(victim):
    obs = victim[3]
    delta = run("corner", victim, 0.05) - obs
    assert torch.allclose(delta.abs(), torch.full_like(delta, 0.05), atol=1e-6)
    share_up = (delta > 0).float().mean().item()
    assert 0.3 < share_up < 0.7
    assert torch.equal(run("corner", victim, 0.05, seed=3), run("corner", victim, 0.05, seed=3))
