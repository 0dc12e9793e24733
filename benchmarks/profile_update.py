"""Where the milliseconds go: torch.profiler over one CVPO update, one SAFER update and one evaluation step under
the MC attacker (200 steps, 16 envs), at the env's presets on one replay batch.

For each, the wall time per call of its parts (critics, E-step particle evaluation, dual solve, SAFER's attack,
M-step), then the operators that take the most time, grouped by name. Matrix products (aten::mm, aten::addmm)
dominating means the work is compute-bound (precision is the lever); many small ops means overhead.

    python benchmarks/profile_update.py [--env-id SafetyCarCircle-v0] [--repeats 10] [--rows 12]
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses
import sys
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import tyro
from torch.profiler import ProfilerActivity, profile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cvpo  # noqa: E402
import safer  # noqa: E402
from attacks import critic_attack  # noqa: E402
from speed import timed  # noqa: E402  (benchmarks/speed.py, beside this script)


@dataclass
class Args:
    env_id: str = "SafetyCarCircle-v0"
    """env whose presets (particles, M-step iterations, eps) are profiled"""
    repeats: int = 10
    """calls timed per part (after one warm-up call)"""
    rows: int = 12
    """operators listed per profile"""
    configs: tuple[str, ...] = ("32x15", "32x5", "16x5")
    """particles x M-step iterations whose whole CVPO and SAFER updates are timed against the first"""


def setup(env_id):
    """Networks, optimisers and one batch at the env's presets, as the scripts build them."""
    torch.manual_seed(0)
    args = safer.resolve_args(safer.Args(env_id=env_id))
    cvpo_args = cvpo.resolve_args(cvpo.Args(env_id=env_id))
    env = gym.make(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    actor, target_actor = cvpo.Actor(obs_dim, act_dim), cvpo.Actor(obs_dim, act_dim)
    critics = [cvpo.QNetwork(obs_dim, act_dim) for _ in range(3)]
    targets = [cvpo.QNetwork(obs_dim, act_dim) for _ in range(3)]
    critic_opt = torch.optim.Adam([p for c in critics for p in c.parameters()], lr=1e-3, fused=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr, fused=True)
    n = args.batch_size
    batch = [torch.randn(n, obs_dim), torch.rand(n, act_dim) * 2 - 1, torch.randn(n), torch.rand(n),
             torch.randn(n, obs_dim), torch.zeros(n)]
    return args, cvpo_args, actor, target_actor, critics, targets, critic_opt, actor_opt, batch, obs_dim, act_dim


def parts(env_id):
    """name -> callable, for each part of a CVPO and a SAFER update."""
    args, cvpo_args, actor, target_actor, critics, targets, critic_opt, actor_opt, batch, _, _ = setup(env_id)
    obs = batch[0]
    x0 = np.array([1.0, 1.0])
    particles, weights, _, _ = cvpo.e_step(obs, target_actor, targets, x0, 1.5, args)
    n, k = particles.shape[:2]
    flat_obs = obs.unsqueeze(1).expand(-1, k, -1).reshape(n * k, -1)
    flat_act = particles.reshape(n * k, -1).clamp(-1, 1)
    with torch.no_grad():
        qr = torch.min(targets[0](flat_obs, flat_act), targets[1](flat_obs, flat_act)).reshape(n, k).numpy()
        qc = targets[2](flat_obs, flat_act).reshape(n, k).numpy()
    obs_adv = critic_attack(obs, args.eps, actor, critics[2], args.train_attack_steps, args.attack_lr)

    def particle_q():
        with torch.no_grad():
            torch.min(targets[0](flat_obs, flat_act), targets[1](flat_obs, flat_act))
            targets[2](flat_obs, flat_act)

    return {
        "critics": lambda: cvpo.update_critics(batch, *critics, targets, target_actor, critic_opt, 0.99),
        f"E-step particle Q ({n} x {k} rows, 3 critics)": particle_q,
        "E-step dual solve": lambda: cvpo.solve_dual(qr, qc, args.estep_kl, 1.5, x0, args.lam_max),
        "E-step (whole)": lambda: cvpo.e_step(obs, target_actor, targets, x0, 1.5, args),
        f"SAFER attack ({args.train_attack_steps} MC steps)": lambda: critic_attack(
            obs, args.eps, actor, critics[2], args.train_attack_steps, args.attack_lr),
        f"CVPO M-step ({cvpo_args.mstep_iters} iterations)": lambda: cvpo.m_step(
            actor, target_actor, actor_opt, obs, particles, weights, cvpo.MStepDuals(), cvpo_args),
        f"SAFER robust M-step ({args.mstep_iters} iterations)": lambda: safer.robust_m_step(
            actor, target_actor, actor_opt, obs, obs_adv, particles, weights, safer.MStepDuals(), args),
    }


def whole_updates(env_id, particles, iters):
    """One whole CVPO update and one whole SAFER update (critics, E-step, attack, M-step) at the given particles and
    M-step iterations, the env's presets otherwise."""
    args, cvpo_args, actor, target_actor, critics, targets, critic_opt, actor_opt, batch, _, _ = setup(env_id)
    args = dataclasses.replace(args, num_particles=particles, mstep_iters=iters)
    cvpo_args = dataclasses.replace(cvpo_args, num_particles=particles, mstep_iters=iters)
    obs, x0 = batch[0], np.array([1.0, 1.0])

    def cvpo_update():
        cvpo.update_critics(batch, *critics, targets, target_actor, critic_opt, 0.99)
        particles_, weights, _, _ = cvpo.e_step(obs, target_actor, targets, x0, 1.5, cvpo_args)
        cvpo.m_step(actor, target_actor, actor_opt, obs, particles_, weights, cvpo.MStepDuals(), cvpo_args)

    def safer_update():
        cvpo.update_critics(batch, *critics, targets, target_actor, critic_opt, 0.99)
        particles_, weights, _, _ = safer.e_step(obs, target_actor, targets, x0, 1.5, args)
        obs_adv = critic_attack(obs, args.eps, actor, critics[2], args.train_attack_steps, args.attack_lr)
        safer.robust_m_step(actor, target_actor, actor_opt, obs, obs_adv, particles_, weights, safer.MStepDuals(), args)

    return cvpo_update, safer_update


def eval_step(env_id, n_envs=16, steps=200):
    """One vector step of an evaluation under MC: the attack, the policy, the envs."""
    args = cvpo.resolve_args(cvpo.Args(env_id=env_id))
    envs = gym.vector.SyncVectorEnv([cvpo.make_env(env_id) for _ in range(n_envs)])
    state = {"obs": envs.reset(seed=0)[0]}
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    actor, qc = cvpo.Actor(obs_dim, act_dim), cvpo.QNetwork(obs_dim, act_dim)

    def step():
        obs_t = torch.as_tensor(state["obs"], dtype=torch.float32)
        obs_adv = critic_attack(obs_t, args.eps, actor, qc, steps, args.attack_lr)
        with torch.no_grad():
            act = actor(obs_adv)[0].numpy()
        state["obs"] = envs.step(act)[0]

    return step, envs


def op_table(fn, calls, rows):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(args):
    for config in args.configs:
        numbers = config.split("x")
        if len(numbers) != 2 or not all(n.isdigit() and int(n) > 0 for n in numbers):
            raise SystemExit(f"profile_update.py: error: --configs {config!r}: expected PARTICLESxITERATIONS, e.g. 16x5")
    torch.set_num_threads(1)
    update_parts = parts(args.env_id)
    print(f"{args.env_id}, one torch thread, ms per call (mean of {args.repeats}):")
    for name, fn in update_parts.items():
        print(f"  {name:45s} {1e3 * timed(fn, args.repeats):8.2f}")
    print(f"\nwhole updates, particles x M-step iterations (ms per update; speed-up over {args.configs[0]}):")
    first = None
    for config in args.configs:
        particles, iters = (int(x) for x in config.split("x"))
        cvpo_update, safer_update = whole_updates(args.env_id, particles, iters)
        times = (1e3 * timed(cvpo_update, args.repeats), 1e3 * timed(safer_update, args.repeats))
        first = first or times
        print(f"  {config:>6s}: cvpo.py {times[0]:7.1f} ({first[0] / times[0]:.2f}x)  safer.py {times[1]:7.1f} "
              f"({first[1] / times[1]:.2f}x)  safer/cvpo {times[1] / times[0]:.2f}")
    step, envs = eval_step(args.env_id)
    print(f"  {'evaluation step under MC-200, 16 envs':45s} {1e3 * timed(step, max(1, args.repeats // 5)):8.2f}")
    for name in ("E-step (whole)", next(n for n in update_parts if n.startswith("SAFER robust M-step"))):
        print(f"\noperators of {name}:")
        print(op_table(update_parts[name], 3, args.rows))
    print("\noperators of an evaluation step under MC-200:")
    print(op_table(step, 1, args.rows))
    envs.close()


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
