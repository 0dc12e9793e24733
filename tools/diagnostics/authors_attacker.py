"""How much our MC attacker's strength moves a row against the paper's: a checkpoint evaluated under our MC (200
projected sign steps from the clean state, best iterate kept) and under an attacker built as the authors'
evaluation code describes its maximum-cost attacker (liuzuxin/safe-rl-robustness; facts only): Adam on the
perturbation with lr 0.1, at most 60 iterations a step, stopped once both the objective and the perturbation change
by less than 1e-4, the last iterate kept, and the perturbation and Adam's moments carried from one env step to the
next instead of restarted at the clean state.

Both run through the checkpoint's own script's `evaluate` on the same episodes (same initial states), so only the
attacker differs. Prints reward / cost per attacker: natural, ours (mc) and the warm-started Adam one (mc_adam).

    python -m tools.diagnostics.authors_attacker --checkpoint results/SafetyCarCircle-v0/adv_ppol/seed1/model.pt
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import importlib
import sys
from dataclasses import dataclass

import torch
import tyro

import attacks

SCRIPTS = ("safer", "cvpo", "adv_cvpo", "ppol", "sa_ppol", "adv_ppol")


@dataclass
class Args:
    checkpoint: str
    """model.pt of any of the six scripts"""
    episodes: int = 50
    """evaluation episodes per attacker"""
    lr: float = 0.1
    """Adam's step size on the perturbation (raw observation units)"""
    max_iters: int = 60
    """Adam iterations per env step at most"""
    tol: float = 1e-4
    """stop once the objective and the largest perturbation change both move less than this"""


class WarmAdamAttacker:
    """Maximise Q_c(s0, mu(s0 + delta)) over |delta|_inf <= eps with Adam, one row per env; delta and Adam's moments
    persist across calls, as a single attacker object reused at every step would keep them."""

    def __init__(self, lr, max_iters, tol, betas=(0.9, 0.999), adam_eps=1e-8):
        self.lr, self.max_iters, self.tol, self.betas, self.adam_eps = lr, max_iters, tol, betas, adam_eps
        self.delta = self.m = self.v = self.t = None

    def __call__(self, obs, eps, policy, qc):
        if self.delta is None or self.delta.shape != obs.shape:
            self.delta, self.m, self.v = (torch.zeros_like(obs) for _ in range(3))
            self.t = torch.zeros(obs.shape[0], 1)
        b1, b2 = self.betas
        active = torch.ones(obs.shape[0], dtype=torch.bool)
        prev_loss = torch.zeros(obs.shape[0])  # the authors' loop starts its loss comparison from 0
        for _ in range(self.max_iters):
            delta = self.delta.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = -0.5 * qc(obs, policy(obs + delta)[0])  # their objective: cost weight 0.5, minimised
                (grad,) = torch.autograd.grad(loss.sum(), delta)
            a = active[:, None]
            self.t = torch.where(a, self.t + 1, self.t)
            self.m = torch.where(a, b1 * self.m + (1 - b1) * grad, self.m)
            self.v = torch.where(a, b2 * self.v + (1 - b2) * grad ** 2, self.v)
            m_hat = self.m / (1 - b1 ** self.t)  # t >= 1: every row steps in the first iteration of the first call
            v_hat = self.v / (1 - b2 ** self.t)
            new_delta = (self.delta - self.lr * m_hat / (v_hat.sqrt() + self.adam_eps)).clamp(-eps, eps)
            new_delta = torch.where(a, new_delta, self.delta)
            moved = (new_delta - self.delta).abs().amax(dim=1)
            loss = loss.detach()
            active &= ~(((loss - prev_loss).abs() < self.tol) & (moved < self.tol))
            prev_loss, self.delta = loss, new_delta
            if not active.any():
                break
        return obs + self.delta


def fail(message):
    sys.exit(f"authors_attacker: error: {message}")


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.set_num_threads(1)
    if not os.path.isfile(args.checkpoint):
        fail(f"--checkpoint {args.checkpoint!r} is not a file")
    if args.episodes < 1 or args.max_iters < 1 or args.lr <= 0:
        fail(f"--episodes {args.episodes}, --max-iters {args.max_iters} and --lr {args.lr} must be positive")
    try:
        algo = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["algo"]
    except Exception as exc:  # any unreadable file is the same bad input
        fail(f"--checkpoint {args.checkpoint!r} is not a model.pt of these scripts ({type(exc).__name__})")
    if algo not in SCRIPTS:
        fail(f"--checkpoint {args.checkpoint!r} was written by {algo!r}, not one of {', '.join(SCRIPTS)}")
    script = importlib.import_module(algo)
    run_args = script.Args(eval_checkpoint=args.checkpoint, eval_episodes=args.episodes, device="cpu")
    networks, _ = script.load_checkpoint(run_args)
    results = script.evaluate(networks, run_args, attackers=("none", "mc"))
    warm_adam = WarmAdamAttacker(args.lr, args.max_iters, args.tol)

    def perturb_adam(attacker, obs, eps, policy, qr=None, qc=None, *rest):
        return warm_adam(obs, eps, policy, qc) if attacker == "mc" else attacks.perturb(attacker, obs, eps, policy,
                                                                                        qr, qc, *rest)
    script.perturb = perturb_adam
    results["mc_adam"] = script.evaluate(networks, run_args, attackers=("mc",))["mc"]
    print(f"{run_args.env_id} {algo} seed {run_args.seed}, eps {run_args.eps}, {args.episodes} episodes per attacker")
    for name, r in results.items():
        print(f"{name:8s} reward {r['return_mean']:7.1f} +- {r['return_std']:6.1f}  "
              f"cost {r['cost_mean']:6.2f} +- {r['cost_std']:6.2f}")
