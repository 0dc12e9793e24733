"""Where the M-step's std fit comes from: particles inside the action box or beyond it.

The behaviour policy's actions are clamped to [-1, 1], and the E-step scores each particle at its clamped action,
but the M-step fits the policy's Gaussian to the unclamped particles. Every particle beyond a bound ties at the
bound's Q value, so where the E-step's weights favour a bound, the tail beyond it keeps its weight however far out
it lies. This measures, on a checkpoint's own states, how much of the std the M-step fits comes from that tail.

For each state of a few stochastic training-like episodes (clamped samples, no attack), the E-step of the
checkpoint's script runs with the checkpoint's policy as pi_old and its critics (batches of --batch-size states,
the dual solved per batch as in training). Per action dimension it prints: the policy's std; the share of
particles beyond the box, unweighted and weighted; the std the M-step's std term fits (per state,
sqrt(sum_k q_k (a_k - mean)^2), the optimum of the decoupled std likelihood at the old mean) as a ratio to the
current std, and the share of that fitted variance that comes from particles beyond the box; and the same ratio
had the particles been clamped to the box first. A ratio above 1 means the fit widens the policy at every update.
Works on checkpoints of cvpo.py, safer.py and adv_cvpo.py. Writes a JSON record (atomically).

    python -m tools.diagnostics.box_fit --checkpoints results/SafetyCarCircle-v0/safer/seed1/model.pt \
        results/SafetyCarCircle-v0/cvpo/seed1/model.pt
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import importlib
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch
import tyro

OFF_POLICY = ("cvpo", "safer", "adv_cvpo")


@dataclass
class Args:
    checkpoints: tuple[str, ...]
    """model.pt files of cvpo.py, safer.py or adv_cvpo.py"""
    episodes: int = 4
    """stochastic episodes per checkpoint whose states are measured"""
    states: int = 2048
    """states drawn from those episodes"""
    batch_size: int = 128
    """states per E-step (the scripts' --batch-size)"""
    seed: int = 0
    """seed of the episodes, the state draw and the particles"""
    output: Optional[str] = None
    """JSON record of every checkpoint's numbers (default: none written)"""


def fail(message):
    raise SystemExit(f"box_fit.py: error: {message}")


def load(path):
    if not os.path.isfile(path):
        fail(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the same bad input to the user
        fail(f"checkpoint {path!r} is not a readable torch checkpoint ({type(exc).__name__})")
    if not isinstance(ckpt, dict) or ckpt.get("algo") not in OFF_POLICY:
        fail(f"checkpoint {path!r} is not a checkpoint of {', '.join(a + '.py' for a in OFF_POLICY)}")
    script = importlib.import_module(ckpt["algo"])
    # the script's own loader checks the checkpoint (keys, checksum, finite weights, shapes) and builds the networks;
    # the run's arguments (particles, lam cap, cost limit) come from the checkpoint itself
    networks, _ = script.load_checkpoint(script.Args(eval_checkpoint=path, device="cpu"))
    return ckpt, script, networks["actor"], (networks["qr1"], networks["qr2"], networks["qc"])


def collect_states(script, env_id, actor, episodes, seed):
    """States of stochastic episodes with clamped actions, as the behaviour policy collects them."""
    env = script.make_env(env_id)()
    np.random.seed(seed)
    states = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            states.append(obs)
            with torch.no_grad():
                mean, std = actor(torch.as_tensor(obs, dtype=torch.float32))
                act = (mean + std * torch.randn_like(mean)).clamp(-1, 1).numpy()
            obs, _, terminated, truncated, _ = env.step(act)
            done = terminated or truncated
    env.close()
    return np.array(states, np.float32)


def measure(path, args):
    ckpt, script, actor, (qr1, qr2, qc) = load(path)
    run = ckpt["args"]
    torch.manual_seed(args.seed)
    states = collect_states(script, ckpt["env_id"], actor, args.episodes, args.seed)
    rng = np.random.default_rng(args.seed)
    states = torch.as_tensor(states[rng.choice(len(states), min(args.states, len(states)), replace=False)])
    horizon = script.make_env(ckpt["env_id"])().spec.max_episode_steps
    qc_threshold = script.qc_threshold_for(run["cost_limit"], run["gamma"], horizon)
    sums = dict(std=0.0, beyond=0.0, beyond_weight=0.0, fit_ratio=0.0, tail_share_num=0.0, fit_var=0.0,
                clamped_ratio=0.0)
    x0, n = np.array([1.0, 1.0]), 0
    for first in range(0, len(states), args.batch_size):
        obs = states[first:first + args.batch_size]
        particles, weights, eta, lam = script.e_step(obs, actor, (qr1, qr2, qc), x0, qc_threshold,
                                                     SimpleNamespace(**run))
        x0 = np.array([eta, lam])
        with torch.no_grad():
            old_mean, old_std = actor(obs)
        w = weights.unsqueeze(-1)  # (N, K, 1)
        beyond = (particles.abs() > 1).float()  # (N, K, A)
        sq = (particles - old_mean.unsqueeze(1)) ** 2
        fit_var = (w * sq).sum(1)  # (N, A): the std term's optimum at the old mean
        tail_var = (w * sq * beyond).sum(1)
        clamped_var = (w * (particles.clamp(-1, 1) - old_mean.unsqueeze(1)) ** 2).sum(1)
        sums["std"] += old_std.sum(0)
        sums["beyond"] += beyond.mean(1).sum(0)
        sums["beyond_weight"] += (w * beyond).sum(1).sum(0)
        sums["fit_ratio"] += (fit_var.sqrt() / old_std).sum(0)
        sums["tail_share_num"] += tail_var.sum(0)
        sums["fit_var"] += fit_var.sum(0)
        sums["clamped_ratio"] += (clamped_var.sqrt() / old_std).sum(0)
        n += len(obs)
    out = dict(checkpoint=path, algo=ckpt["algo"], env_id=ckpt["env_id"], global_step=ckpt["global_step"],
               states=n)
    for key in ("std", "beyond", "beyond_weight", "fit_ratio", "clamped_ratio"):
        out[key] = (sums[key] / n).tolist()
    out["tail_share"] = (sums["tail_share_num"] / sums["fit_var"]).tolist()
    return out


def main(args):
    if not args.checkpoints:
        fail("--checkpoints needs at least one model.pt")
    for name in ("episodes", "states", "batch_size"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        fail(f"--output {args.output!r}: its folder does not exist")
    records = []
    print("per action dimension: policy std | particles beyond the box, unweighted / weighted | fitted std / "
          "current std (share of the fitted variance from beyond the box) | the same with clamped particles")
    for path in args.checkpoints:
        r = measure(path, args)
        records.append(r)
        cells = " ; ".join(f"std {s:.2f} | beyond {b:.0%} / {bw:.0%} | fit {f:.2f}x ({t:.0%}) | clamped {c:.2f}x"
                           for s, b, bw, f, t, c in zip(r["std"], r["beyond"], r["beyond_weight"], r["fit_ratio"],
                                                        r["tail_share"], r["clamped_ratio"]))
        print(f"{path} ({r['algo']}, step {r['global_step']:,}): {cells}", flush=True)
    if args.output:
        tmp = f"{args.output}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(records, f, indent=1)
        os.replace(tmp, args.output)


if __name__ == "__main__":
    main(tyro.cli(Args))
