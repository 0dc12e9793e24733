"""Time to target: when a run's deterministic policy first reached a reward and cost target, the way FSRL's trainers
are compared here (test episodes during training, first evaluation with reward >= R and cost <= C).

Reads each run directory's evals.csv (written by every script; one row per evaluation and attacker, so pass
--eval-every N to get a curve) and prints, per run, the first evaluation that meets the target, how many of its
evaluations did, and the last one. Training episodes (progress.csv) are reported the same way beside it, since
a stochastic policy can meet a cost limit that its mean action breaks.

    python -m tools.diagnostics.time_to_target --run-dirs results/SafetyCarCircle-v0/cvpo/seed1 [--reward 250 --cost 5]
"""

import csv
import os
from dataclasses import dataclass

import tyro


@dataclass
class Args:
    run_dirs: tuple[str, ...]
    """run directories holding evals.csv (and progress.csv)"""
    reward: float = 250.0
    """target: mean episodic return at least this"""
    cost: float = 5.0
    """target: mean episodic cost at most this"""
    attacker: str = "none"
    """the evaluation rows to read (none: natural, no attack)"""


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def first_hit(rows, reward, cost, return_key, cost_key):
    """(first row meeting reward >= R and cost <= C or None, number of rows meeting it)."""
    hits = [r for r in rows if float(r[return_key]) >= reward and float(r[cost_key]) <= cost]
    return (hits[0] if hits else None), len(hits)


def describe(row, return_key, cost_key):
    if row is None:
        return "never"
    return (f"{float(row[return_key]):.1f} / {float(row[cost_key]):.2f} at {int(row['global_step']):,} steps, "
            f"{float(row['wall_time']) / 60:.1f} min")


def report_run(run_dir, args):
    """The lines printed for one run directory; fails with a one-line error without evals.csv."""
    evals_path = os.path.join(run_dir, "evals.csv")
    if not os.path.isfile(evals_path):
        raise SystemExit(f"time_to_target.py: error: {run_dir!r} has no evals.csv (a run of an older version, "
                         f"or not a run directory)")
    evals = [r for r in read_rows(evals_path) if r["attacker"] == args.attacker]
    if not evals:
        raise SystemExit(f"time_to_target.py: error: {evals_path!r} has no rows of attacker {args.attacker!r}")
    hit, count = first_hit(evals, args.reward, args.cost, "return_mean", "cost_mean")
    lines = [f"{run_dir}:",
             f"  evaluation ({args.attacker}, {evals[-1]['episodes']} episodes): "
             f"first {describe(hit, 'return_mean', 'cost_mean')}; {count} of {len(evals)} evaluations meet it; "
             f"last {describe(evals[-1], 'return_mean', 'cost_mean')}"]
    progress_path = os.path.join(run_dir, "progress.csv")
    if os.path.isfile(progress_path):
        epochs = read_rows(progress_path)
        hit, count = first_hit(epochs, args.reward, args.cost, "episodic_return", "episodic_cost")
        lines.append(f"  training episodes (per epoch): first {describe(hit, 'episodic_return', 'episodic_cost')}; "
                     f"{count} of {len(epochs)} epochs meet it")
    return "\n".join(lines)


def main(args):
    print(f"target: return >= {args.reward:g}, cost <= {args.cost:g}")
    for run_dir in args.run_dirs:
        print(report_run(run_dir, args))


if __name__ == "__main__":
    main(tyro.cli(Args))
