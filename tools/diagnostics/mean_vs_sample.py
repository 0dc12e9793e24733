"""The deterministic policy against the stochastic one that trained: reward and cost of a checkpoint's mean action
and of actions sampled from its Gaussian, on the same initial states, without attack.

The scripts evaluate the mean action (docs/conventions.md), while the cost critic and the E-step's cost constraint
score the stochastic policy that collected the data. When the two differ in cost, a policy can meet the cost
limit in its training episodes and break it in evaluation. Each mode also records the actions the env executed
(mean and mean absolute value per action dimension): samples beyond the box are clipped, so near the bounds a wide
Gaussian executes milder actions than its mean. Works on a checkpoint of cvpo.py, safer.py or adv_cvpo.py (they
share the actor). Writes a JSON record (atomically) and prints a line per mode.

    python -m tools.diagnostics.mean_vs_sample --checkpoint runs/<run>/model.pt [--episodes 20]
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import tyro

import cvpo

OFF_POLICY = ("cvpo", "safer", "adv_cvpo")


@dataclass
class Args:
    checkpoint: str
    """model.pt of cvpo.py, safer.py or adv_cvpo.py"""
    episodes: int = 20
    """episodes per mode (the scripts' --eval-episodes: up to 20 envs at once)"""
    output: Optional[str] = None
    """JSON record (default: mean_vs_sample.json beside the checkpoint)"""


def fail(message):
    raise SystemExit(f"mean_vs_sample.py: error: {message}")


def load_networks(path):
    if not os.path.isfile(path):
        fail(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, weights_only=True)
    except Exception as exc:  # any unreadable file is the same bad input to the user
        fail(f"checkpoint {path!r} is not a readable torch checkpoint ({type(exc).__name__})")
    if not isinstance(ckpt, dict) or ckpt.get("algo") not in OFF_POLICY:
        fail(f"checkpoint {path!r} is not a checkpoint of {', '.join(a + '.py' for a in OFF_POLICY)}")
    obs_dim, act_dim = ckpt["obs_dim"], ckpt["act_dim"]
    actor = cvpo.Actor(obs_dim, act_dim)
    actor.load_state_dict(ckpt["actor"])
    critics = [cvpo.QNetwork(obs_dim, act_dim) for _ in range(3)]
    for name, critic in zip(("qr1", "qr2", "qc"), critics):
        critic.load_state_dict(ckpt[name])
    return ckpt, actor, critics


class SampledActor(torch.nn.Module):
    """The actor with a sample in place of its mean, clipped to the box as the behaviour policy's actions are:
    the scripts' evaluate() acts with whatever comes first."""

    def __init__(self, actor, seed):
        super().__init__()
        self.actor, self.generator = actor, torch.Generator().manual_seed(seed)

    def forward(self, obs):
        mean, std = self.actor(obs)
        return (mean + std * torch.randn(mean.shape, generator=self.generator)).clamp(-1, 1), std


class ActionRecorder(torch.nn.Module):
    """Passes a policy through and keeps each action it returns, clipped to the box as the env applies it."""

    def __init__(self, policy):
        super().__init__()
        self.policy, self.actions = policy, []

    def forward(self, obs):
        act, std = self.policy(obs)
        self.actions.append(act.detach().clamp(-1, 1))
        return act, std


def summary(result, cost_limit, actions):
    """The scripts' unattacked evaluation record, with the episodes over the cost limit counted and the executed
    actions per dimension."""
    actions = torch.cat(actions)
    return dict(return_mean=result["return_mean"], return_std=result["return_std"], cost_mean=result["cost_mean"],
                cost_std=result["cost_std"], episodes_over_limit=int((np.array(result["costs"]) > cost_limit).sum()),
                episodes=result["episodes"], action_mean=actions.mean(0).tolist(),
                action_abs_mean=actions.abs().mean(0).tolist())


def main(args):
    if args.episodes <= 0:
        fail(f"--episodes must be a positive integer, got {args.episodes}")
    ckpt, actor, critics = load_networks(args.checkpoint)
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "mean_vs_sample.json")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        fail(f"--output {out!r}: its folder does not exist")
    torch.set_num_threads(1)
    seed, cost_limit = ckpt["args"]["seed"], ckpt["args"]["cost_limit"]
    record = dict(checkpoint=args.checkpoint, algo=ckpt["algo"], env_id=ckpt["env_id"], seed=seed,
                  global_step=ckpt["global_step"], cost_limit=cost_limit)
    eval_args = cvpo.resolve_args(cvpo.Args(env_id=ckpt["env_id"], seed=seed, eps=ckpt["args"]["eps"],
                                            eval_episodes=args.episodes, eval_attackers=("none",)))
    for mode, policy in (("mean", actor), ("sample", SampledActor(actor, seed))):
        recorder = ActionRecorder(policy)
        networks = dict(zip(("qr1", "qr2", "qc"), critics), actor=recorder)
        r = record[mode] = summary(cvpo.evaluate(networks, eval_args)["none"], cost_limit, recorder.actions)
        print(f"{mode:6s} return {r['return_mean']:7.1f} +- {r['return_std']:5.1f}  cost {r['cost_mean']:6.2f} +- "
              f"{r['cost_std']:5.2f}  episodes over the limit: {r['episodes_over_limit']}/{r['episodes']}  "
              f"executed action mean {np.round(r['action_mean'], 3).tolist()} "
              f"|action| {np.round(r['action_abs_mean'], 3).tolist()}", flush=True)
    cvpo.write_json(out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
