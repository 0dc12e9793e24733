"""Does a code change keep every script's results? The same tiny runs with two checkouts, their files compared.

A refactor must not change what a script computes. This runs, for each script, a few tiny Ball-Circle runs (one
env, 1,000 env steps, evaluations under none and MC) once with the scripts of --before (another checkout, e.g.
`git worktree add /tmp/before HEAD~1`) and once with those of --after (default: this checkout), on this machine,
and compares what they wrote: progress.csv without its timing columns (SPS, wall_time), evals.csv without
wall_time, and eval.json's results and step. Prints one line per run and exits 1 if any differ. Runs differ in
their last bits between CPUs, so both sides must run on the same machine, as here.

    git worktree add /tmp/before HEAD~1
    python tools/same_results.py --before /tmp/before
"""

import csv
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--env-id", "SafetyBallCircle-v0", "--num-envs", "1", "--steps-per-epoch", "200", "--total-timesteps", "1000",
        "--eval-episodes", "2", "--attack-steps", "3", "--eval-every", "2", "--eval-every-attackers", "none", "mc"]
OFF_POLICY = ["--learning-starts", "200", "--batch-size", "32", "--num-particles", "8", "--updates-per-step", "0.05"]
RAMP = ["--adv-start-epoch", "1", "--adv-ramp-epochs", "2", "--train-attack-steps", "2"]
ON_POLICY = ["--actor-steps", "3", "--critic-steps", "3", "--q-steps", "3"]
# each script's tiny runs: its default, and each of its modes that takes another code path
CASES = {
    "cvpo": [OFF_POLICY, OFF_POLICY + ["--random-noise"]],
    "safer": [OFF_POLICY + RAMP, OFF_POLICY + RAMP + ["--no-adv-kl", "--no-adv-mle"]],
    "adv_cvpo": [OFF_POLICY + RAMP, OFF_POLICY + RAMP + ["--attack-buffer"]],
    "ppol": [ON_POLICY],
    "sa_ppol": [ON_POLICY + ["--train-attack-steps", "2"]],
    "adv_ppol": [ON_POLICY + ["--train-attack-steps", "2"]],
}


@dataclass
class Args:
    before: str
    """a checkout of the code to compare with (its scripts run from there)"""
    after: str = ROOT
    """the checkout with the change (default: this one)"""
    scripts: tuple[str, ...] = tuple(CASES)
    """the scripts to compare"""
    extra: Optional[str] = None
    """flags added to every run of both sides, e.g. "--std-fit executed" for a mode of one script"""


def fail(message):
    raise SystemExit(f"same_results.py: error: {message}")


def table(path, drop):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def outputs(run_dir):
    """What a run computed: its progress and evaluation rows without timings, and its final evaluation."""
    record = json.load(open(os.path.join(run_dir, "eval.json")))
    return (table(os.path.join(run_dir, "progress.csv"), ("SPS", "wall_time")),
            table(os.path.join(run_dir, "evals.csv"), ("wall_time",)), record["results"], record["global_step"])


def run(checkout, script, flags, run_dir):
    proc = subprocess.run([sys.executable, os.path.join(checkout, f"{script}.py"), *flags, "--run-dir", run_dir],
                          cwd=checkout, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"  {script}.py in {checkout} failed: {last}", flush=True)
        return None
    return outputs(run_dir)


def main(args):
    unknown = [s for s in args.scripts if s not in CASES]
    if unknown:
        fail(f"unknown script {unknown[0]!r}; allowed: {', '.join(CASES)}")
    for checkout in (args.before, args.after):
        for script in args.scripts:
            if not os.path.isfile(os.path.join(checkout, f"{script}.py")):
                fail(f"{checkout!r} is not a checkout of this project (no {script}.py there)")
    extra = args.extra.split() if args.extra else []
    differing = 0
    with tempfile.TemporaryDirectory() as tmp:
        for script in args.scripts:
            for i, flags in enumerate(CASES[script]):
                flags = TINY + flags + extra
                results = [run(checkout, script, flags, os.path.join(tmp, side, f"{script}{i}"))
                           for side, checkout in (("before", args.before), ("after", args.after))]
                same = results[0] is not None and results[0] == results[1]
                differing += not same
                print(f"{script}.py {' '.join(flags[len(TINY):])}: {'identical' if same else 'DIFFERENT'}",
                      flush=True)
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
