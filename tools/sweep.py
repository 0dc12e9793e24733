"""Sweep runner: a grid of methods x env ids x seeds, a pool of worker processes, resumable.

Each run writes into results/<env-id>/<method>/seed<N>/ (its run directory: progress.csv, eval.json, model.pt,
TensorBoard events, train.log). A run whose eval.json exists is skipped and an unfinished one (train_state.pt, no
eval.json) continues with --resume from its last epoch end, so an interrupted sweep goes on where it stopped; a
failed run is reported with its log path and the others go on.

    python tools/sweep.py --methods safer cvpo --env-ids SafetyCarCircle-v0 --seeds 1 2 3 \
        --extra='--total-timesteps 100000'
"""

import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The methods, in the paper's order: directory name under results/<env-id>/ -> (script, its flags, label). The
# report reads this list too.
METHODS = {
    "safer": ("safer.py", [], "SAFER"),
    "safer_no_vm": ("safer.py", ["--no-vanilla-mstep"], "SAFER w/o vanilla M-step"),
    "safer_no_kl": ("safer.py", ["--no-adv-kl"], "SAFER w/o adv. KL"),
    "safer_no_mle": ("safer.py", ["--no-adv-mle"], "SAFER w/o adv. MLE"),
    "cvpo": ("cvpo.py", [], "CVPO-vanilla"),
    "cvpo_it600": ("cvpo.py", ["--iteration-steps", "600"], "CVPO, SAFER's EM iteration"),
    "cvpo_random": ("cvpo.py", ["--random-noise"], "CVPO-random"),
    "adv_cvpo": ("adv_cvpo.py", [], "ADV-CVPO"),
    "adv_em_cvpo": ("adv_cvpo.py", ["--attack-buffer"], "ADV-EM-CVPO"),
    "ppol": ("ppol.py", [], "PPOL"),
    "sa_ppol": ("sa_ppol.py", [], "SA-PPOL"),
    "sa_ppol_mc": ("sa_ppol.py", ["--attacker", "mc"], "SA-PPOL(MC)"),
    "adv_ppol": ("adv_ppol.py", [], "ADV-PPOL"),
}


@dataclass
class Args:
    methods: tuple[str, ...] = ("safer", "cvpo")
    """method directory names (see METHODS in this file)"""
    env_ids: tuple[str, ...] = ("SafetyCarCircle-v0",)
    """env ids"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """seeds"""
    workers: int = os.cpu_count() or 1
    """runs at once, each with one torch thread"""
    results_dir: str = "results"
    """root of results/<env-id>/<method>/seed<N>/"""
    extra: str = ""
    """extra flags for every run as one shell-quoted string, e.g. --extra='--total-timesteps 100000'"""


def run_dir_of(results_dir, env_id, method, seed):
    return os.path.join(results_dir, env_id, method, f"seed{seed}")


def run_one(job):
    """Run one training job; returns (job, status, log path)."""
    method, env_id, seed, results_dir, extra = job
    script, flags, _ = METHODS[method]
    run_dir = run_dir_of(results_dir, env_id, method, seed)
    if os.path.exists(os.path.join(run_dir, "eval.json")):
        return job, "skipped (eval.json exists)", None
    os.makedirs(run_dir, exist_ok=True)
    log = os.path.join(run_dir, "train.log")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(ROOT, script), "--env-id", env_id, "--seed", str(seed), "--run-dir", run_dir,
           "--threads", "1", *flags, *extra]
    resume = os.path.exists(os.path.join(run_dir, "train_state.pt"))
    if resume:  # the same command with --resume: the script refuses it if a flag now differs from the run's own
        cmd += ["--resume", run_dir]
    start = time.time()
    # the log's first line is the command as run from the repository's root, without this machine's paths
    shown = ["python", script, *(os.path.relpath(c, ROOT) if os.path.isabs(c) and c.startswith(ROOT) else c
                                 for c in cmd[2:])]
    with open(log, "a" if resume else "w") as f:
        f.write(" ".join(shlex.quote(c) for c in shown) + "\n")
        f.flush()
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    status = f"done in {(time.time() - start) / 60:.1f} min" if code == 0 else f"FAILED (exit {code})"
    if resume:
        status = "resumed, " + status
    return job, status, log


def main(args):
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"sweep.py: error: unknown method(s) {', '.join(unknown)}; "
                         f"known: {', '.join(METHODS)}")
    if args.workers < 1:
        raise SystemExit(f"sweep.py: error: --workers must be >= 1, got {args.workers}")
    extra = shlex.split(args.extra)
    jobs = [(m, e, s, args.results_dir, extra) for e in args.env_ids for m in args.methods for s in args.seeds]
    failed = []
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for (method, env_id, seed, _, _), status, log in pool.map(run_one, jobs):
            print(f"{env_id} {method} seed{seed}: {status}" + (f", log {log}" if log else ""), flush=True)
            if status.startswith("FAILED"):
                failed.append(log)
    if failed:
        print(f"{len(failed)} of {len(jobs)} runs failed; logs: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
