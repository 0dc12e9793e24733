"""What SAFER's adversarial KL bound costs a trained policy: fit a robust copy of it and evaluate both.

Loads a cvpo.py or safer.py checkpoint and runs safer.py's robust M-step (eq. 62: MLE on benign and MC-attacked
states plus the bound KL(pi(s) || pi(nu(s))) <= xi_adv) with the checkpoint's own action distribution as the
target instead of an E-step, eps ramped from 0 to eps. What comes out is close to the most faithful copy of the
policy that meets xi_adv at eps: how far its actions had to move, and its reward and cost with and without the
MC attack beside the original's, tell whether a good policy exists inside the bound for this env and eps.
Writes a JSON record (atomically) and prints a line per report.

    python -m tools.diagnostics.robust_fit --checkpoint runs/<run>/model.pt [--xi-adv 0.012] [--updates 1500]
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import copy
from dataclasses import dataclass, replace
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import tyro

import safer
from attacks import critic_attack, gaussian_kl


@dataclass
class Args:
    checkpoint: str
    """model.pt of cvpo.py or safer.py (the off-policy scripts share the actor and critic shapes)"""
    xi_adv: Optional[float] = None
    """bound on KL(pi(s) || pi(nu(s))) (default: safer.py's Table 4 preset for the checkpoint's env)"""
    eps: Optional[float] = None
    """attack budget (default: the eps the checkpoint was trained with)"""
    updates: int = 1500
    """robust M-step updates (each of safer.py's --mstep-iters gradient steps)"""
    ramp_updates: int = 750
    """updates over which eps grows linearly from 0 to eps, as eq. (67) does over epochs"""
    report_every: int = 250
    """updates between report lines"""
    num_states: int = 6000
    """states collected by running the checkpoint's stochastic policy (10 envs)"""
    eval_episodes: int = 10
    """evaluation episodes per attacker, for the original and the fitted policy"""
    attack_steps: int = 50
    """MC steps at evaluation (training scripts use 200)"""
    seed: int = 0
    """seed of torch, numpy and the envs"""
    output: Optional[str] = None
    """JSON record (default: robust_fit.json beside the checkpoint)"""


def fail(message):
    raise SystemExit(f"robust_fit.py: error: {message}")


def load(args):
    if not os.path.isfile(args.checkpoint):
        fail(f"checkpoint {args.checkpoint!r} does not exist")
    try:
        ckpt = torch.load(args.checkpoint, weights_only=True)
    except Exception as exc:  # any unreadable file is the same bad input to the user
        fail(f"checkpoint {args.checkpoint!r} is not a readable torch checkpoint ({type(exc).__name__})")
    if not isinstance(ckpt, dict) or ckpt.get("algo") not in ("cvpo", "safer"):
        fail(f"checkpoint {args.checkpoint!r} is not a cvpo.py or safer.py checkpoint")
    obs_dim, act_dim = ckpt["obs_dim"], ckpt["act_dim"]
    actor = safer.Actor(obs_dim, act_dim)
    actor.load_state_dict(ckpt["actor"])
    critics = [safer.QNetwork(obs_dim, act_dim) for _ in range(3)]
    for name, critic in zip(("qr1", "qr2", "qc"), critics):
        critic.load_state_dict(ckpt[name])
        critic.requires_grad_(False)
    return ckpt, actor, critics


def collect_states(actor, env_id, num_states, seed):
    envs = gym.vector.SyncVectorEnv([safer.make_env(env_id) for _ in range(10)])
    np.random.seed(seed)
    obs, _ = envs.reset(seed=[seed + i for i in range(10)])
    states = []
    for _ in range(-(-num_states // 10)):
        states.append(obs)
        with torch.no_grad():
            mean, std = actor(torch.as_tensor(obs, dtype=torch.float32))
            obs, *_ = envs.step((mean + std * torch.randn_like(mean)).clamp(-1, 1).numpy())
    envs.close()
    return torch.as_tensor(np.concatenate(states)[:num_states], dtype=torch.float32)


def measure(actor, original, qc, probe, eps):
    """KL(pi(s) || pi(nu(s))) (decoupled mean part) and action shift under a 10-step MC attack at full eps, and
    the mean action's distance from the original policy on clean states."""
    obs_adv = critic_attack(probe, eps, actor, qc, 10, 0.2)
    with torch.no_grad():
        mean, std = actor(probe)
        mean_adv, _ = actor(obs_adv)
        return dict(kl_adv=gaussian_kl(mean, std, mean_adv, std).mean().item(),
                    action_shift=(mean_adv - mean).abs().mean().item(),
                    moved_from_original=(mean - original(probe)[0]).abs().mean().item(), std=std.mean().item())


def eval_both(original, actor, critics, fit_args, args):
    eval_args = replace(fit_args, eval_episodes=args.eval_episodes, eval_attackers=("none", "mc"),
                        attack_steps=args.attack_steps)
    out = {}
    for name, policy in (("original", original), ("fitted", actor)):
        results = safer.evaluate(dict(zip(("qr1", "qr2", "qc"), critics), actor=policy), eval_args)
        out[name] = {k: dict(return_mean=r["return_mean"], cost_mean=r["cost_mean"]) for k, r in results.items()}
        print(name, "  ".join(f"{k}: return {r['return_mean']:.1f} cost {r['cost_mean']:.2f}"
                              for k, r in out[name].items()), flush=True)
    return out


def main(args):
    for name in ("updates", "ramp_updates", "report_every", "num_states", "eval_episodes", "attack_steps"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    ckpt, actor, critics = load(args)
    fit_args = safer.Args(env_id=ckpt["env_id"], seed=args.seed, eps=args.eps if args.eps is not None
                          else ckpt["args"]["eps"], xi_adv=args.xi_adv)
    safer.resolve_args(fit_args)
    out_path = args.output or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "robust_fit.json")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out_path))):
        fail(f"--output {out_path!r}: its folder does not exist")
    torch.manual_seed(args.seed)
    states = collect_states(actor, ckpt["env_id"], args.num_states, args.seed)
    probe = states[torch.randperm(len(states))[:1024]]
    original, target_actor = copy.deepcopy(actor), copy.deepcopy(actor)
    original.requires_grad_(False)
    target_actor.requires_grad_(False)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=fit_args.actor_lr, fused=True)
    duals = safer.MStepDuals()
    rng = np.random.default_rng(args.seed)
    reports = []

    def report(**fields):
        reports.append(fields)
        print("  ".join(f"{k} {v:.4g}" for k, v in fields.items()), flush=True)

    report(update=0, eps_t=0.0, **measure(actor, original, critics[2], probe, fit_args.eps), beta_adv=duals.beta_adv)
    for update in range(1, args.updates + 1):
        eps_t = fit_args.eps * min(1.0, update / args.ramp_updates)
        obs = states[rng.integers(0, len(states), fit_args.batch_size)]
        with torch.no_grad():  # the target: the original policy's own particles, equally weighted
            mean, std = original(obs)
            particles = mean.unsqueeze(1) + std.unsqueeze(1) * torch.randn(len(obs), fit_args.num_particles,
                                                                           mean.shape[-1])
        weights = torch.full(particles.shape[:2], 1.0 / fit_args.num_particles)
        obs_adv = critic_attack(obs, eps_t, actor, critics[2], fit_args.train_attack_steps, fit_args.attack_lr)
        safer.robust_m_step(actor, target_actor, actor_opt, obs, obs_adv, particles, weights, duals, fit_args)
        target_actor.load_state_dict(actor.state_dict())
        if update % args.report_every == 0 or update == args.updates:
            report(update=update, eps_t=eps_t, **measure(actor, original, critics[2], probe, fit_args.eps),
                   beta_adv=duals.beta_adv)
    record = dict(checkpoint=os.path.abspath(args.checkpoint), env_id=ckpt["env_id"], eps=fit_args.eps,
                  xi_adv=fit_args.xi_adv, updates=args.updates, reports=reports,
                  evaluation=eval_both(original, actor, critics, fit_args, args))
    safer.write_json(out_path, record)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(tyro.cli(Args))
