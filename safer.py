"""SAFER: safe adversarially robust EM (Liu et al., ICML 2023; Algorithm 2, eq. 4-8, 58-67).

Single-file reference implementation. CVPO's constrained E-step (dual (6), weights (5)) followed by the robust
M-step (62): the vanilla decoupled-KL M-step (7), plus maximum likelihood of the E-step's particles on
MC-attacked states nu(s), plus a KL bound xi_adv between pi(.|s) and pi(.|nu(s)) (8). Only benign data is ever
collected: the attack exists inside the update. See docs/safer.md and docs/conventions.md.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one BLAS thread per process: set before numpy loads

import csv
import glob
import hashlib
import json
import math
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from typing import Annotated, Literal, NamedTuple, Optional

import bullet_safety_gym  # noqa: F401  (registers the Safety* envs)
import gymnasium as gym
import numpy as np
import scipy.optimize
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from PIL import Image, ImageDraw, ImageFont
from torch.utils.tensorboard import SummaryWriter

from attacks import ATTACKERS, critic_attack, gaussian_kl, perturb

ALGO = "safer"

# Table 4 (off-policy, xi_adv of eq. 8 included), the attack budget eps of docs/conventions.md, and the training
# budget, the ramp of eq. (67) (T_s, T_i in epochs) and beta_adv's cap of the committed results, per env id
# (docs/safer.md).
PRESETS = {
    "SafetyBallCircle-v0": dict(num_particles=32, mstep_iters=6, estep_kl=0.05, mstep_kl=0.02, actor_lr=0.002,
                                critic_lr=0.001, buffer_size=50_000, eps=0.05, xi_adv=0.05,
                                total_timesteps=120_000, adv_start_epoch=10, adv_ramp_epochs=20, adv_dual_max=0.1),
    "SafetyCarCircle-v0": dict(num_particles=32, mstep_iters=15, estep_kl=0.1, mstep_kl=0.01, actor_lr=0.002,
                               critic_lr=0.001, buffer_size=80_000, eps=0.05, xi_adv=0.012,
                               total_timesteps=1_000_000, adv_start_epoch=35, adv_ramp_epochs=100, adv_dual_max=0.03),
    "SafetyDroneRun-v0": dict(num_particles=32, mstep_iters=6, estep_kl=0.01, mstep_kl=0.0008, actor_lr=0.001,
                              critic_lr=0.001, buffer_size=20_000, eps=0.025, xi_adv=0.06,
                              total_timesteps=1_000_000, adv_start_epoch=35, adv_ramp_epochs=100, adv_dual_max=0.03),
    "SafetyAntRun-v0": dict(num_particles=64, mstep_iters=8, estep_kl=0.1, mstep_kl=0.05, actor_lr=0.001,
                            critic_lr=0.001, buffer_size=80_000, eps=0.025, xi_adv=0.06,
                            total_timesteps=1_000_000, adv_start_epoch=35, adv_ramp_epochs=100, adv_dual_max=0.03),
}
DEFAULT_PRESET = PRESETS["SafetyCarCircle-v0"]  # for other bullet-safety-gym ids
# --preset fast: at most 16 E-step particles and 5 M-step iterations, the rest Table 4's; about half the update
# time (benchmarks/profile_update.py); its time to quality is measured in docs/experiments.md, "Speed"
FAST_UPDATES = dict(num_particles=16, mstep_iters=5)


def per_env(name):
    """--help hint of a preset flag: its Table 4 value per env id (other ids take Car-Circle's)."""
    values = ", ".join(f"{env_id.removeprefix('Safety').removesuffix('-v0')} {preset[name]}"
                       for env_id, preset in PRESETS.items())
    return tyro.conf.arg(help_behavior_hint=f"(per env: {values})")


@dataclass
class Args:
    env_id: Annotated[Optional[str], tyro.conf.arg(help_behavior_hint="(default: SafetyCarCircle-v0)")] = None
    """bullet-safety-gym env id (with --eval-checkpoint: the checkpoint's env)"""
    seed: int = 1
    """seed of python, numpy, torch and the envs"""
    output_dir: str = "runs"
    """parent folder of the run directory {env_id}__{algo}__{seed}__{unix_time}"""
    run_dir: Optional[str] = None
    """exact run directory to write into instead of one under --output-dir (must not hold a run already)"""
    resume: Optional[str] = None
    """continue the run in this directory from its last epoch end, with its stored arguments (only
    --total-timesteps and --device may change: raise the first to extend a finished run)"""
    threads: int = 1
    """torch threads; 1 is fastest when each core runs its own process"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the networks, updates and attacks run (auto: a GPU when torch sees one); the envs run on the CPU"""
    total_timesteps: Annotated[Optional[int], per_env("total_timesteps")] = None
    """environment steps of training, summed over the vector envs"""
    steps_per_epoch: int = 3000
    """environment steps per epoch: the unit of logging, progress.csv rows and --eval-every"""
    num_envs: int = 2
    """parallel training envs (gymnasium SyncVectorEnv)"""
    learning_starts: int = 5000
    """environment steps of uniform random actions before the first update"""
    updates_per_step: float = 0.12
    """gradient updates (critics, E-step, M-step) per environment step"""
    batch_size: int = 128
    """states N per update, sampled from the replay buffer"""
    buffer_size: Annotated[Optional[int], per_env("buffer_size")] = None
    """replay buffer capacity (Table 4 'batch size')"""
    gamma: float = 0.99
    """discount factor"""
    polyak: float = 0.95
    """polyak weight rho of the target critics, eq. (61).
    At ~0.1 updates per env step, 0.995 lets the cost critic lag the policy by tens of thousands of steps"""
    iteration_steps: int = 600
    """env steps per EM iteration: the old policy pi_theta_i (E-step sampler, M-step KL anchor) is replaced by
    pi_theta only every N env steps, as FSRL does after each collection round (0: after every update)"""
    critic_lr: Annotated[Optional[float], per_env("critic_lr")] = None
    """learning rate of the reward and cost critics"""
    actor_lr: Annotated[Optional[float], per_env("actor_lr")] = None
    """learning rate of the policy"""
    preset: Literal["paper", "fast"] = "paper"
    """the update budget: Table 4's particles K and M-step iterations (paper), or at most 16 and 5 (fast); the
    flags below override either"""
    num_particles: Annotated[Optional[int], per_env("num_particles")] = None
    """action particles K per state in the E-step"""
    estep_kl: Annotated[Optional[float], per_env("estep_kl")] = None
    """E-step KL bound delta of eq. (4)"""
    lam_max: float = 20.0
    """upper bound of lam in the dual (6): where no re-weighting meets the cost bound, reward still counts"""
    estep_solver: Literal["exact", "adam"] = "exact"
    """dual (6) solved to optimality on every batch (exact, the paper's E-step), or one Adam step per update on
    (eta, lam) carried across updates (adam, FSRL's smoothed E-step)"""
    estep_dual_lr: float = 0.02
    """Adam step size of --estep-solver adam"""
    mstep_iters: Annotated[Optional[int], per_env("mstep_iters")] = None
    """M-step gradient iterations per update"""
    mstep_kl: Annotated[Optional[float], per_env("mstep_kl")] = None
    """M-step KL bound xi on the mean part of KL(pi_old || pi_theta), eq. (7)"""
    mstep_kl_std: float = 1e-4
    """M-step KL bound on the std part of KL(pi_old || pi_theta)"""
    mstep_dual_lr: float = 0.2
    """step of the M-step multipliers, relative to their bound: beta -= lr * (bound - KL) / bound, eq. (64)"""
    mstep_dual_max: float = 0.1
    """cap of each M-step multiplier times its bound (beta <= max / bound): Adam steps have a floor that beta cannot
    push the KL below, and an unbounded beta then grows without end and freezes the policy"""
    adv_dual_max: Annotated[Optional[float], per_env("adv_dual_max")] = None
    """cap of beta_adv times xi_adv (beta_adv <= max / xi_adv), as --mstep-dual-max for the other multipliers: where
    kl_adv stays above xi_adv at full eps, a lower cap keeps the adversarial KL from holding the mean still"""
    max_grad_norm: float = 1.0
    """gradient-norm clip of the actor"""
    cost_limit: float = 5.0
    """episodic cost limit kappa_H"""
    xi_adv: Annotated[Optional[float], per_env("xi_adv")] = None
    """bound xi_adv on KL(pi(.|s) || pi(.|nu(s))), eq. (8)"""
    adv_start_epoch: Annotated[Optional[int], per_env("adv_start_epoch")] = None
    """T_s of eq. (67): epochs before the attack budget eps_t starts to grow; the policy first learns to drive"""
    adv_ramp_epochs: Annotated[Optional[int], per_env("adv_ramp_epochs")] = None
    """T_i of eq. (67): epochs over which eps_t grows linearly from 0 to eps"""
    train_attack_steps: int = 5
    """MC steps of the attack inside training (eval: --attack-steps); 5 steps of 0.2 eps reach the ball's corners"""
    no_vanilla_mstep: bool = False
    """Table 8 ablation: drop the vanilla M-step term (MLE on benign states and its KL bounds)"""
    no_adv_kl: bool = False
    """Table 8 ablation: drop the adversarial KL term of eq. (62)"""
    no_adv_mle: bool = False
    """Table 8 ablation: drop the maximum likelihood on attacked states of eq. (62)"""
    adv_kl_duals: Literal["joint", "split"] = "joint"
    """multipliers of the adversarial KL (8): one for the sum of its mean and std parts, or one per part, each part
    bounded by xi_adv (the vanilla M-step's pair is split the same way)"""
    std_fit: Literal["sampled", "executed"] = "sampled"
    """particles the M-step's std terms fit: as sampled, or clamped to the action box as the env executes them
    (beyond the box every particle ties at the bound's Q value, so the E-step cannot weigh the tail it keeps)"""
    eps: Annotated[Optional[float], per_env("eps")] = None
    """attack budget in raw observation units"""
    eval_every: int = 0
    """evaluate under the attackers, save model.pt and add rows to evals.csv every N epochs (0: only at the end);
    model_best.pt keeps the best natural evaluation (a feasible one first, then the highest return)"""
    eval_episodes: int = 10
    """evaluation episodes per attacker"""
    eval_attackers: tuple[str, ...] = ("none", "mc", "mr", "mad", "uniform")
    """attackers to evaluate under"""
    eval_every_attackers: Optional[tuple[str, ...]] = None
    """attackers of the evaluations before the last one (default: --eval-attackers), e.g. none alone for a cheap
    learning curve in evals.csv; the last evaluation, eval.json's, uses --eval-attackers"""
    eval_every_episodes: Optional[int] = None
    """episodes per attacker of the evaluations before the last one (default: --eval-episodes)"""
    attack_steps: int = 200
    """gradient steps of the MC, MR and MAD attackers at evaluation"""
    attack_lr: float = 0.2
    """attacker step size as a fraction of eps"""
    eval_checkpoint: Optional[str] = None
    """evaluate this model.pt (or model_best.pt) under the attackers, without training (see --eval-seed)"""
    eval_output: Optional[str] = None
    """where --eval-checkpoint writes its JSON (default: eval_checkpoint.json beside the checkpoint)"""
    eval_seed: Optional[int] = None
    """seed of the evaluation episodes' initial states (default: --seed, or the checkpoint's training seed with
    --eval-checkpoint, which repeats the run's own evaluation); another value draws fresh episodes"""
    capture_video: bool = False
    """film the first --video-episodes episodes per attacker of the final evaluation (or of --eval-checkpoint) to
    videos/<attacker>/episode<i>.mp4 in the run directory (beside --eval-output), rendered headless"""
    video_episodes: int = 2
    """episodes per attacker that --capture-video films"""
    track: bool = False
    """track the run with Weights & Biases: the TensorBoard scalars, the arguments and the videos"""
    wandb_project_name: str = "safer-rl"
    """W&B project of --track"""
    wandb_entity: Optional[str] = None
    """W&B entity (team) of --track"""


def fail(message):
    """Bad input: one line on stderr, exit status 1, no traceback."""
    raise SystemExit(f"{ALGO}.py: error: {message}")


class TrainingError(Exception):
    """The algorithm cannot go on (a critic diverged): the run stops with this one line, its state file intact."""


# sizes beyond these are years of compute or more memory than a machine has, never a run
UPPER_BOUNDS = dict(total_timesteps=10**10, steps_per_epoch=10**7, num_envs=256, buffer_size=10**7,
                    q_buffer_size=10**7, batch_size=10**6, minibatch_size=10**6, q_batch_size=10**6,
                    num_particles=10**4, eval_episodes=10**5, eval_every_episodes=10**5, attack_steps=10**5,
                    train_attack_steps=10**5, mstep_iters=10**5, actor_steps=10**5, critic_steps=10**5,
                    q_steps=10**5, threads=1024, updates_per_step=10**3)


def check_values(args):
    """Refuse what no run can use: an env whose steps carry no cost, a number that is not finite, a size beyond
    UPPER_BOUNDS (the other checks of resolve_args say what each flag allows)."""
    if not str(gym.spec(args.env_id).entry_point).startswith("bullet_safety_gym"):
        fail(f"--env-id {args.env_id}: not a bullet-safety-gym env, so its steps carry no cost signal "
             f"(info['cost']); use a Safety* env id")
    if not 1 <= args.video_episodes <= 20:
        fail(f"--video-episodes must be in [1, 20] (the first batch of evaluation envs), got {args.video_episodes}")
    for field in fields(args):
        flag, value = f"--{field.name.replace('_', '-')}", getattr(args, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"{flag} must be a finite number, got {value}")
        if field.name in UPPER_BOUNDS and value is not None and value > UPPER_BOUNDS[field.name]:
            fail(f"{flag} must be at most {UPPER_BOUNDS[field.name]:,}, got {value:,}")


def writable_file(path, flag):
    """Refuse an output file that cannot be written before the work that fills it; make its folder."""
    if os.path.isdir(path):
        fail(f"{flag} {path!r} is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        fail(f"{flag} {path!r}: cannot write a file there ({exc.strerror})")


def resolve_args(args):
    """Fill preset fields from Table 4 and reject bad values before anything is written."""
    if args.env_id is None:
        args.env_id = "SafetyCarCircle-v0"
    if args.env_id not in gym.envs.registry:
        known = ", ".join(sorted(k for k in gym.envs.registry if k.startswith("Safety")))
        fail(f"unknown env id {args.env_id!r}; bullet-safety-gym ids are: {known}")
    preset = dict(PRESETS.get(args.env_id, DEFAULT_PRESET))
    if args.preset == "fast":
        preset.update({name: min(preset[name], value) for name, value in FAST_UPDATES.items()})
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    check_values(args)
    for name in ("total_timesteps", "steps_per_epoch", "num_envs", "batch_size", "buffer_size", "num_particles",
                 "mstep_iters", "eval_episodes", "attack_steps", "train_attack_steps", "adv_ramp_epochs", "threads"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    for name in ("seed", "eval_seed"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("learning_starts", "eval_every", "adv_start_epoch", "updates_per_step", "cost_limit",
                 "iteration_steps"):
        if getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("eps", "xi_adv", "estep_dual_lr", "lam_max", "estep_kl", "mstep_kl", "mstep_kl_std", "actor_lr",
                 "critic_lr", "mstep_dual_lr", "mstep_dual_max", "adv_dual_max", "max_grad_norm", "attack_lr"):
        if not getattr(args, name) >= 0:
            fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not (0 < args.gamma < 1 and 0 <= args.polyak < 1):
        fail(f"--gamma must be in (0, 1) and --polyak in [0, 1), got {args.gamma} and {args.polyak}")
    if not args.eps <= 1:
        fail(f"--eps must be in [0, 1] (observations are scaled to about unit range), got {args.eps}")
    if args.eval_every_episodes is not None and args.eval_every_episodes <= 0:
        fail(f"--eval-every-episodes must be a positive integer, got {args.eval_every_episodes}")
    for flag in ("eval_attackers", "eval_every_attackers"):
        for attacker in getattr(args, flag) or ():
            if attacker not in ATTACKERS:
                fail(f"unknown attacker {attacker!r} in --{flag.replace('_', '-')}; allowed: {', '.join(ATTACKERS)}")
    return args


class EpisodeEndRecorder(gym.Wrapper):
    """Keeps what a fresh env needs to repeat this env's last reset exactly (--resume): the global numpy RNG state
    before it (bullet-safety-gym draws initial states from it) and the last action (a car's motors keep their last
    command through a reset)."""

    def step(self, action):
        self.last_action = np.array(action)  # its dtype too: the env computes the motor command in it
        return self.env.step(action)

    def reset(self, **kwargs):
        self.rng_before_reset = np.random.get_state()
        return self.env.reset(**kwargs)


# the envs as the paper ran them, where bullet-safety-gym 1.4.0 differs: Table 4's rollout length, and the
# simulator steps per action of the authors' copy (docs/conventions.md)
PAPER_ENVS = {"SafetyDroneRun-v0": dict(max_episode_steps=100, frame_skip=4)}


class FrameSkip(gym.Wrapper):
    """Simulator steps of 1/120 s per action: the authors' copy steps the drone 4 per action, 1.4.0 only 2, so that
    a 100-step episode would last half as long."""

    def __init__(self, env, frame_skip):
        super().__init__(env)
        sim = env.unwrapped
        sim.frame_skip, sim.dt = frame_skip, sim.time_step * frame_skip
        sim.bc.setPhysicsEngineParameter(fixedTimeStep=sim.dt, numSubSteps=frame_skip)


def make_env(env_id):
    def thunk():
        paper = PAPER_ENVS.get(env_id, {})
        env = gym.make(env_id, max_episode_steps=paper.get("max_episode_steps"))
        return EpisodeEndRecorder(FrameSkip(env, paper["frame_skip"]) if "frame_skip" in paper else env)
    return thunk


def step_costs(infos, num_envs):
    """Per-env cost of the last vector step, including the last step of episodes that just auto-reset."""
    costs = np.where(infos.get("_cost", np.zeros(num_envs, bool)), infos.get("cost", np.zeros(num_envs)), 0.0)
    for i in np.flatnonzero(infos.get("_final_info", np.zeros(num_envs, bool))):
        costs[i] = infos["final_info"][i].get("cost", 0.0)
    return costs.astype(np.float64)


def mlp(in_dim, out_dim, hidden=(256, 256)):
    layers, dim = [], in_dim
    for h in hidden:
        layers += [nn.Linear(dim, h), nn.ReLU()]
        dim = h
    return nn.Sequential(*layers, nn.Linear(dim, out_dim))


class QNetwork(nn.Module):
    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, 1)

    def forward(self, obs, act):
        return self.net(torch.cat([obs, act], -1)).squeeze(-1)


class Actor(nn.Module):
    """Gaussian policy: tanh-squashed state-dependent mean, state-dependent log-std squashed into its range."""

    LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0

    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.body = mlp(obs_dim, 2 * act_dim)

    def forward(self, obs):
        mean, log_std = self.body(obs).chunk(2, -1)
        # softplus bounds, not clamp(): a clamped log-std has no gradient and, once out of range, stays at the bound
        log_std = self.LOG_STD_MAX - F.softplus(self.LOG_STD_MAX - log_std)
        log_std = self.LOG_STD_MIN + F.softplus(log_std - self.LOG_STD_MIN)
        return torch.tanh(mean), log_std.exp()


class Batch(NamedTuple):
    """Transitions sampled from the replay buffer, one row each."""
    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    cost: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class ReplayBuffer:
    def __init__(self, capacity, obs_dim, act_dim):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.cost = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.capacity, self.ptr, self.size = capacity, 0, 0

    def add(self, obs, act, rew, cost, next_obs, terminated):
        n = len(obs)
        idx = (self.ptr + np.arange(n)) % self.capacity
        self.obs[idx], self.act[idx], self.rew[idx], self.cost[idx] = obs, act, rew, cost
        self.next_obs[idx], self.terminated[idx] = next_obs, terminated
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    FIELDS = ("obs", "next_obs", "act", "rew", "cost", "terminated")

    def state_dict(self):
        return dict(ptr=self.ptr, size=self.size, **{f: torch.from_numpy(getattr(self, f)[:self.size].copy())
                                                     for f in self.FIELDS})

    def load_state_dict(self, state):
        self.ptr, self.size = state["ptr"], state["size"]
        for f in self.FIELDS:
            getattr(self, f)[:self.size] = state[f].numpy()

    def sample(self, n, rng, device):
        idx = rng.integers(0, self.size, n)
        return Batch(*(torch.as_tensor(getattr(self, field)[idx], device=device) for field in Batch._fields))


def qc_threshold_for(cost_limit, gamma, horizon):
    """Appendix B.1: episodic cost limit -> per-state threshold on Qc, assuming cost spread evenly over H steps."""
    return cost_limit * (1 - gamma**horizon) / (horizon * (1 - gamma))


def soft_update(target, source, polyak):
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.mul_(polyak).add_(s, alpha=1 - polyak)


def update_critics(batch, qr1, qr2, qc, targets, target_actor, critic_opt, gamma):
    """Mean-squared Bellman errors (58), (59); a' ~ pi_old(.|s'); terminal only on termination, not truncation."""
    obs, act, rew, cost, next_obs, terminated = batch
    target_qr1, target_qr2, target_qc = targets
    with torch.no_grad():
        mean, std = target_actor(next_obs)
        next_act = (mean + std * torch.randn_like(mean)).clamp(-1, 1)
        not_done = 1 - terminated
        y_r = rew + gamma * not_done * torch.min(target_qr1(next_obs, next_act), target_qr2(next_obs, next_act))
        y_c = cost + gamma * not_done * target_qc(next_obs, next_act)
    loss_r = F.mse_loss(qr1(obs, act), y_r) + F.mse_loss(qr2(obs, act), y_r)
    loss_c = F.mse_loss(qc(obs, act), y_c)
    critic_opt.zero_grad()
    (loss_r + loss_c).backward()
    critic_opt.step()
    return loss_r.item(), loss_c.item()


def dual_function(x, qr, qc, estep_kl, qc_threshold):
    """Eq. (6): g(eta, lam) and its gradient, for Q tables of shape (N, K); stable log-mean-exp."""
    eta, lam = x
    adv = qr - lam * qc
    z = adv / eta
    z_max = z.max(axis=1, keepdims=True)
    w = np.exp(z - z_max)
    w_sum = w.sum(axis=1, keepdims=True)
    log_mean_exp = (z_max + np.log(w_sum / qr.shape[1])).squeeze(1)
    w /= w_sum
    g = eta * estep_kl + lam * qc_threshold + eta * log_mean_exp.mean()
    d_eta = estep_kl + log_mean_exp.mean() - (w * adv).sum(1).mean() / eta
    d_lam = qc_threshold - (w * qc).sum(1).mean()
    return g, np.array([d_eta, d_lam])


ETA_BOUNDS = (1e-6, 1e6)  # of the temperature over the Q tables' spread


def dual_log_eta(y, qr, qc, estep_kl, qc_threshold):
    """Dual (6) and its gradient in (log eta, lam)."""
    eta = np.exp(y[0])
    g, (d_eta, d_lam) = dual_function((eta, y[1]), qr, qc, estep_kl, qc_threshold)
    return g, np.array([d_eta * eta, d_lam])


def dual_residuals(x, qr, qc, estep_kl, qc_threshold, lam_max):
    """How far (eta, lam) is from the optimum of (6), each part relative to its scale: |KL(q || uniform) - delta|
    / delta (the derivative in eta, zero unless eta sits on a bound it pushes against), and the projected derivative
    in lam, the cost condition E_q[Qc] = threshold (<= at lam = 0), in units of the Qc spread."""
    eta, lam = x
    _, (d_eta, d_lam) = dual_function(x, qr, qc, estep_kl, qc_threshold)
    spread = max(qr.std(), qc.std(), 1e-12)
    if (eta <= ETA_BOUNDS[0] * spread * 1.001 and d_eta > 0) or (eta >= ETA_BOUNDS[1] * spread * 0.999 and d_eta < 0):
        d_eta = 0.0
    if (lam <= 0 and d_lam > 0) or (lam >= lam_max and d_lam < 0):
        d_lam = 0.0
    return abs(d_eta) / estep_kl, abs(d_lam) / max(qc.std(), abs(qc_threshold), 1e-12)


def solve_dual(qr, qc, estep_kl, qc_threshold, x0, lam_max=20.0, tol=1e-3):
    """Minimise the convex dual (6) over eta > 0, 0 <= lam <= lam_max, warm-started at x0 = (eta, lam).

    L-BFGS-B over (log eta, lam) on Q tables scaled to unit spread, so one tolerance fits every reward scale and a
    warm start far off is a few steps away; if the result misses the optimality conditions (dual_residuals above
    tol), a cold start at (spread, 0) is solved too and the lower dual kept."""
    qr, qc = np.asarray(qr, np.float64), np.asarray(qc, np.float64)
    spread = max(qr.std(), qc.std(), 1e-12)
    scaled = (qr / spread, qc / spread, estep_kl, qc_threshold / spread)

    def solve(start):
        eta = float(np.clip(start[0] / spread, *ETA_BOUNDS))
        res = scipy.optimize.minimize(dual_log_eta, [np.log(eta), float(np.clip(start[1], 0.0, lam_max))],
                                      args=scaled, jac=True, method="L-BFGS-B",
                                      bounds=[np.log(ETA_BOUNDS), (0.0, lam_max)],
                                      options=dict(ftol=1e-15, gtol=1e-10, maxiter=500))
        return res.fun, (float(np.exp(res.x[0]) * spread), float(res.x[1]))

    g, x = solve(x0)
    if max(dual_residuals(x, qr, qc, estep_kl, qc_threshold, lam_max)) > tol:
        g_cold, x_cold = solve((spread, 0.0))
        if g_cold < g:
            x = x_cold
    return x


class AdamDual:
    """FSRL's smoothed E-step: instead of solving dual (6) on each batch, one Adam step on (eta, lam) per update,
    kept in [1e-6, inf) x [0, lam_max], so the multipliers move smoothly across batches."""

    def __init__(self, x0, lr, estep_kl, qc_threshold, lam_max):
        self.x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
        self.opt = torch.optim.Adam([self.x], lr=lr)
        self.estep_kl, self.qc_threshold, self.lam_max = estep_kl, qc_threshold, lam_max

    def step(self, qr, qc):
        _, grad = dual_function(self.x.tolist(), np.asarray(qr, np.float64), np.asarray(qc, np.float64),
                                self.estep_kl, self.qc_threshold)
        self.x.grad = torch.as_tensor(grad)
        self.opt.step()
        with torch.no_grad():
            self.x[0].clamp_(min=1e-6)
            self.x[1].clamp_(0.0, self.lam_max)
        eta, lam = self.x.detach().tolist()
        return eta, lam

    def state_dict(self):
        return dict(x=self.x.detach().clone(), opt=self.opt.state_dict())

    def load_state_dict(self, state):
        with torch.no_grad():
            self.x.copy_(state["x"])
        self.opt.load_state_dict(state["opt"])


def e_step(obs, target_actor, target_qr1, target_qr2, target_qc, num_particles, estep_kl, qc_threshold, x0,
           lam_max=20.0, adam_dual=None):
    """Constrained E-step: K particles a_nk ~ pi_old(.|s_n), dual (6) (solved from x0, or one step of adam_dual),
    weights q_nk of eq. (5)."""
    n = obs.shape[0]
    with torch.no_grad():
        mean, std = target_actor(obs)
        noise = torch.randn(n, num_particles, mean.shape[-1], device=obs.device)
        particles = mean.unsqueeze(1) + std.unsqueeze(1) * noise
        flat_obs = obs.unsqueeze(1).expand(-1, num_particles, -1).reshape(n * num_particles, -1)
        # the critics score the action the env executes; the M-step fits the unclamped particles, since
        # particles piled on +-1 by clamping would read as a smaller spread and shrink the std every update
        flat_act = particles.reshape(n * num_particles, -1).clamp(-1, 1)
        qr = torch.min(target_qr1(flat_obs, flat_act), target_qr2(flat_obs, flat_act)).reshape(n, num_particles)
        qc = target_qc(flat_obs, flat_act).reshape(n, num_particles)
    for name, table in (("reward", qr), ("cost", qc)):
        if not torch.isfinite(table).all():
            raise TrainingError(f"the {name} critic diverged: non-finite Q values in the E-step (try a lower "
                                f"--critic-lr)")
    if adam_dual is None:
        eta, lam = solve_dual(qr.cpu().numpy(), qc.cpu().numpy(), estep_kl, qc_threshold, x0, lam_max)
    else:
        eta, lam = adam_dual.step(qr.cpu().numpy(), qc.cpu().numpy())
    weights = torch.softmax((qr - lam * qc) / eta, dim=1)
    return particles, weights, eta, lam


def particle_moments(particles, weights):
    """Weighted mean and variance of the particles per state and action dimension (weights sum to 1 over k)."""
    m1 = (weights.unsqueeze(-1) * particles).sum(1)
    var = (weights.unsqueeze(-1) * (particles - m1.unsqueeze(1)) ** 2).sum(1)
    return m1, var


def weighted_log_lik(mean, std, m1, var):
    """sum_k q_nk log N(a_nk; mean, std) averaged over states, from the particle moments: since the weights
    sum to 1, sum_k q_k (a_k - mean)^2 = var + (m1 - mean)^2, so each M-step iteration costs O(N), not O(NK)."""
    return (-0.5 * (var + (m1 - mean) ** 2) / std**2 - std.log() - 0.5 * np.log(2 * np.pi)).sum(-1).mean()


def eps_schedule(epoch, eps, adv_start_epoch, adv_ramp_epochs):
    """Eq. (67): eps_t = min(eps, eps * max(0, t - T_s) / T_i)."""
    return min(eps, eps * max(0, epoch - adv_start_epoch) / adv_ramp_epochs)


def decoupled_kl(ref_mean, ref_std, mean, std):
    """KL(N(ref) || N(mean, std)) split into a mean part (std held at ref_std) and a std part (mean at ref_mean)."""
    return gaussian_kl(ref_mean, ref_std, mean, ref_std).mean(), gaussian_kl(ref_mean, ref_std, ref_mean, std).mean()


def decoupled_log_lik(mean, std, ref_mean, ref_std, mean_target, std_target):
    """Weighted log-likelihood with the mean fitted under ref_std and the std under ref_mean, so each statistic
    moves by its own term (fitting the std with a moved mean would read the mean's shift as spread); the mean fits
    the particle moments mean_target = (m1, var), the std std_target."""
    return weighted_log_lik(mean, ref_std, *mean_target) + weighted_log_lik(ref_mean, std, *std_target)


def robust_m_step_terms(actor, obs, obs_adv, old_mean, old_std, mean_target, std_target, duals, args):
    """The three terms of eq. (62) as losses to minimise, and the KLs; duals = [beta_mean, beta_std, beta_adv,
    beta_adv_std]; mean_target and std_target: the particle moments (m1, var) the mean and the std are fitted to."""
    mean, std = actor(obs)
    mean_adv, std_adv = actor(obs_adv)
    # vanilla M-step (7), decoupled: mean moves with the old std, std with the old mean
    log_lik = decoupled_log_lik(mean, std, old_mean, old_std, mean_target, std_target)
    kl_mean, kl_std = decoupled_kl(old_mean, old_std, mean, std)
    # appendix B.1's practical form KL(pi_theta(s) || pi_theta(nu(s))), no gradient through the benign path (eq. 62
    # writes pi_theta_i(s); anchoring there measured no better, docs/experiments.md); decoupled like the vanilla
    # KL: in the joint KL a larger std at nu(s) shrinks the mean-shift term, so the multiplier would buy robustness
    # by inflating the std everywhere (measured: std at its clamp, no reward learned)
    kl_adv_mean, kl_adv_std = decoupled_kl(mean.detach(), std.detach(), mean_adv, std_adv)
    kl_adv = kl_adv_mean + kl_adv_std
    terms = {
        "vanilla": -(log_lik + duals[0] * (args.mstep_kl - kl_mean) + duals[1] * (args.mstep_kl_std - kl_std)),
        "adv_mle": -decoupled_log_lik(mean_adv, std_adv, old_mean, old_std, mean_target, std_target),
        "adv_kl": (duals[2] * (kl_adv_mean - args.xi_adv) + duals[3] * (kl_adv_std - args.xi_adv)
                   if args.adv_kl_duals == "split" else duals[2] * (kl_adv - args.xi_adv)),
    }
    return terms, dict(log_lik=log_lik.item(), kl_mean=kl_mean.item(), kl_std=kl_std.item(), kl_adv=kl_adv.item(),
                       kl_adv_mean=kl_adv_mean.item(), kl_adv_std=kl_adv_std.item(),
                        std=std.mean().item())


def enabled_terms(args):
    return [name for name, off in (("vanilla", args.no_vanilla_mstep), ("adv_mle", args.no_adv_mle),
                                   ("adv_kl", args.no_adv_kl)) if not off]


def dual_step(beta, bound, kl, args, dual_max=None):
    """Eq. (64)/(65): one projected gradient step on an M-step multiplier, scaled by its bound, kept in
    [0, dual_max / bound] (dual_max: --mstep-dual-max unless given); in units of the bound, so one cap fits bounds
    from 1e-4 to 0.05."""
    dual_max = args.mstep_dual_max if dual_max is None else dual_max
    return min(max(0.0, beta - args.mstep_dual_lr * (bound - kl) / bound), dual_max / bound)


def robust_m_step(actor, target_actor, actor_opt, obs, obs_adv, particles, weights, duals, args):
    """Robust M-step (62) by gradient descent-ascent; duals = [beta_mean, beta_std, beta_adv, beta_adv_std] (the
    last with --adv-kl-duals split), updated in place."""
    with torch.no_grad():
        old_mean, old_std = target_actor(obs)
        mean_target = particle_moments(particles, weights)
        std_target = (particle_moments(particles.clamp(-1, 1), weights) if args.std_fit == "executed"
                      else mean_target)
    active = enabled_terms(args)
    for _ in range(args.mstep_iters):
        terms, kls = robust_m_step_terms(actor, obs, obs_adv, old_mean, old_std, mean_target, std_target, duals,
                                         args)
        # descent on theta at the current multipliers, then ascent on the multipliers
        if "vanilla" in active:
            duals[0] = dual_step(duals[0], args.mstep_kl, kls["kl_mean"], args)
            duals[1] = dual_step(duals[1], args.mstep_kl_std, kls["kl_std"], args)
        if "adv_kl" in active:
            if args.adv_kl_duals == "split":
                duals[2] = dual_step(duals[2], args.xi_adv, kls["kl_adv_mean"], args, args.adv_dual_max)
                duals[3] = dual_step(duals[3], args.xi_adv, kls["kl_adv_std"], args, args.adv_dual_max)
            else:
                duals[2] = dual_step(duals[2], args.xi_adv, kls["kl_adv"], args, args.adv_dual_max)
        loss = sum(terms[name] for name in active)
        actor_opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(actor.parameters(), args.max_grad_norm)
        actor_opt.step()
    return kls


def aim_camera(sim):
    """Top-down over the circle and its two boundary lines on the Circle tasks; elsewhere the env's own camera."""
    if type(sim.task).__name__ == "CircleTask":
        camera = sim.world.camera
        camera.cam_base_pos, camera.cam_dist, camera.cam_yaw, camera.cam_pitch = (0, 0, 0), 15.0, 0, -89.9


class EpisodeVideos:
    """--capture-video: frames of the first `count` envs' episodes, each with the step, return and cost so far
    drawn on it. bullet-safety-gym 1.4.0 renders through its own render(mode="rgb_array"), older than gymnasium's
    render_mode; rendering reads the simulator and leaves it as it was."""

    def __init__(self, envs, count):
        self.envs, self.frames = envs, [[] for _ in range(min(count, len(envs.envs)))]
        self.font = ImageFont.load_default(size=20) if self.frames else None
        for env in envs.envs[:len(self.frames)]:
            aim_camera(env.unwrapped)

    def capture(self, done, ep_ret, ep_cost):
        for i, frames in enumerate(self.frames):
            if not done[i]:
                frame = Image.fromarray(self.envs.envs[i].unwrapped.render(mode="rgb_array").astype(np.uint8))
                caption = f"step {len(frames)}  reward {ep_ret[i]:.0f}  cost {ep_cost[i]:.0f}"
                ImageDraw.Draw(frame).text((10, 8), caption, font=self.font, fill=(255, 255, 255), stroke_width=2,
                                           stroke_fill=(0, 0, 0))
                frames.append(np.asarray(frame))

    def save(self, folder):
        """Write episode<i>.mp4 files into folder, each atomically."""
        import imageio_ffmpeg
        fps = round(1 / self.envs.envs[0].unwrapped.dt)
        for i, frames in enumerate(self.frames):
            def write(tmp):
                os.makedirs(folder, exist_ok=True)
                height, width = frames[0].shape[:2]
                writer = imageio_ffmpeg.write_frames(tmp, (width, height), fps=fps, macro_block_size=8,
                                                     output_params=["-f", "mp4"])
                writer.send(None)
                for frame in frames:
                    writer.send(np.ascontiguousarray(frame))
                writer.close()
            write_atomic(os.path.join(folder, f"episode{i}.mp4"), write)


def start_tracking(args, run_dir):
    """--track, CleanRL's way: a W&B run that syncs the TensorBoard scalars and holds the arguments; a resumed run
    continues the same W&B run. Call before the SummaryWriter is made."""
    try:
        import wandb
    except ImportError:
        fail("--track needs Weights & Biases: pip install wandb")
    run_id = hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:16]
    return wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=asdict(args), dir=run_dir,
                      name=os.path.basename(os.path.normpath(run_dir)), id=run_id, resume="allow",
                      sync_tensorboard=True)


def track_videos(tracker, video_dir):
    """Hand the videos of video_dir/<attacker>/ to the W&B run, one panel per attacker."""
    import wandb
    tracker.log({f"videos/{attacker}": [wandb.Video(os.path.join(video_dir, attacker, name), format="mp4")
                                        for name in sorted(os.listdir(os.path.join(video_dir, attacker)))]
                 for attacker in sorted(os.listdir(video_dir))})


def evaluate(actor, qr1, qr2, qc, args, attackers=None, episodes=None, video_dir=None):
    """Deterministic policy under each attacker, batched across envs; one episode per env, <= 20 envs at once.
    attackers and episodes (per attacker) default to --eval-attackers and --eval-episodes; with video_dir, the first
    --video-episodes episodes per attacker are filmed into video_dir/<attacker>/episode<i>.mp4."""
    episodes = episodes or args.eval_episodes
    policy = actor  # (mean, std); the deterministic action is the mean
    qr_fn = lambda s, a: torch.min(qr1(s, a), qr2(s, a))  # noqa: E731
    device = next(actor.parameters()).device
    training_rng_state = np.random.get_state()  # building an env draws from it too
    n_envs = min(episodes, 20)
    envs = gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(n_envs)])
    eval_seed = args.seed if args.eval_seed is None else args.eval_seed
    results = {}
    for attacker in attackers or args.eval_attackers:
        generator = torch.Generator().manual_seed(eval_seed)
        returns, costs = [], []
        for first in range(0, episodes, n_envs):
            # bullet-safety-gym ignores reset(seed=...) and draws initial states from the global numpy RNG
            # every batch starts from one simulator state, whatever ran before it: a car's motors keep the
            # previous episode's last command through a reset, so reset, step with zero action, then reset again
            batch_seed = 10_000 + eval_seed * 1000 + first
            np.random.seed(batch_seed)
            envs.reset()
            envs.step(np.zeros((n_envs, *envs.single_action_space.shape)))
            np.random.seed(batch_seed)
            obs, _ = envs.reset(seed=[batch_seed + i for i in range(n_envs)])
            ep_ret, ep_cost = np.zeros(n_envs), np.zeros(n_envs)
            done = np.zeros(n_envs, bool)
            videos = EpisodeVideos(envs, args.video_episodes if video_dir and first == 0 else 0)
            while not done.all():
                videos.capture(done, ep_ret, ep_cost)
                obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
                obs_adv = perturb(attacker, obs_t, args.eps, policy, qr_fn, qc, args.attack_steps, args.attack_lr,
                                  generator)
                with torch.no_grad():
                    act = actor(obs_adv)[0].cpu().numpy()
                obs, rew, terminated, truncated, infos = envs.step(act)
                live = ~done
                ep_ret[live] += rew[live]
                ep_cost[live] += step_costs(infos, n_envs)[live]
                done |= terminated | truncated
            keep = min(n_envs, episodes - first)
            returns += ep_ret[:keep].tolist()
            costs += ep_cost[:keep].tolist()
            if videos.frames:
                videos.save(os.path.join(video_dir, attacker))
        results[attacker] = dict(return_mean=float(np.mean(returns)), return_std=float(np.std(returns)),
                                 cost_mean=float(np.mean(costs)), cost_std=float(np.std(costs)),
                                 episodes=len(returns), eps=args.eps if attacker != "none" else 0.0,
                                 attack_steps=args.attack_steps if attacker in ("mc", "mr", "mad") else 0,
                                 returns=returns, costs=costs)
    envs.close()
    np.random.set_state(training_rng_state)
    return results


def record(stats, values):
    """Add one update's losses to the epoch's lists; the epoch logs their means."""
    for key, value in values.items():
        stats.setdefault(key, []).append(value)


def write_atomic(path, write):
    """Write a file through a temp file and os.replace, so readers never see half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:  # Ctrl-C or a full disk: leave no temp file behind
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, (OSError, RuntimeError)):  # torch.save reports a failed write as a RuntimeError
            reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1]
            raise WriteError(f"cannot write {path!r} ({reason})") from exc
        raise


class WriteError(Exception):
    """A run's file could not be written (a full disk, a folder gone); the files before it stay whole."""


def write_json(path, data):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
    write_atomic(path, write)


def write_csv(path, rows):
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    write_atomic(path, write)


STATE_FILE = "train_state.pt"  # everything --resume needs, rewritten atomically at every epoch end


def drop_events_after(run_dir, step):
    """--resume: take the stopped session's TensorBoard points after the last epoch end out of the event files, so
    that every reader of them (not only TensorBoard, which the new writer's purge_step tells) sees each step once."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        records = list(RawEventFileLoader(path).Load())
        kept = [record for record in records if Event.FromString(record).step <= step]
        if len(kept) < len(records):
            def write(tmp):
                with open(tmp, "wb") as f:
                    writer = RecordWriter(f)
                    for record in kept:
                        writer.write(record)
            write_atomic(path, write)


def pack_numpy_rng(state):
    """np.random.get_state() in types that torch.load(weights_only=True) accepts."""
    name, keys, pos, has_gauss, gauss = state
    return name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss


def unpack_numpy_rng(state):
    name, keys, pos, has_gauss, gauss = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss


def rng_state(rng):
    return dict(python=random.getstate(), numpy=pack_numpy_rng(np.random.get_state()),
                generator=rng.bit_generator.state, torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def set_rng_state(state, rng):
    random.setstate(state["python"])
    np.random.set_state(unpack_numpy_rng(state["numpy"]))
    rng.bit_generator.state = state["generator"]
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def env_state(envs, obs):
    """What restore_envs needs, taken at an epoch end, where every env has just reset."""
    return dict(rng_before_reset=pack_numpy_rng(envs.envs[0].rng_before_reset),
                last_actions=torch.as_tensor(np.stack([env.last_action for env in envs.envs])),
                obs=torch.as_tensor(obs))


def restore_envs(envs, saved):
    """Bring just-reset fresh envs to where the saved ones stood after their last reset and return the observations:
    one step with the saved last actions (the motors' commands), then the reset from the saved RNG state."""
    envs.step(saved["last_actions"].numpy())
    np.random.set_state(unpack_numpy_rng(saved["rng_before_reset"]))
    obs, _ = envs.reset()
    if not np.array_equal(obs, saved["obs"].numpy()):
        print("warning: the envs could not be restored exactly (an episode was running at the last epoch end); "
              "the resumed run differs from the uninterrupted one", flush=True)
    return obs


def check_new_run_dir(run_dir):
    """A new run needs a directory without a run in it; the errors say how to continue or extend one instead."""
    if os.path.exists(os.path.join(run_dir, "eval.json")):
        fail(f"run directory {run_dir!r} already holds a finished run (eval.json); to extend it: "
             f"--resume {run_dir} --total-timesteps N")
    if any(os.path.exists(os.path.join(run_dir, name)) for name in (STATE_FILE, "progress.csv")):
        fail(f"run directory {run_dir!r} holds an unfinished run; continue it with --resume {run_dir}")
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        fail(f"run directory {run_dir!r} is a file")


def make_run_dir(run_dir):
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create run directory {run_dir!r}: {exc.strerror}")
    if not os.access(run_dir, os.W_OK):
        fail(f"run directory {run_dir!r} is not writable")


def load_train_state(run_dir):
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isfile(path):
        fail(f"--resume {run_dir!r}: no {STATE_FILE} there, so no run of {ALGO}.py to continue")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the same bad input to the user
        fail(f"--resume: {path!r} is not a readable training state ({type(exc).__name__})")
    if not isinstance(state, dict) or state.get("algo") != ALGO:
        other = state.get("algo", "another script") if isinstance(state, dict) else "another script"
        fail(f"--resume {run_dir!r} holds a run of {other}.py, not of {ALGO}.py")
    return state


# flags added since runs may have begun, each with the value that repeats such a run on --resume
ADDED_FLAGS = dict(preset="paper")
CLI_CONFIG = (tyro.conf.FlagCreatePairsOff,)  # a boolean flag is --flag alone, not --flag/--no-flag


def parse_args(argv=None):
    """The command line, and with --resume the run\'s training state. A resumed run keeps its stored arguments; a
    flag that changes one is an error, except --total-timesteps, which may grow to extend the run, and --device."""
    args = tyro.cli(Args, args=argv, description=__doc__.splitlines()[0], config=CLI_CONFIG)
    if args.resume is None:
        return args, None
    if args.eval_checkpoint is not None:
        fail("--resume continues training and cannot be combined with --eval-checkpoint")
    state = load_train_state(args.resume)
    stored_args = {**ADDED_FLAGS, **state["args"]}
    if set(stored_args) != {field.name for field in fields(Args)}:  # a flag added or removed since the run began
        fail(f"--resume {args.resume!r}: its stored arguments are not those of this version of {ALGO}.py")
    stored = Args(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored_args.items()})
    # with flag pairs, a boolean stored as True still takes the flag that set it (--no-adv-kl, not --no-no-adv-kl)
    resumed = tyro.cli(Args, args=argv, default=stored, description=__doc__.splitlines()[0])
    for name in (field.name for field in fields(Args)):
        if name not in ("resume", "run_dir", "output_dir", "total_timesteps", "device") and \
                getattr(resumed, name) != getattr(stored, name):
            fail(f"--{name.replace('_', '-')} {getattr(resumed, name)} conflicts with the run's own value "
                 f"{getattr(stored, name)}; a resumed run keeps its arguments (only --total-timesteps and --device "
                 f"may change)")
    if whole_episodes(resumed.total_timesteps, state["episode_steps"]) <= state["global_step"]:
        fail(f"the run in {args.resume!r} has already trained {state['global_step']} env steps; "
             f"raise --total-timesteps above that to extend it")
    resumed.run_dir = args.resume
    return resumed, state


def whole_episodes(steps, episode_steps):
    """steps rounded up to whole episodes in every env (episode_steps = envs x time limit): epochs and the run end
    on episode ends, where a resumed run restarts the simulator exactly."""
    return -(-steps // episode_steps) * episode_steps


def make_envs(args):
    """The training envs, after checking they are envs these scripts can train on."""
    envs = gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(args.num_envs)])
    action_space, obs_space = envs.single_action_space, envs.single_observation_space
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        fail(f"--env-id {args.env_id}: its action space {action_space} is not a continuous Box vector; "
             f"use a bullet-safety-gym Safety* env")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        fail(f"--env-id {args.env_id}: its observation space {obs_space} is not a Box vector")
    if envs.envs[0].spec.max_episode_steps is None:
        fail(f"--env-id {args.env_id}: it has no time limit (max_episode_steps), which epochs are counted in")
    return envs


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster's preemption): stops the run as Ctrl-C does, with the conventional exit status 143."""
    exit_status = 143


def interrupt(signum, frame):
    raise Terminated


def save_checkpoint(path, actor, qr1, qr2, qc, args, obs_dim, act_dim, global_step):
    checkpoint = dict(algo=ALGO, env_id=args.env_id, args=asdict(args), obs_dim=obs_dim, act_dim=act_dim,
                      global_step=global_step, **{name: {key: value.cpu() for key, value in net.state_dict().items()}
                                                  for name, net in (("actor", actor), ("qr1", qr1), ("qr2", qr2),
                                                                    ("qc", qc))})
    checkpoint["checksum"] = weights_checksum(checkpoint)
    write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))


def weights_checksum(checkpoint):
    """sha256 of the networks' tensors (the checkpoint's dicts of tensors, by name), written with model.pt: a file
    whose weights changed after it was written is refused instead of evaluated."""
    digest = hashlib.sha256()
    for name in sorted(k for k, v in checkpoint.items() if isinstance(v, dict) and v
                       and all(isinstance(t, torch.Tensor) for t in v.values())):
        for key in sorted(checkpoint[name]):
            digest.update(f"{name}.{key}".encode())
            digest.update(checkpoint[name][key].cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


CHECKPOINTS = "checkpoints"  # model.pt of every evaluation, for the selected-iterate protocol (tools/select_iterate.py)


def keep_checkpoint(run_dir, global_step):
    """A copy of model.pt as checkpoints/step{N}.pt, so every evaluated iterate can be selected after training."""
    folder = os.path.join(run_dir, CHECKPOINTS)

    def copy(tmp):
        os.makedirs(folder, exist_ok=True)
        shutil.copyfile(os.path.join(run_dir, "model.pt"), tmp)

    write_atomic(os.path.join(folder, f"step{global_step:010d}.pt"), copy)


def better_than_best(natural, best, cost_limit):
    """FSRL's rule for the best checkpoint: a feasible policy (cost <= limit) beats an infeasible one, and between
    two feasible or two infeasible ones the higher return wins. natural and best are (return, cost) or None."""
    if best is None:
        return True
    if best[1] > cost_limit:
        return natural[1] <= cost_limit or natural[0] > best[0]
    return natural[1] <= cost_limit and natural[0] > best[0]


def git_commit():
    """The commit this script was run from, with "+" if its .py files differ from it; None outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "*.py"], cwd=here,
                                 capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("+" if changed.stdout.strip() else "")


def eval_record(args, results, global_step):
    """eval.json: the results with what made them, the full arguments and the code's commit."""
    return dict(algo=ALGO, env_id=args.env_id, seed=args.seed, eval_seed=args.eval_seed, global_step=global_step,
                eps=args.eps, attack_steps=args.attack_steps, commit=git_commit(), args=asdict(args),
                results=results)


def load_checkpoint(args):
    """Load --eval-checkpoint, check it against the command line, and rebuild the actor and critics."""
    path = args.eval_checkpoint
    if os.path.isdir(path):
        fail(f"checkpoint {path!r} is a directory, not a model.pt file")
    if not os.path.isfile(path):
        fail(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the same bad input to the user
        fail(f"checkpoint {path!r} is not a readable torch checkpoint ({type(exc).__name__})")
    keys = ("algo", "env_id", "args", "obs_dim", "act_dim", "actor", "qr1", "qr2", "qc")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in keys):
        fail(f"checkpoint {path!r} is not a {ALGO}.py checkpoint (needs keys {', '.join(keys)})")
    if ckpt["algo"] != ALGO:
        fail(f"checkpoint {path!r} was written by {ckpt['algo']}.py, not {ALGO}.py")
    if "checksum" in ckpt and ckpt["checksum"] != weights_checksum(ckpt):
        fail(f"checkpoint {path!r} is corrupted: its weights do not match the checksum written with them")
    if not all(torch.isfinite(t).all() for v in ckpt.values() if isinstance(v, dict)
               for t in v.values() if isinstance(t, torch.Tensor)):
        fail(f"checkpoint {path!r} is corrupted: it holds non-finite weights")
    if args.env_id is not None and args.env_id != ckpt["env_id"]:
        fail(f"checkpoint {path!r} was trained on {ckpt['env_id']}, not on --env-id {args.env_id}")
    args.env_id, args.seed = ckpt["env_id"], ckpt["args"]["seed"]
    if args.eps is None:
        args.eps = ckpt["args"]["eps"]
    resolve_args(args)
    obs_dim, act_dim = ckpt["obs_dim"], ckpt["act_dim"]
    actor, qr1, qr2, qc = Actor(obs_dim, act_dim), QNetwork(obs_dim, act_dim), QNetwork(obs_dim, act_dim), \
        QNetwork(obs_dim, act_dim)
    try:
        for name, module in (("actor", actor), ("qr1", qr1), ("qr2", qr2), ("qc", qc)):
            module.load_state_dict(ckpt[name])
    except RuntimeError:
        fail(f"checkpoint {path!r} holds networks of another shape than {ALGO}.py builds")
    device = torch_device(args.device)
    return actor.to(device), qr1.to(device), qr2.to(device), qc.to(device), ckpt["global_step"]


def eval_checkpoint(args):
    actor, qr1, qr2, qc, global_step = load_checkpoint(args)
    out = args.eval_output or os.path.join(os.path.dirname(os.path.abspath(args.eval_checkpoint)),
                                           "eval_checkpoint.json")
    writable_file(out, "--eval-output")
    video_dir = os.path.join(os.path.dirname(os.path.abspath(out)), "videos") if args.capture_video else None
    results = evaluate(actor, qr1, qr2, qc, args, video_dir=video_dir)
    record = eval_record(args, results, global_step)
    write_json(out, record)
    for attacker, r in results.items():
        print(f"eval {attacker:8s} return {r['return_mean']:8.2f} +- {r['return_std']:.2f}  "
              f"cost {r['cost_mean']:6.2f} +- {r['cost_std']:.2f}")
    print(f"wrote {out}")


def torch_device(name):
    """--device: auto takes a GPU when torch sees one."""
    if name == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: torch sees no GPU here (torch.cuda.is_available() is False); use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(args, state=None):
    run_dir = args.run_dir or os.path.join(args.output_dir, f"{args.env_id}__{ALGO}__{args.seed}__{int(time.time())}")
    device = torch_device(args.device)
    if state is None:
        check_new_run_dir(run_dir)
    seed_everything(args.seed)
    envs = make_envs(args)
    obs_dim = envs.single_observation_space.shape[0]
    act_dim = envs.single_action_space.shape[0]
    horizon = envs.envs[0].spec.max_episode_steps
    qc_threshold = qc_threshold_for(args.cost_limit, args.gamma, horizon)
    episode_steps = args.num_envs * horizon
    epoch_steps = whole_episodes(args.steps_per_epoch, episode_steps)
    end_step = whole_episodes(args.total_timesteps, episode_steps)

    actor, target_actor = Actor(obs_dim, act_dim), Actor(obs_dim, act_dim)
    qr1, qr2, qc = QNetwork(obs_dim, act_dim), QNetwork(obs_dim, act_dim), QNetwork(obs_dim, act_dim)
    targets = [QNetwork(obs_dim, act_dim) for _ in range(3)]
    for target, source in zip([target_actor, *targets], [actor, qr1, qr2, qc]):
        target.load_state_dict(source.state_dict())
        target.requires_grad_(False)
    networks = dict(actor=actor, target_actor=target_actor, qr1=qr1, qr2=qr2, qc=qc, target_qr1=targets[0],
                    target_qr2=targets[1], target_qc=targets[2])
    for net in networks.values():
        net.to(device)
    # fused Adam: the default CPU kernels slow down ~10x on tiny second moments (sqrt of near-denormals)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr, fused=True)
    critic_opt = torch.optim.Adam([*qr1.parameters(), *qr2.parameters(), *qc.parameters()], lr=args.critic_lr,
                                  fused=True)
    buffer = ReplayBuffer(args.buffer_size, obs_dim, act_dim)
    rng = np.random.default_rng(args.seed)

    progress_rows, eval_rows, best = [], [], None
    dual_x = np.array([1.0, 1.0])  # E-step (eta, lam), warm start
    adam_dual = (AdamDual(dual_x, args.estep_dual_lr, args.estep_kl, qc_threshold, args.lam_max)
                 if args.estep_solver == "adam" else None)
    m_duals = [1.0, 1.0, 1.0, 1.0]  # robust M-step multipliers (beta_mean, beta_std, beta_adv, beta_adv_std)
    eps_t = 0.0
    ep_ret, ep_cost = np.zeros(args.num_envs), np.zeros(args.num_envs)
    epoch_returns, epoch_costs = [], []
    cumulative_cost, pending_updates, global_step, epoch, wall_time = 0.0, 0.0, 0, 0, 0.0
    stats = {}  # this epoch's values of each logged loss
    iteration_start_step = 0
    obs, _ = envs.reset(seed=[args.seed + i for i in range(args.num_envs)])
    resuming = state is not None and state["epoch"] > 0
    if resuming:
        for name, net in networks.items():
            net.load_state_dict(state["networks"][name])
        actor_opt.load_state_dict(state["optimizers"]["actor"])
        critic_opt.load_state_dict(state["optimizers"]["critic"])
        buffer.load_state_dict(state["buffer"])
        progress_rows, eval_rows, best = state["progress_rows"], state["eval_rows"], state["best"]
        dual_x, m_duals = np.array(state["dual_x"]), list(state["m_duals"]) + [1.0] * (4 - len(state["m_duals"]))
        if adam_dual is not None:
            adam_dual.load_state_dict(state["adam_dual"])
        cumulative_cost, pending_updates = state["cumulative_cost"], state["pending_updates"]
        global_step, epoch, wall_time = state["global_step"], state["epoch"], state["wall_time"]
        iteration_start_step, eps_t = state["iteration_start_step"], state["eps_t"]
        obs = restore_envs(envs, state["envs"])
        set_rng_state(state["rng"], rng)

    def training_state():
        return dict(algo=ALGO, args=asdict(args), episode_steps=episode_steps, epoch=epoch, global_step=global_step,
                    wall_time=wall_time, networks={name: net.state_dict() for name, net in networks.items()},
                    optimizers=dict(actor=actor_opt.state_dict(), critic=critic_opt.state_dict()),
                    buffer=buffer.state_dict(), progress_rows=progress_rows, eval_rows=eval_rows, best=best,
                    dual_x=dual_x.tolist(), adam_dual=adam_dual and adam_dual.state_dict(), m_duals=list(m_duals),
                    cumulative_cost=cumulative_cost, pending_updates=pending_updates,
                    iteration_start_step=iteration_start_step, eps_t=eps_t, envs=env_state(envs, obs),
                    rng=rng_state(rng))

    make_run_dir(run_dir)
    state_path = os.path.join(run_dir, STATE_FILE)
    if resuming:
        drop_events_after(run_dir, global_step)
    tracker = start_tracking(args, run_dir) if args.track else None
    writer = SummaryWriter(run_dir, purge_step=None if state is None else global_step + 1)
    if not resuming:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in
                                                                                vars(args).items()))
        write_atomic(state_path, lambda tmp: torch.save(dict(algo=ALGO, args=asdict(args), episode_steps=episode_steps,
                                                             epoch=0, global_step=0), tmp))
    if os.path.exists(os.path.join(run_dir, "eval.json")):
        os.remove(os.path.join(run_dir, "eval.json"))  # an extended run is unfinished again
    print(f"run directory: {run_dir}" + (f" (resumed at step {global_step:,}, epoch {epoch})" if resuming else ""),
          flush=True)
    if epoch_steps != args.steps_per_epoch or end_step != args.total_timesteps:
        print(f"epochs of {epoch_steps:,} env steps, {end_step:,} in all: whole episodes of {horizon} steps in each "
              f"of the {args.num_envs} envs", flush=True)
    session_start, session_start_step, saved_step, saved_epoch = time.time(), global_step, global_step, epoch
    epoch_time, epoch_start_step = time.time(), global_step

    try:
        while global_step < end_step:
            # the behaviour agent is never attacked: every stored transition is benign
            if global_step < args.learning_starts:
                act = rng.uniform(-1, 1, (args.num_envs, act_dim))
            else:
                with torch.no_grad():
                    mean, std = actor(torch.as_tensor(obs, dtype=torch.float32, device=device))
                    act = (mean + std * torch.randn_like(mean)).clamp(-1, 1).cpu().numpy()
            next_obs, rew, terminated, truncated, infos = envs.step(act)
            cost = step_costs(infos, args.num_envs)
            real_next_obs = next_obs.copy()
            for i in np.flatnonzero(infos.get("_final_observation", np.zeros(args.num_envs, bool))):
                real_next_obs[i] = infos["final_observation"][i]
            buffer.add(obs, act, rew, cost, real_next_obs, terminated)
            obs = next_obs
            global_step += args.num_envs
            cumulative_cost += float(cost.sum())
            ep_ret += rew
            ep_cost += cost
            for i in np.flatnonzero(terminated | truncated):
                writer.add_scalar("charts/episodic_return", ep_ret[i], global_step)
                writer.add_scalar("charts/episodic_cost", ep_cost[i], global_step)
                writer.add_scalar("charts/cumulative_cost", cumulative_cost, global_step)
                epoch_returns.append(ep_ret[i])
                epoch_costs.append(ep_cost[i])
                ep_ret[i] = ep_cost[i] = 0.0

            if global_step >= args.learning_starts:
                pending_updates += args.num_envs * args.updates_per_step
                while pending_updates >= 1:
                    pending_updates -= 1
                    batch = buffer.sample(args.batch_size, rng, device)
                    loss_qr, loss_qc = update_critics(batch, qr1, qr2, qc, targets, target_actor, critic_opt,
                                                      args.gamma)
                    particles, weights, eta, lam = e_step(batch.obs, target_actor, *targets, args.num_particles,
                                                          args.estep_kl, qc_threshold, dual_x, args.lam_max, adam_dual)
                    dual_x = np.array([eta, lam])
                    # Algorithm 2, line 17: nu_MC(s_n) once per update, against the current policy and cost critic
                    obs_adv = critic_attack(batch.obs, eps_t, actor, qc, args.train_attack_steps, args.attack_lr)
                    kls = robust_m_step(actor, target_actor, actor_opt, batch.obs, obs_adv, particles, weights,
                                        m_duals, args)
                    for target, source in zip(targets, [qr1, qr2, qc]):
                        soft_update(target, source, args.polyak)
                    if global_step - iteration_start_step >= args.iteration_steps:
                        target_actor.load_state_dict(actor.state_dict())  # Algorithm 2, line 22
                        iteration_start_step = global_step
                    record(stats, {f"losses/{key}": value for key, value in kls.items()})
                    record(stats, {"losses/qr": loss_qr, "losses/qc": loss_qc, "losses/eta": eta, "losses/lam": lam,
                                   "losses/beta_mean": m_duals[0], "losses/beta_std": m_duals[1],
                                   "losses/beta_adv": m_duals[2], "losses/beta_adv_std": m_duals[3]})

            if global_step - epoch_start_step >= epoch_steps or global_step >= end_step:
                epoch += 1
                sps = (global_step - epoch_start_step) / (time.time() - epoch_time)
                writer.add_scalar("charts/SPS", sps, global_step)
                writer.add_scalar("charts/eps_t", eps_t, global_step)
                epoch_stats = {key: float(np.mean(values)) for key, values in stats.items()}
                stats = {}
                for key, value in epoch_stats.items():
                    writer.add_scalar(key, value, global_step)
                mean_ret = float(np.mean(epoch_returns)) if epoch_returns else float("nan")
                mean_cost = float(np.mean(epoch_costs)) if epoch_costs else float("nan")
                wall_time += time.time() - epoch_time
                progress_rows.append(dict(epoch=epoch, global_step=global_step, episodic_return=mean_ret,
                                          episodic_cost=mean_cost, cumulative_cost=cumulative_cost,
                                          SPS=round(sps, 1), wall_time=round(wall_time, 1)))
                write_csv(os.path.join(run_dir, "progress.csv"), progress_rows)
                if epoch_start_step < args.learning_starts:  # random actions: faster than the epochs to come
                    session_start, session_start_step = time.time(), global_step
                minutes_left = ((time.time() - session_start) / 60 * (end_step - global_step)
                                / max(global_step - session_start_step, 1))
                eta = f"ETA {minutes_left:.1f} min" if global_step > session_start_step else "ETA after updates start"
                print(f"epoch {epoch} | step {global_step:,}/{end_step:,} ({100 * global_step / end_step:.0f}%) | "
                      f"{wall_time / 60:.1f} min, {eta} | SPS {sps:.0f} | return {mean_ret:.1f} "
                      f"cost {mean_cost:.2f} | E-step temperature {dual_x[0]:.3g} lam {dual_x[1]:.3g} | "
                      f"eps_t {eps_t:.3g} kl_adv {epoch_stats.get('losses/kl_adv', 0):.3g} beta_adv {m_duals[2]:.3g} "
                      f"std {epoch_stats.get('losses/std', 0):.3g}", flush=True)
                epoch_returns, epoch_costs = [], []
                eps_t = eps_schedule(epoch, args.eps, args.adv_start_epoch, args.adv_ramp_epochs)
                last = global_step >= end_step
                eval_start = time.time()
                if last or (args.eval_every and epoch % args.eval_every == 0):
                    save_checkpoint(os.path.join(run_dir, "model.pt"), actor, qr1, qr2, qc, args, obs_dim, act_dim,
                                    global_step)
                    keep_checkpoint(run_dir, global_step)
                    attackers, episodes = ((None, None) if last
                                           else (args.eval_every_attackers, args.eval_every_episodes))
                    video_dir = os.path.join(run_dir, "videos") if last and args.capture_video else None
                    results = evaluate(actor, qr1, qr2, qc, args, attackers, episodes, video_dir)
                    if video_dir and tracker:
                        track_videos(tracker, video_dir)
                    for attacker, r in results.items():
                        writer.add_scalar(f"eval/{attacker}/return", r["return_mean"], global_step)
                        writer.add_scalar(f"eval/{attacker}/cost", r["cost_mean"], global_step)
                        eval_rows.append(dict(epoch=epoch, global_step=global_step,
                                              wall_time=progress_rows[-1]["wall_time"], attacker=attacker,
                                              return_mean=r["return_mean"], cost_mean=r["cost_mean"],
                                              episodes=r["episodes"]))
                        print(f"eval {attacker:8s} return {r['return_mean']:8.2f} +- {r['return_std']:.2f}  "
                              f"cost {r['cost_mean']:6.2f} +- {r['cost_std']:.2f}", flush=True)
                    write_csv(os.path.join(run_dir, "evals.csv"), eval_rows)
                    natural = results.get("none")
                    if natural and better_than_best((natural["return_mean"], natural["cost_mean"]), best,
                                                    args.cost_limit):
                        best = (natural["return_mean"], natural["cost_mean"])
                        save_checkpoint(os.path.join(run_dir, "model_best.pt"), actor, qr1, qr2, qc, args, obs_dim,
                                        act_dim, global_step)
                        print(f"model_best.pt: return {best[0]:.2f} cost {best[1]:.2f} at step {global_step}",
                              flush=True)
                    if last:
                        write_json(os.path.join(run_dir, "eval.json"), eval_record(args, results, global_step))
                wall_time += time.time() - eval_start
                write_atomic(state_path, lambda tmp: torch.save(training_state(), tmp))
                saved_step, saved_epoch = global_step, epoch
                epoch_start_step, epoch_time = global_step, time.time()  # evaluation time is not training time
    except KeyboardInterrupt as stop:
        print(f"{ALGO}.py: stopped at step {global_step:,} of {end_step:,}; continue from the last epoch end "
              f"(step {saved_step:,}) with: python {ALGO}.py --resume {run_dir}", file=sys.stderr, flush=True)
        sys.exit(getattr(stop, "exit_status", 130))
    except TrainingError as exc:
        print(f"{ALGO}.py: error: {exc} at step {global_step:,}", file=sys.stderr, flush=True)
        sys.exit(1)
    except WriteError as exc:
        print(f"{ALGO}.py: error: {exc} at step {global_step:,}; the last good state is step {saved_step:,}, epoch "
              f"{saved_epoch}; make room and continue with: python {ALGO}.py --resume {run_dir}", file=sys.stderr,
              flush=True)
        sys.exit(1)
    envs.close()
    writer.close()
    if tracker:
        tracker.finish()
    print(f"run directory: {run_dir}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupt)  # a cluster's preemption stops the run as Ctrl-C does
    try:
        args, state = parse_args()
        torch.set_num_threads(max(1, args.threads))
        if args.eval_checkpoint:
            eval_checkpoint(args)
        else:
            train(resolve_args(args), state)
    except KeyboardInterrupt as stop:
        print(f"{ALGO}.py: stopped before the first epoch ended", file=sys.stderr)
        sys.exit(getattr(stop, "exit_status", 130))
    except WriteError as exc:
        raise SystemExit(f"{ALGO}.py: error: {exc}")
