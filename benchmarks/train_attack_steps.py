"""How many MC steps the attack inside SAFER's update needs: attack strength against time, per step budget.

Loads a trained cvpo.py or safer.py checkpoint, collects a batch of states by running its policy, and for each
step budget reports the rise of Q_c(s0, mu(nu(s0))) over the clean Q_c(s0, mu(s0)) as a fraction of what
200 steps reach, and the time of one batched attack.

    python benchmarks/train_attack_steps.py --checkpoint runs/<run>/model.pt [--batch-size 128]
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cvpo  # noqa: E402
from attacks import critic_attack  # noqa: E402


@dataclass
class Args:
    checkpoint: str
    """model.pt of cvpo.py or safer.py"""
    batch_size: int = 128
    """states per attack, as N in the update (--batch-size of the off-policy scripts)"""
    budgets: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 200)
    """attack step budgets to compare"""


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.set_num_threads(1)
    ckpt = torch.load(args.checkpoint, weights_only=True)
    actor, qc = cvpo.Actor(ckpt["obs_dim"], ckpt["act_dim"]), cvpo.QNetwork(ckpt["obs_dim"], ckpt["act_dim"])
    actor.load_state_dict(ckpt["actor"])
    qc.load_state_dict(ckpt["qc"])
    eps = ckpt["args"]["eps"]
    env = gym.make(ckpt["env_id"])
    np.random.seed(0)
    obs, _ = env.reset()
    states = []
    while len(states) < args.batch_size * 4:  # a stretch of the policy's own trajectory, every 4th state
        states.append(obs)
        with torch.no_grad():
            obs, _, terminated, truncated, _ = env.step(actor(torch.as_tensor(obs, dtype=torch.float32))[0].numpy())
        if terminated or truncated:
            obs, _ = env.reset()
    s0 = torch.as_tensor(np.array(states[::4]), dtype=torch.float32)
    with torch.no_grad():
        clean = qc(s0, actor(s0)[0]).mean().item()
    rows = []
    for steps in args.budgets:
        start = time.perf_counter()
        adv = critic_attack(s0, eps, actor, qc, steps)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            rows.append((steps, qc(s0, actor(adv)[0]).mean().item() - clean, seconds))
    full = rows[-1][1] if rows[-1][0] == max(args.budgets) else max(r[1] for r in rows)
    print(f"{ckpt['env_id']} {ckpt['algo']} eps {eps}, {len(s0)} states, clean mean Q_c {clean:.3f}")
    for steps, rise, seconds in rows:
        print(f"steps {steps:4d}: mean Q_c rise {rise:7.3f} ({100 * rise / full:5.1f}% of the largest budget), "
              f"{1e3 * seconds:7.1f} ms per batch")
