"""How many MC steps a training attack needs (SAFER's inside the update, ADV-PPOL's on the rollouts): attack
strength against time, per step budget.

Loads a trained checkpoint of any of the scripts, collects a batch of states by running its policy, and for each
step budget reports the rise of Q_c(s0, mu(nu(s0))) over the clean Q_c(s0, mu(s0)) as a fraction of what
200 steps reach, the time of one batched attack, and what SAFER's adversarial KL term (eq. 8, decoupled mean
part) would see: KL(pi(s0) || pi(nu(s0))) and the mean action shift. Last, the policy mean's sensitivity to
each observation dimension, mean |d mu / d s_j|, beside that dimension's spread over the collected states.

    python -m tools.diagnostics.train_attack_steps --checkpoint runs/<run>/model.pt [--batch-size 128] [--eps 0.005]
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import importlib
import time
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import tyro

from attacks import critic_attack, gaussian_kl


@dataclass
class Args:
    checkpoint: str
    """model.pt of any of the six scripts (its actor and cost critic are attacked)"""
    batch_size: int = 128
    """states per attack, as N in the update (--batch-size of the off-policy scripts)"""
    budgets: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 200)
    """attack step budgets to compare"""
    eps: Optional[float] = None
    """attack budget (default: the eps the checkpoint was trained with)"""


def load_actor_qc(path):
    """The actor and cost critic of any script's model.pt, and the checkpoint's metadata."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    script = importlib.import_module(ckpt["algo"])  # the script that wrote it builds its networks
    if hasattr(script, "build_networks"):  # the on-policy family
        networks = script.build_networks(ckpt["obs_dim"], ckpt["act_dim"])
        actor, qc = networks["actor"], networks["qc"]
    else:
        actor, qc = script.Actor(ckpt["obs_dim"], ckpt["act_dim"]), script.QNetwork(ckpt["obs_dim"], ckpt["act_dim"])
    actor.load_state_dict(ckpt["actor"])
    qc.load_state_dict(ckpt["qc"])
    return actor, qc, ckpt


def own_states(env_id, actor, n):
    """n states of the deterministic policy's own trajectory, every 4th one (episodes restart as they end)."""
    env = gym.make(env_id)
    np.random.seed(0)
    obs, _ = env.reset()
    states = []
    while len(states) < n * 4:
        states.append(obs)
        with torch.no_grad():
            obs, _, terminated, truncated, _ = env.step(actor(torch.as_tensor(obs, dtype=torch.float32))[0].numpy())
        if terminated or truncated:
            obs, _ = env.reset()
    return torch.as_tensor(np.array(states[::4]), dtype=torch.float32)


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.set_num_threads(1)
    actor, qc, ckpt = load_actor_qc(args.checkpoint)
    eps = ckpt["args"]["eps"] if args.eps is None else args.eps
    s0 = own_states(ckpt["env_id"], actor, args.batch_size)
    s_grad = s0.clone().requires_grad_(True)  # one forward pass serves the attacks and the sensitivity below
    mean_grad, std = actor(s_grad)
    mean, std = mean_grad.detach(), std.detach()
    with torch.no_grad():
        clean = qc(s0, mean).mean().item()
    rows = []
    for steps in args.budgets:
        start = time.perf_counter()
        adv = critic_attack(s0, eps, actor, qc, steps)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            mean_adv = actor(adv)[0]
            rows.append((steps, qc(s0, mean_adv).mean().item() - clean, seconds,
                         gaussian_kl(mean, std, mean_adv, std).mean().item(), (mean_adv - mean).abs().mean().item()))
    full = rows[-1][1] if rows[-1][0] == max(args.budgets) else max(r[1] for r in rows)
    print(f"{ckpt['env_id']} {ckpt['algo']} eps {eps}, {len(s0)} states, clean mean Q_c {clean:.3f}")
    for steps, rise, seconds, kl_adv, shift in rows:
        print(f"steps {steps:4d}: mean Q_c rise {rise:7.3f} ({100 * rise / full:5.1f}% of the largest budget), "
              f"{1e3 * seconds:7.1f} ms per batch, KL(pi(s)||pi(nu(s))) mean part {kl_adv:8.4f}, "
              f"mean |action shift| {shift:.4f}")
    for a in range(mean_grad.shape[1]):
        (grad,) = torch.autograd.grad(mean_grad[:, a].sum(), s_grad, retain_graph=True)
        print(f"action {a}: mean |d mu / d s_j| {np.round(grad.abs().mean(0).numpy(), 2)}")
    print(f"spread (std) of each s_j over these states {np.round(s0.std(0).numpy(), 3)}")
