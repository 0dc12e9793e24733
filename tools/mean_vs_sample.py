"""The deterministic policy against the stochastic one that trained: reward and cost of a checkpoint's mean action
and of actions sampled from its Gaussian, on the same initial states, without attack.

The scripts evaluate the mean action (spec section 7), while the cost critic and the E-step's cost constraint
score the stochastic policy that collected the data. When the two differ in cost, a policy can meet the cost
limit in its training episodes and break it in evaluation. Works on a checkpoint of cvpo.py, safer.py or
adv_cvpo.py (they share the actor). Writes a JSON record (atomically) and prints a line per mode.

    python tools/mean_vs_sample.py --checkpoint runs/<run>/model.pt [--episodes 20]
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cvpo  # noqa: E402

OFF_POLICY = ("cvpo", "safer", "adv_cvpo")


@dataclass
class Args:
    checkpoint: str
    """model.pt of cvpo.py, safer.py or adv_cvpo.py"""
    episodes: int = 20
    """episodes per mode, all run at once in a vector env"""
    output: Optional[str] = None
    """JSON record (default: mean_vs_sample.json beside the checkpoint)"""


def fail(message):
    raise SystemExit(f"mean_vs_sample.py: error: {message}")


def load_actor(path):
    if not os.path.isfile(path):
        fail(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, weights_only=True)
    except Exception as exc:  # any unreadable file is the same bad input to the user
        fail(f"checkpoint {path!r} is not a readable torch checkpoint ({type(exc).__name__})")
    if not isinstance(ckpt, dict) or ckpt.get("algo") not in OFF_POLICY:
        fail(f"checkpoint {path!r} is not a checkpoint of {', '.join(a + '.py' for a in OFF_POLICY)}")
    actor = cvpo.Actor(ckpt["obs_dim"], ckpt["act_dim"])
    actor.load_state_dict(ckpt["actor"])
    return ckpt, actor


def run_episodes(actor, env_id, seed, episodes, sample, cost_limit):
    """Same initial states as the scripts' evaluate() for this seed; sampled actions are clipped to the box, as
    the behaviour policy's are."""
    envs = gym.vector.SyncVectorEnv([cvpo.make_env(env_id) for _ in range(episodes)])
    np.random.seed(10_000 + seed * 1000)  # bullet-safety-gym draws initial states from the global numpy RNG
    obs, _ = envs.reset(seed=[10_000 + seed * 1000 + i for i in range(episodes)])
    generator = torch.Generator().manual_seed(seed)
    ep_ret, ep_cost, done = np.zeros(episodes), np.zeros(episodes), np.zeros(episodes, bool)
    while not done.all():
        with torch.no_grad():
            mean, std = actor(torch.as_tensor(obs, dtype=torch.float32))
            act = (mean + std * torch.randn(mean.shape, generator=generator)).clamp(-1, 1) if sample else mean
        obs, rew, terminated, truncated, infos = envs.step(act.numpy())
        live = ~done
        ep_ret[live] += rew[live]
        ep_cost[live] += cvpo.step_costs(infos, episodes)[live]
        done |= terminated | truncated
    envs.close()
    return dict(return_mean=float(ep_ret.mean()), return_std=float(ep_ret.std()), cost_mean=float(ep_cost.mean()),
                cost_std=float(ep_cost.std()), episodes_over_limit=int((ep_cost > cost_limit).sum()),
                episodes=episodes)


def main(args):
    if args.episodes <= 0:
        fail(f"--episodes must be a positive integer, got {args.episodes}")
    ckpt, actor = load_actor(args.checkpoint)
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "mean_vs_sample.json")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        fail(f"--output {out!r}: its folder does not exist")
    torch.set_num_threads(1)
    seed, cost_limit = ckpt["args"]["seed"], ckpt["args"]["cost_limit"]
    record = dict(checkpoint=args.checkpoint, algo=ckpt["algo"], env_id=ckpt["env_id"], seed=seed,
                  global_step=ckpt["global_step"], cost_limit=cost_limit)
    for mode in ("mean", "sample"):
        r = record[mode] = run_episodes(actor, ckpt["env_id"], seed, args.episodes, mode == "sample", cost_limit)
        print(f"{mode:6s} return {r['return_mean']:7.1f} +- {r['return_std']:5.1f}  cost {r['cost_mean']:6.2f} +- "
              f"{r['cost_std']:5.2f}  episodes over the limit: {r['episodes_over_limit']}/{r['episodes']}", flush=True)
    cvpo.write_json(out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
