"""Wall time of the same grid through tools/sweep.py's two backends: the local process pool and a local Ray instance.

Runs a 4-run grid of short Ball-Circle runs (cvpo.py and ppol.py, seeds 1 and 2) twice into temporary results trees,
first through the pool, then through `--ray-address local`, with the same number of workers, and prints each one's
wall time, Ray's overhead per run, and whether the runs' evaluations agree.

    python benchmarks/sweep_backends.py [--workers 2] [--total-timesteps 2000]
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    workers: int = 2
    """runs at once, in both backends"""
    total_timesteps: int = 2000
    """env steps of each run"""


def main(args):
    flags = (f"--num-envs 1 --steps-per-epoch 1000 --total-timesteps {args.total_timesteps} --eval-episodes 2 "
             f"--eval-attackers none mc --attack-steps 10")
    evaluations, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend, extra in (("pool", []), ("ray", ["--ray-address", "local"])):
            results = os.path.join(tmp, backend)
            start = time.time()
            proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "sweep.py"), "--methods", "cvpo",
                                   "ppol", "--env-ids", "SafetyBallCircle-v0", "--seeds", "1", "2", "--workers",
                                   str(args.workers), "--results-dir", results, f"--extra={flags}", *extra],
                                  capture_output=True, text=True, cwd=ROOT)
            seconds[backend] = time.time() - start
            if proc.returncode != 0:
                raise SystemExit(f"sweep_backends.py: the {backend} sweep failed:\n{proc.stdout}{proc.stderr}")
            evaluations[backend] = {
                (method, seed): json.load(open(os.path.join(results, "SafetyBallCircle-v0", method, f"seed{seed}",
                                                            "eval.json")))["results"]
                for method in ("cvpo", "ppol") for seed in (1, 2)}
    print(f"4 runs of {args.total_timesteps} env steps, {args.workers} workers: local pool {seconds['pool']:.1f} s, "
          f"Ray {seconds['ray']:.1f} s ({seconds['ray'] / seconds['pool']:.2f}x, "
          f"{(seconds['ray'] - seconds['pool']) / 4:.1f} s more per run); "
          f"same evaluations: {evaluations['pool'] == evaluations['ray']}")


if __name__ == "__main__":
    main(tyro.cli(Args))
