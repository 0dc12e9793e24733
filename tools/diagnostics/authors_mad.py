"""What SA-PPOL's regulariser sees: our training MAD attacker against the one in the authors' robustness code.

Their SA-PPOL (liuzuxin/safe-rl-robustness, mode "kl") perturbs each rollout's states with a preconditioned
stochastic-gradient Langevin optimiser (pysgmcmc's SGLD: RMSprop preconditioner started at 1 and decayed by 0.95,
no burn-in, so Langevin noise from the first step), lr 0.1, 60 iterations, on the batch-mean
KL(pi(s) || pi(s + delta)), clipped to the eps box, the perturbation kept from one call to the next. The noise of a
step, sqrt(lr / sqrt(v)) with v the preconditioner's running mean of squared gradients, is at least 0.3, six
times eps = 0.05, while the drift, the gradient of a mean over the batch, is of order 1e-5: the result is a
random corner of the box, not an adversarial one. This measures it on a checkpoint's own states, beside our MAD
(10 steps as in sa_ppol.py's training and 200 as at evaluation), random corners and uniform noise:
KL(pi(s) || pi(s + delta)), the squared action shift ||mu(s) - mu(s + delta)||^2 that the regulariser penalises,
and the share of coordinates at the box's edge.

    python -m tools.diagnostics.authors_mad --checkpoint results/SafetyCarCircle-v0/sa_ppol/seed1/model.pt
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys
from dataclasses import dataclass
from typing import Optional

import torch
import tyro

from attacks import corner_attack, gaussian_kl, mad_attack, uniform_attack
from tools.diagnostics.train_attack_steps import load_actor_qc, own_states


@dataclass
class Args:
    checkpoint: str
    """model.pt of any of the six scripts (its actor is attacked)"""
    num_states: int = 1024
    """states of the policy's own episodes to attack"""
    calls: int = 20
    """calls of the Langevin attacker on the same states (its perturbation and preconditioner carry over, as
    from one epoch to the next in the authors' code)"""
    eps: Optional[float] = None
    """attack budget (default: the eps the checkpoint was trained with)"""
    seed: int = 0
    """torch seed of the random starts and the Langevin noise"""


class LangevinMAD:
    """The authors' training MAD: preconditioned SGLD ascent of the batch-mean KL, state kept across calls."""

    def __init__(self, lr=0.1, iterations=60, decay=0.95, bias=1e-8):
        self.lr, self.iterations, self.decay, self.bias = lr, iterations, decay, bias
        self.delta = self.v = None

    def __call__(self, obs, eps, policy):
        if self.delta is None or self.delta.shape != obs.shape:  # a new batch size starts afresh, as theirs
            self.delta, self.v = torch.zeros_like(obs), torch.ones_like(obs)
        with torch.no_grad():
            mean0, std0 = policy(obs)
        for _ in range(self.iterations):
            delta = self.delta.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = -gaussian_kl(mean0, std0, *policy(obs + delta)).mean()
                (grad,) = torch.autograd.grad(loss, delta)
            self.v = self.v + (1 - self.decay) * (grad ** 2 - self.v)
            precond = (self.v + self.bias).rsqrt()
            noise = torch.randn_like(grad) * (precond / self.lr).sqrt()
            self.delta = (self.delta - self.lr * (0.5 * precond * grad + noise)).clamp(-eps, eps)
        return obs + self.delta


def shift_stats(policy, obs, obs_adv, eps):
    """Mean KL(pi(s) || pi(s_adv)), mean ||mu(s) - mu(s_adv)||^2 and the share of coordinates at the box's edge."""
    with torch.no_grad():
        (mean0, std0), (mean, std) = policy(obs), policy(obs_adv)
        return dict(kl=gaussian_kl(mean0, std0, mean, std).mean().item(),
                    sq_shift=((mean - mean0) ** 2).sum(-1).mean().item(),
                    edge=((obs_adv - obs).abs() > 0.99 * eps).float().mean().item())


def fail(message):
    sys.exit(f"authors_mad: error: {message}")


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.set_num_threads(1)
    if not os.path.isfile(args.checkpoint):
        fail(f"--checkpoint {args.checkpoint!r} is not a file")
    if args.num_states < 1 or args.calls < 1:
        fail(f"--num-states {args.num_states} and --calls {args.calls} must be positive")
    try:
        actor, _, ckpt = load_actor_qc(args.checkpoint)
    except Exception as exc:  # any unreadable or foreign file is the same bad input
        fail(f"--checkpoint {args.checkpoint!r} is not a model.pt of these scripts ({type(exc).__name__}: {exc})")
    eps = ckpt["args"]["eps"] if args.eps is None else args.eps
    obs = own_states(ckpt["env_id"], actor, args.num_states)
    torch.manual_seed(args.seed)
    langevin = LangevinMAD()
    rows = {"ours, MAD 10 steps (training)": mad_attack(obs, eps, actor, steps=10),
            "ours, MAD 200 steps (evaluation)": mad_attack(obs, eps, actor, steps=200),
            "authors', SGLD, first call": langevin(obs, eps, actor)}
    for _ in range(args.calls - 1):
        last = langevin(obs, eps, actor)
    if args.calls > 1:
        rows[f"authors', SGLD, call {args.calls}"] = last
    rows["random corners"] = corner_attack(obs, eps)
    rows["uniform in the box"] = uniform_attack(obs, eps)
    print(f"{ckpt['env_id']} {ckpt['algo']} seed {ckpt['args'].get('seed')}, eps {eps}, {len(obs)} states")
    for name, obs_adv in rows.items():
        r = shift_stats(actor, obs, obs_adv, eps)
        print(f"{name:34s} KL {r['kl']:.5f}  ||mu shift||^2 {r['sq_shift']:.5f}  at the box's edge {r['edge']:.2f}")
