"""The selected-iterate protocol: the authors' rule for the best epoch, then a fresh evaluation of that iterate.

eval.json reports the last iterate ("final"). The paper does not say which iterate its tables report; the authors'
robust off-policy configuration keeps the epoch with the best score = sum over the natural and attacked
evaluations of (reward / 20 - cost). This applies that rule to a run's periodic evaluations (evals.csv, the
attackers of --attackers, every evaluation that has all of them and a kept checkpoint, checkpoints/step{N}.pt),
then evaluates the chosen iterate again on --episodes fresh episodes per attacker with another evaluation seed
(the training seed + --eval-seed-offset), so the numbers it reports are not those the choice was made on. Writes
selected.json in the run directory (atomically): the rule, every candidate's score, the chosen step and its fresh
evaluation.

    python tools/select_iterate.py --run-dirs results/SafetyCarCircle-v0/safer/seed1 \
        results/SafetyCarCircle-v0/cvpo/seed1
"""

import csv
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import tyro

from sweep import SCRIPTS  # tools/ is this script's folder, so on its path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    run_dirs: tuple[str, ...]
    """run directories with evals.csv and checkpoints/ (runs made with --eval-every)"""
    attackers: tuple[str, ...] = ("none", "mc", "mr")
    """evaluations whose scores are summed (each candidate evaluation must have all of them)"""
    reward_scale: float = 20.0
    """score = sum over the attackers of reward / reward_scale - cost (the authors' rule: 20)"""
    episodes: int = 50
    """episodes per attacker of the fresh evaluation"""
    eval_seed_offset: int = 1000
    """the fresh evaluation's seed is the training seed plus this"""


def fail(message):
    raise SystemExit(f"select_iterate.py: error: {message}")


def candidates(run_dir, attackers, reward_scale):
    """{step: score} over the evaluations of evals.csv that have every attacker and a kept checkpoint."""
    path = os.path.join(run_dir, "evals.csv")
    if not os.path.isfile(path):
        fail(f"{run_dir!r} has no evals.csv (train with --eval-every N)")
    by_step = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            by_step.setdefault(int(row["global_step"]), {})[row["attacker"]] = (float(row["return_mean"]),
                                                                               float(row["cost_mean"]))
    scores = {}
    for step, results in sorted(by_step.items()):
        if all(a in results for a in attackers) and os.path.isfile(checkpoint_path(run_dir, step)):
            scores[step] = sum(results[a][0] / reward_scale - results[a][1] for a in attackers)
    if not scores:
        fail(f"{run_dir!r}: no evaluation has all of {', '.join(attackers)} and a kept checkpoint in checkpoints/ "
             f"(train with --eval-every N --eval-every-attackers {' '.join(attackers)})")
    return scores


def checkpoint_path(run_dir, step):
    return os.path.join(run_dir, "checkpoints", f"step{step:010d}.pt")


def select(run_dir, args):
    scores = candidates(run_dir, args.attackers, args.reward_scale)
    step = max(scores, key=lambda s: (scores[s], -s))  # ties: the earlier iterate
    with open(os.path.join(run_dir, "eval.json")) as f:
        final = json.load(f)
    script = final["algo"]
    if script not in SCRIPTS:
        fail(f"{run_dir!r}: eval.json names {script!r}, not one of {', '.join(SCRIPTS)}")
    eval_seed = final["seed"] + args.eval_seed_offset
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "eval.json")
        proc = subprocess.run([sys.executable, os.path.join(ROOT, f"{script}.py"), "--eval-checkpoint",
                               checkpoint_path(run_dir, step), "--eval-episodes", str(args.episodes),
                               "--eval-attackers", *args.attackers, "--eval-seed", str(eval_seed), "--eval-output",
                               out], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            fail(f"{run_dir!r}: evaluating step {step}: {proc.stderr.strip().splitlines()[-1]}")
        with open(out) as f:
            fresh = json.load(f)
    record = dict(rule=f"max over evaluations of sum over {', '.join(args.attackers)} of reward / "
                       f"{args.reward_scale:g} - cost", attackers=list(args.attackers), step=step, score=scores[step],
                  scores={str(s): v for s, v in scores.items()}, eval_seed=eval_seed, episodes=args.episodes,
                  final_step=final["global_step"], results=fresh["results"])
    path = os.path.join(run_dir, "selected.json")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)
    cells = " | ".join(f"{a} {r['return_mean']:.1f} / {r['cost_mean']:.2f}" for a, r in fresh["results"].items())
    print(f"{run_dir}: step {step:,} of {final['global_step']:,} (score {scores[step]:.2f}): {cells}", flush=True)


def main(args):
    if not args.run_dirs:
        fail("--run-dirs needs at least one run directory")
    if args.episodes <= 0 or not args.reward_scale > 0:
        fail(f"--episodes and --reward-scale must be positive, got {args.episodes} and {args.reward_scale}")
    for run_dir in args.run_dirs:
        if not os.path.isfile(os.path.join(run_dir, "eval.json")):
            fail(f"{run_dir!r} holds no finished run (eval.json)")
    for run_dir in args.run_dirs:
        select(run_dir, args)


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
