"""Observational attackers shared by every safer-rl script (paper Algorithm 3, eq. 68; docs/conventions.md).

Every attacker takes a batch of clean observations `obs` (B, obs_dim), a budget `eps` (float or (B,) tensor,
0 allowed) and returns perturbed observations with |obs_adv - obs|_inf <= eps. Gradients are taken with
respect to the perturbation only (torch.autograd.grad), so no `.grad` is ever left on model parameters,
and the models' train/eval mode is never touched.

The victim is described by callables:
  policy(obs) -> (mean, std)   Gaussian policy; `mean` is the deterministic action mu(s)
  q_fn(obs, act) -> (B,)       critic used by MC (cost critic) or MR (reward critic)
"""

import torch

ATTACKERS = ("none", "mc", "mr", "mad", "uniform", "corner")


def _eps_column(eps, obs):
    eps = torch.as_tensor(eps, dtype=obs.dtype, device=obs.device)
    if (eps < 0).any():
        raise ValueError(f"attack budget eps must be >= 0, got {eps.min().item()}")
    return eps.reshape(-1, 1).expand(obs.shape[0], 1) if eps.ndim else eps.expand(obs.shape[0], 1)


def _project(delta, eps_col):
    return torch.maximum(torch.minimum(delta, eps_col), -eps_col)


def _pgd(objective, obs, eps_col, delta, steps, attack_lr, q_tol, s_tol):
    """Projected sign-gradient ascent of objective(obs + delta) -> (B,), per sample.

    Keeps the best iterate seen for each sample and freezes a sample once both its objective change and its
    state change fall below q_tol and s_tol (Algorithm 3's early stop). A sample is also frozen when its new
    iterate is the one of two steps back: the step is a deterministic function of the iterate (the victims are
    networks without dropout), so the sample alternates between two iterates already evaluated and no later one
    can beat its best. Sign steps end in such a two-cycle within ~20 steps (a coordinate whose gradient sign flips
    at the ball's edge), where the objective and state changes stay above the thresholds; the result is exactly
    that of running every step. Each iterate's objective is evaluated once, with the graph that the next step's
    gradient is taken from.
    """
    step = attack_lr * eps_col

    def value_and_graph(delta):
        with torch.enable_grad():  # callers may hold torch.no_grad()
            delta_var = delta.detach().requires_grad_(True)
            return objective(obs + delta_var), delta_var

    val, delta_var = value_and_graph(delta)
    best_val, best_delta = val.detach(), delta.clone()
    prev_val, prev_delta = best_val, delta
    active = torch.ones(obs.shape[0], dtype=torch.bool, device=obs.device)
    for i in range(steps):
        if not active.any():
            break
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(val.sum(), delta_var)
        new_delta = _project(delta + step * grad.sign(), eps_col)
        new_delta = torch.where(active[:, None], new_delta, delta)
        if i < steps - 1:
            val, delta_var = value_and_graph(new_delta)
        else:
            with torch.no_grad():
                val = objective(obs + new_delta)
        new_val = val.detach()
        moved = (new_delta - delta).abs().amax(dim=1)
        two_cycle = (new_delta == prev_delta).all(dim=1)
        active = active & ~(((new_val - prev_val).abs() < q_tol) & (moved < s_tol)) & ~two_cycle
        better = new_val > best_val
        best_val = torch.where(better, new_val, best_val)
        best_delta = torch.where(better[:, None], new_delta, best_delta)
        prev_delta, delta, prev_val = delta, new_delta, new_val
    return obs + best_delta


def critic_attack(obs, eps, policy, q_fn, steps=200, attack_lr=0.2, q_tol=1e-5, s_tol=1e-6):
    """MC / MR attacker (eq. 68): maximise Q(s0, mu(s)) over s in the eps-ball, Q evaluated at the clean s0."""
    eps_col = _eps_column(eps, obs)
    return _pgd(lambda s: q_fn(obs, policy(s)[0]), obs, eps_col, torch.zeros_like(obs), steps, attack_lr,
                q_tol, s_tol)


def gaussian_kl(mean_p, std_p, mean_q, std_q):
    """KL(N(mean_p, std_p) || N(mean_q, std_q)) summed over action dimensions -> (B,)."""
    var_ratio = (std_p / std_q) ** 2
    return 0.5 * (var_ratio + ((mean_q - mean_p) / std_q) ** 2 - 1 - var_ratio.log()).sum(-1)


def mad_attack(obs, eps, policy, steps=200, attack_lr=0.2, generator=None, q_tol=1e-5, s_tol=1e-6):
    """MAD attacker: maximise KL(pi(.|s0) || pi(.|s)); the gradient is 0 at s = s0, so start at random."""
    eps_col = _eps_column(eps, obs)
    with torch.no_grad():
        mean0, std0 = policy(obs)
    start = (torch.rand(obs.shape, generator=generator, dtype=obs.dtype) * 2 - 1).to(obs.device) * eps_col
    return _pgd(lambda s: gaussian_kl(mean0, std0, *policy(s)), obs, eps_col, start, steps, attack_lr,
                q_tol, s_tol)


def uniform_attack(obs, eps, generator=None):
    """Uniform noise in the eps-ball, independent per dimension."""
    eps_col = _eps_column(eps, obs)
    return obs + (torch.rand(obs.shape, generator=generator, dtype=obs.dtype) * 2 - 1).to(obs.device) * eps_col


def corner_attack(obs, eps, generator=None):
    """A random corner of the eps-box, +-eps per dimension by the sign of a uniform draw centred at 0: the largest
    perturbation that does not look at the policy, and what the MAD attack of the authors' SA-PPOL training
    amounts to (docs/sa_ppol.md)."""
    eps_col = _eps_column(eps, obs)
    signs = torch.sign(torch.rand(obs.shape, generator=generator, dtype=obs.dtype) - 0.5).to(obs.device)
    return obs + signs * eps_col


def perturb(attacker, obs, eps, policy, qr=None, qc=None, steps=200, attack_lr=0.2, generator=None):
    """Entry point: perturb a batch of observations with the named attacker (one of ATTACKERS)."""
    if attacker == "none":
        return obs
    if attacker == "mc":
        return critic_attack(obs, eps, policy, qc, steps, attack_lr)
    if attacker == "mr":
        return critic_attack(obs, eps, policy, qr, steps, attack_lr)
    if attacker == "mad":
        return mad_attack(obs, eps, policy, steps, attack_lr, generator)
    if attacker == "uniform":
        return uniform_attack(obs, eps, generator)
    if attacker == "corner":
        return corner_attack(obs, eps, generator)
    raise ValueError(f"unknown attacker {attacker!r}: expected one of {', '.join(ATTACKERS)}")
