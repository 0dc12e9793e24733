"""Time to a good policy, side by side: cvpo.py against FSRL's CVPO, safer.py against cvpo.py, or cvpo.py against
itself with other flags, on one env, one process per core for the same wall time.

Both runs start together. Each one's deterministic evaluation (ours: 2 episodes after every epoch; FSRL's: its
2 test episodes after each of its epochs) is stamped with the wall time since the start and its env steps. Printed:
when each first reaches a reward of 200 and 250 with cost <= the limit, its training speed, and the spread of its
last ten evaluations; written: the points (JSON) and the two curves against wall time and env steps (PNG).

    python benchmarks/time_to_quality.py --pair cvpo-fsrl --fsrl ~/FSRL --fsrl-python ~/fsrl-venv/bin/python \
        --minutes 21
    python benchmarks/time_to_quality.py --pair safer-cvpo --minutes 60
    python benchmarks/time_to_quality.py --pair cvpo-cvpo --extra-second='--preset fast'

FSRL is not a dependency: clone it (github.com/liuzuxin/FSRL) and install it in a venv of its own
(pip install torch==2.13.0 ./FSRL bullet-safety-gym==1.4.0); --fsrl-python is that venv's python.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Args:
    pair: Literal["cvpo-fsrl", "safer-cvpo", "cvpo-cvpo"] = "cvpo-fsrl"
    """what runs against what"""
    minutes: float = 21.0
    """wall time of both runs"""
    env_id: str = "SafetyCarCircle-v0"
    """bullet-safety-gym env id"""
    seeds: tuple[int, ...] = (1,)
    """seeds: for each, the two runs side by side (one pair after the other); the summary gives the median and range
    over the seeds"""
    cost_limit: float = 5.0
    """episodic cost limit of both runs, and of the quality targets"""
    targets: tuple[float, ...] = (200.0, 250.0)
    """reward levels whose first time (with cost <= --cost-limit) is reported"""
    fsrl: Optional[str] = None
    """path of an FSRL checkout (with --pair cvpo-fsrl)"""
    fsrl_python: str = sys.executable
    """python of the venv FSRL is installed in"""
    extra: str = ""
    """extra flags for our script(s), e.g. --extra='--mstep-iters 5'"""
    extra_second: str = ""
    """flags of the second cvpo.py run, in place of --extra (with --pair cvpo-cvpo)"""
    output_dir: Optional[str] = None
    """where the runs, points.json and curves.png go (default: a new folder under runs/)"""


def fail(message):
    raise SystemExit(f"time_to_quality.py: error: {message}")


OUR_EPOCH = re.compile(r"^epoch \d+ \| step ([\d,]+)/")
OUR_EVAL = re.compile(r"^eval none\s+return\s+(-?[\d.]+) \+- [\d.]+\s+cost\s+(-?[\d.]+)")
FSRL_NUMBER = r"(-?[\d.]+(?:e[-+]?\d+)?)"


def our_command(script, args, seed, run_dir, extra=None):
    return [sys.executable, os.path.join(ROOT, script), "--env-id", args.env_id, "--seed", str(seed),
            "--cost-limit", str(args.cost_limit), "--total-timesteps", "100000000", "--eval-every", "1",
            "--eval-every-attackers", "none", "--eval-every-episodes", "2", "--run-dir", run_dir,
            *(args.extra if extra is None else extra).split()]


def fsrl_command(args, seed, log_dir):
    script = os.path.join(args.fsrl, "examples", "mlp", "train_cvpo_agent.py")
    return [args.fsrl_python, script, "--task", args.env_id, "--cost_limit", str(args.cost_limit), "--seed",
            str(seed), "--training_num", "2", "--thread", "1", "--logdir", log_dir, "--verbose", "True"]


class Run:
    """A training process whose stdout is read line by line, each evaluation stamped with the time since start."""

    def __init__(self, name, cmd, log_path, start):
        self.name, self.points, self.start, self.step = name, [], start, 0
        self.log = open(log_path, "w")
        env = dict(os.environ, **THREAD_ENV, WANDB_MODE="offline")
        # in the output folder, where FSRL's logger writes its wandb/ folder
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=os.path.dirname(log_path), env=env, start_new_session=True)
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()
            self.parse(line.strip())

    def add(self, reward, cost):
        self.points.append(dict(minutes=(time.time() - self.start) / 60, env_steps=self.step, reward=reward,
                                cost=cost))

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(timeout=10)
        self.log.close()


class OurRun(Run):
    def parse(self, line):
        if match := OUR_EPOCH.match(line):
            self.step = int(match.group(1).replace(",", ""))
        elif match := OUR_EVAL.match(line):
            self.add(float(match.group(1)), float(match.group(2)))


class FsrlRun(Run):
    """FSRL's verbose epoch summary is a table of `| key | value |` rows (test/reward, test/cost, update/env_step,
    the last with 3 significant digits) followed by an `Epoch: N {...}` line."""

    ROW = re.compile(rf"^\|\s*([\w/]+)\s*\|\s*{FSRL_NUMBER}\s*\|$")

    def parse(self, line):
        if match := self.ROW.match(line):
            self.table = getattr(self, "table", {})
            self.table[match.group(1)] = float(match.group(2))
        elif line.startswith("Epoch: ") and getattr(self, "table", None):
            self.step = int(self.table.get("update/env_step", self.step))
            if "test/reward" in self.table and "test/cost" in self.table:
                self.add(self.table["test/reward"], self.table["test/cost"])
            self.table = {}


def first_time(points, target, cost_limit):
    for p in points:
        if p["reward"] >= target and p["cost"] <= cost_limit:
            return p
    return None


def metrics(points, args):
    """env steps/s over the run, and per target the first (minutes, env steps) at it with cost <= the limit."""
    out = dict(sps=(points[-1]["env_steps"] if points else 0) / (args.minutes * 60))
    for target in args.targets:
        hit = first_time(points, target, args.cost_limit)
        out[target] = (hit["minutes"], hit["env_steps"]) if hit else None
    return out


def across_seeds(name, per_seed, args):
    """Median and range over the seeds of a run's speed and time to each target (a seed that never reached a
    target counts as later than any that did: the median is 'not reached' if half the seeds or more missed)."""
    n = len(per_seed)
    sps = [m["sps"] for m in per_seed]
    lines = [f"{name} over {n} seed(s): env steps/s median {np.median(sps):.0f} (range {min(sps):.0f}-{max(sps):.0f})"]
    for target in args.targets:
        hits = sorted((m[target] for m in per_seed if m[target]), key=lambda h: h[0])
        minutes = [h[0] for h in hits] + [np.inf] * (n - len(hits))
        steps = sorted(h[1] for h in hits) + [np.inf] * (n - len(hits))
        median_min, median_steps = np.median(minutes), np.median(steps)
        lines.append(f"  first {target:g} with cost <= {args.cost_limit:g}: reached by {len(hits)} of {n}; median " +
                     (f"{median_min:.1f} min, {median_steps:,.0f} env steps" if np.isfinite(median_min)
                      else "not reached") +
                     (f" (range {hits[0][0]:.1f}-{hits[-1][0]:.1f} min)" if hits else ""))
    return "\n".join(lines)


def summary(run, args):
    points = run.points
    lines = [f"{run.name}: {len(points)} evaluations, {points[-1]['env_steps'] if points else 0:,} env steps "
             f"in {args.minutes:g} min ({(points[-1]['env_steps'] if points else 0) / (args.minutes * 60):.0f} "
             f"env steps/s)"]
    for target in args.targets:
        hit = first_time(points, target, args.cost_limit)
        lines.append(f"  first {target:g} with cost <= {args.cost_limit:g}: " +
                     (f"{hit['minutes']:.1f} min, {hit['env_steps']:,} env steps" if hit else "not reached"))
    last = points[-10:]
    if last:
        rewards = [p["reward"] for p in last]
        lines.append(f"  last {len(last)} evaluations: reward {np.mean(rewards):.1f} +- {np.std(rewards):.1f} "
                     f"(min {min(rewards):.1f}, max {max(rewards):.1f}), cost "
                     f"{np.mean([p['cost'] for p in last]):.2f}")
    return "\n".join(lines)


def plot(runs, path, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex="col")
    for run in runs:
        for col, x in enumerate(("minutes", "env_steps")):
            xs = [p[x] for p in run.points]
            axes[0, col].plot(xs, [p["reward"] for p in run.points], marker=".", label=run.name)
            axes[1, col].plot(xs, [p["cost"] for p in run.points], marker=".", label=run.name)
    for col, label in enumerate(("wall time (minutes)", "env steps")):
        axes[1, col].set_xlabel(label)
        axes[1, col].axhline(args.cost_limit, color="grey", lw=0.8, ls="--")
    axes[0, 0].set_ylabel("deterministic evaluation reward")
    axes[1, 0].set_ylabel("evaluation cost")
    axes[0, 0].legend()
    fig.suptitle(f"{args.env_id}, seed {run.seed}, side by side for {args.minutes:g} minutes")
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=100)
    os.replace(path + ".tmp.png", path)


def main(args):
    if args.minutes <= 0:
        fail(f"--minutes must be > 0, got {args.minutes}")
    if args.pair == "cvpo-cvpo" and args.extra_second.split() == args.extra.split():
        fail(f"--pair cvpo-cvpo needs --extra-second flags other than --extra's ({args.extra_second!r} given): "
             "the second run's setting")
    if args.pair == "cvpo-fsrl" and args.fsrl is None:
        fail("--pair cvpo-fsrl needs --fsrl PATH (an FSRL checkout) and --fsrl-python (its venv's python)")
    if args.pair == "cvpo-fsrl" and not os.path.isfile(os.path.join(args.fsrl, "examples", "mlp",
                                                                    "train_cvpo_agent.py")):
        fail(f"--fsrl {args.fsrl!r}: no examples/mlp/train_cvpo_agent.py there (an FSRL checkout is needed)")
    if not args.seeds:
        fail("--seeds needs at least one seed")
    # absolute: each run's working directory is the output folder
    default_out = os.path.join(ROOT, "runs", f"time_to_quality_{args.pair}_{int(time.time())}")
    out = os.path.abspath(args.output_dir or default_out)
    per_seed, points = {}, {}
    for seed in args.seeds:
        runs = run_pair(args, seed, os.path.join(out, f"seed{seed}"))
        print("\n".join(summary(run, args) for run in runs), flush=True)
        for run in runs:
            per_seed.setdefault(run.name, []).append(metrics(run.points, args))
            points.setdefault(run.name, {})[seed] = run.points
    with open(os.path.join(out, "points.json.tmp"), "w") as f:
        json.dump(points, f, indent=1)
    os.replace(os.path.join(out, "points.json.tmp"), os.path.join(out, "points.json"))
    print("\n".join(across_seeds(name, metrics_, args) for name, metrics_ in per_seed.items()))
    print(f"wrote {out}/points.json and seed*/curves.png")


def run_pair(args, seed, out):
    """The pair of runs side by side for --minutes, from seed `seed`, in out/; returns the finished runs."""
    os.makedirs(out, exist_ok=True)
    start = time.time()
    if args.pair == "cvpo-fsrl":
        runs = [OurRun("cvpo.py", our_command("cvpo.py", args, seed, os.path.join(out, "cvpo")),
                       os.path.join(out, "cvpo.log"), start),
                FsrlRun("FSRL CVPO", fsrl_command(args, seed, tempfile.mkdtemp(dir=out)),
                        os.path.join(out, "fsrl.log"), start)]
    elif args.pair == "safer-cvpo":
        runs = [OurRun(name, our_command(name, args, seed, os.path.join(out, name.removesuffix(".py"))),
                       os.path.join(out, name.replace(".py", ".log")), start) for name in ("safer.py", "cvpo.py")]
    else:
        runs = [OurRun(f"cvpo.py {args.extra.strip()}".strip(),
                       our_command("cvpo.py", args, seed, os.path.join(out, "cvpo")), os.path.join(out, "cvpo.log"),
                       start),
                OurRun(f"cvpo.py {args.extra_second.strip()}",
                       our_command("cvpo.py", args, seed, os.path.join(out, "cvpo_second"), args.extra_second),
                       os.path.join(out, "cvpo_second.log"), start)]
    for run in runs:
        run.seed = seed
    try:
        while time.time() - start < args.minutes * 60 and any(r.proc.poll() is None for r in runs):
            time.sleep(5)
    finally:
        for run in runs:
            run.stop()
    for run in runs:
        if not run.points:
            print(f"warning: no evaluation parsed from {run.name}; see {run.log.name}", file=sys.stderr)
    plot(runs, os.path.join(out, "curves.png"), args)
    return runs


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
