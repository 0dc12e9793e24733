"""Speed of the scripts and attacks.py, all figures from one run (the machine is shared: compare ratios).

(a) each script's training env steps/s against raw env stepping with random actions, same --num-envs (the
    on-policy scripts at their default of 10 envs, against raw stepping at 10 envs; ADV-PPOL attacked throughout,
    SAFER at full eps from its first update);
(b) one evaluation step under MC with 200 attack steps, batched across 1, 4, 16 envs, over an unattacked step;
(c) the E-step: dual solve alone and the whole E-step (particle Q evaluation included) for N x K tables;
(d) where an update's time goes, CVPO against SAFER: critics, E-step, SAFER's attack, M-step.

    python benchmarks/speed.py [--env-id SafetyCarCircle-v0] [--num-envs 2] [--train-steps 20000]
    python benchmarks/speed.py --env-id SafetyBallCircle-v0 --parts b \
        --eval-checkpoint results/SafetyBallCircle-v0/safer/seed1/model.pt
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import csv
import subprocess
import sys
import tempfile
import time
import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cvpo  # noqa: E402
import safer  # noqa: E402
from attacks import critic_attack, perturb  # noqa: E402


@dataclass
class Args:
    env_id: str = "SafetyCarCircle-v0"
    """env to measure"""
    num_envs: int = 2
    """training envs, for cvpo.py and the raw stepping it is compared with"""
    train_steps: int = 20_000
    """cvpo.py env steps; the first 5000 are random, SPS is read from the epochs after them"""
    parts: tuple[Literal["a", "b", "c", "d"], ...] = ("a", "b", "c", "d")
    """which measurements to make"""
    eval_checkpoint: Optional[str] = None
    """a trained model.pt of --env-id whose actor and cost critic (b) attacks: how soon the attack stops depends on
    the networks (default: freshly initialised ones)"""


def raw_sps(env_id, num_envs, steps):
    envs = gym.vector.SyncVectorEnv([cvpo.make_env(env_id) for _ in range(num_envs)])
    envs.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps // num_envs):
        envs.step(envs.action_space.sample())
    envs.close()
    return steps / (time.perf_counter() - start)


def training_sps(script, env_id, num_envs, steps, flags):
    """Mean SPS of a short training run over its epochs (the off-policy ones after their random steps)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(ROOT, script), "--env-id", env_id, "--num-envs",
                        str(num_envs), "--total-timesteps", str(steps), *flags, "--eval-attackers", "none",
                        "--eval-episodes", "1", "--run-dir", os.path.join(tmp, "run")], check=True,
                       capture_output=True)
        with open(os.path.join(tmp, "run", "progress.csv")) as f:
            rows = list(csv.DictReader(f))
    if script in ("cvpo.py", "safer.py"):  # after the 5000 random steps
        rows = [r for r in rows if int(r["global_step"]) > 5000]
    return float(np.mean([float(r["SPS"]) for r in rows]))


def timed(fn, repeats):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def update_breakdown(env_id, repeats=10):
    """Milliseconds per update part, CVPO against SAFER, at the env's presets on one random batch."""
    args = safer.resolve_args(safer.Args(env_id=env_id))
    cvpo_args = cvpo.resolve_args(cvpo.Args(env_id=env_id))
    obs_dim, act_dim = 8, 2
    actor, target_actor = cvpo.Actor(obs_dim, act_dim), cvpo.Actor(obs_dim, act_dim)
    critics = [cvpo.QNetwork(obs_dim, act_dim) for _ in range(3)]
    targets = [cvpo.QNetwork(obs_dim, act_dim) for _ in range(3)]
    critic_opt = torch.optim.Adam([p for c in critics for p in c.parameters()], lr=1e-3, fused=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr, fused=True)
    n = args.batch_size
    batch = [torch.randn(n, obs_dim), torch.rand(n, act_dim) * 2 - 1, torch.randn(n), torch.rand(n),
             torch.randn(n, obs_dim), torch.zeros(n)]
    particles, weights, _, _ = cvpo.e_step(batch[0], target_actor, targets, np.array([1.0, 1.0]), 1.5, args)
    obs_adv = critic_attack(batch[0], args.eps, actor, critics[2], args.train_attack_steps)
    return {
        "critics": timed(lambda: cvpo.update_critics(batch, *critics, targets, target_actor, critic_opt, 0.99),
                         repeats),
        "E-step": timed(lambda: cvpo.e_step(batch[0], target_actor, targets, np.array([1.0, 1.0]), 1.5, args),
                        repeats),
        f"SAFER attack ({args.train_attack_steps} steps)": timed(
            lambda: critic_attack(batch[0], args.eps, actor, critics[2], args.train_attack_steps), repeats),
        "CVPO M-step": timed(lambda: cvpo.m_step(actor, target_actor, actor_opt, batch[0], particles, weights,
                                                 cvpo.MStepDuals(), cvpo_args), repeats),
        "SAFER robust M-step": timed(lambda: safer.robust_m_step(actor, target_actor, actor_opt, batch[0], obs_adv,
                                                                 particles, weights, safer.MStepDuals(), args),
                                     repeats),
    }


def read_checkpoint(env_id, path):
    """The actor and cost critic of a model.pt of `env_id` as cvpo.py's networks, or a one-line error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is the same bad input
        raise SystemExit(f"speed.py: error: --eval-checkpoint {path!r} is not a readable torch checkpoint "
                         f"({type(error).__name__})")
    if not isinstance(state, dict) or state.get("env_id") != env_id:
        raise SystemExit(f"speed.py: error: --eval-checkpoint {path!r} is not a model.pt of {env_id}")
    actor, qc = cvpo.Actor(state["obs_dim"], state["act_dim"]), cvpo.QNetwork(state["obs_dim"], state["act_dim"])
    try:
        actor.load_state_dict(state["actor"])
        qc.load_state_dict(state["qc"])
    except (KeyError, RuntimeError):
        raise SystemExit(f"speed.py: error: --eval-checkpoint {path!r} holds no actor and cost critic of the "
                         "off-policy scripts' shape")
    return actor, qc


def eval_step_cost(env_id, batch, attacker, steps=200, repeats=5, victim=None):
    """Seconds per evaluation vector step (attack + policy + env step) over `batch` envs."""
    args = cvpo.resolve_args(cvpo.Args(env_id=env_id))
    envs = gym.vector.SyncVectorEnv([cvpo.make_env(env_id) for _ in range(batch)])
    obs, _ = envs.reset(seed=0)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    actor, qc = victim or (cvpo.Actor(obs_dim, act_dim), cvpo.QNetwork(obs_dim, act_dim))
    start = time.perf_counter()
    for _ in range(repeats):
        obs_adv = perturb(attacker, torch.as_tensor(obs, dtype=torch.float32), args.eps, actor, qc, qc, steps)
        with torch.no_grad():
            act = actor(obs_adv)[0].numpy()
        obs = envs.step(act)[0]
    envs.close()
    return (time.perf_counter() - start) / repeats


def e_step_cost(n, k, repeats=5):
    actor, critics = cvpo.Actor(8, 2), [cvpo.QNetwork(8, 2) for _ in range(3)]
    obs = torch.randn(n, 8)
    rng = np.random.default_rng(0)
    qr, qc = rng.normal(size=(n, k)), rng.uniform(0, 3, (n, k))
    args = dataclasses.replace(cvpo.resolve_args(cvpo.Args()), num_particles=k, estep_kl=0.1)
    start = time.perf_counter()
    for _ in range(repeats):
        cvpo.solve_dual(qr, qc, 0.1, 1.5, np.array([1.0, 1.0]))
    dual = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        cvpo.e_step(obs, actor, critics, np.array([1.0, 1.0]), 1.5, args)
    return dual, (time.perf_counter() - start) / repeats


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.set_num_threads(1)
    victim = None if args.eval_checkpoint is None else read_checkpoint(args.env_id, args.eval_checkpoint)
    if "a" in args.parts:
        raw = raw_sps(args.env_id, args.num_envs, 6000)
        off_policy = ["--learning-starts", "5000", "--steps-per-epoch", "2500"]
        # SAFER at full eps from its first update epoch: at eps_t = 0 its attack stops at once and costs nothing
        for script, flags in (("cvpo.py", off_policy),
                              ("safer.py", [*off_policy, "--adv-start-epoch", "0", "--adv-ramp-epochs", "1"])):
            train = training_sps(script, args.env_id, args.num_envs, args.train_steps, flags)
            print(f"(a) {args.env_id}, {args.num_envs} envs: raw random stepping {raw:.0f} steps/s, {script} "
                  f"training {train:.0f} steps/s, ratio {train / raw:.2f}")
        raw10 = raw_sps(args.env_id, 10, 6000)
        on_policy = ["--steps-per-epoch", "30000"]
        for script, flags in (("ppol.py", on_policy), ("sa_ppol.py", on_policy),
                              ("adv_ppol.py", [*on_policy, "--adv-start-steps", "0"])):  # attacked from the start
            train = training_sps(script, args.env_id, 10, 90_000, flags)
            print(f"(a) {args.env_id}, 10 envs: raw random stepping {raw10:.0f} steps/s, {script} training "
                  f"{train:.0f} steps/s, ratio {train / raw10:.2f}")
    if "b" in args.parts:
        for batch in (1, 4, 16):
            clean = eval_step_cost(args.env_id, batch, "none", repeats=50, victim=victim)
            attacked = eval_step_cost(args.env_id, batch, "mc", victim=victim)
            print(f"(b) batch {batch:2d}: unattacked step {1e3 * clean:7.2f} ms, MC-200 step {1e3 * attacked:8.1f} "
                  f"ms, ratio {attacked / clean:6.1f}x, MC cost per env {1e3 * attacked / batch:6.1f} ms")
    if "c" in args.parts:
        for n, k in ((256, 32), (256, 64), (128, 32)):
            dual, full = e_step_cost(n, k)
            print(f"(c) N={n} K={k}: dual solve {1e3 * dual:6.2f} ms, whole E-step {1e3 * full:6.1f} ms")
    if "d" in args.parts:
        for part, seconds in update_breakdown(args.env_id).items():
            print(f"(d) {part:28s} {1e3 * seconds:7.1f} ms per update")
