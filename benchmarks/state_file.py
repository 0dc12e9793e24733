"""Cost of the training state that every script rewrites at each epoch end (train_state.pt, for --resume).

Trains one tiny epoch of safer.py and ppol.py on Car-Circle to get each one's real state, fills its replay buffer to
the configured capacity (Car-Circle: SAFER 80k transitions, PPOL's attack critics 200k), then times the atomic write
(torch.save to a temp file, os.replace) and reports its size and its share of an epoch of the given training speed.

    python benchmarks/state_file.py --safer-sps 110 --ppol-sps 1400
"""

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@dataclass
class Args:
    safer_sps: float = 110.0
    """safer.py training env steps/s to turn milliseconds into a share of an epoch"""
    ppol_sps: float = 1400.0
    """ppol.py training env steps/s, likewise"""
    safer_epoch_steps: int = 3000
    """env steps of a safer.py epoch (its default)"""
    ppol_epoch_steps: int = 12_000
    """env steps of a ppol.py epoch (10,000 rounded up to whole 300-step episodes in each of 10 envs)"""
    repeats: int = 5
    """writes timed per script (the median is reported)"""


RUNS = {
    "safer": ["--steps-per-epoch", "600", "--total-timesteps", "600", "--learning-starts", "600"],
    "ppol": ["--steps-per-epoch", "600", "--total-timesteps", "600", "--actor-steps", "1", "--critic-steps", "1"],
}


def full_buffer(state):
    """The state with its replay buffer filled to capacity with random transitions."""
    buffer = state["buffer"]
    capacity = state["args"]["buffer_size" if "buffer_size" in state["args"] else "q_buffer_size"]
    for name, value in list(buffer.items()):
        if torch.is_tensor(value):
            buffer[name] = torch.randn(capacity, *value.shape[1:], dtype=value.dtype)
    buffer["size"] = capacity
    return state


def main(args):
    sps = {"safer": args.safer_sps, "ppol": args.ppol_sps}
    epoch_steps = {"safer": args.safer_epoch_steps, "ppol": args.ppol_epoch_steps}
    with tempfile.TemporaryDirectory() as tmp:
        for script, flags in RUNS.items():
            run_dir = os.path.join(tmp, script)
            subprocess.run([sys.executable, os.path.join(ROOT, f"{script}.py"), "--env-id", "SafetyCarCircle-v0",
                            "--eval-episodes", "1", "--eval-attackers", "none", "--run-dir", run_dir, *flags],
                           check=True, capture_output=True, cwd=ROOT)
            state = full_buffer(torch.load(os.path.join(run_dir, "train_state.pt"), weights_only=True))
            path = os.path.join(run_dir, "bench_state.pt")
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                torch.save(state, path + ".tmp")
                os.replace(path + ".tmp", path)
                times.append(time.perf_counter() - start)
            ms = sorted(times)[len(times) // 2] * 1000
            epoch_s = epoch_steps[script] / sps[script]
            print(f"{script}: {os.path.getsize(path) / 1e6:.1f} MB, {ms:.0f} ms per write; an epoch of "
                  f"{epoch_steps[script]} steps at {sps[script]:.0f} steps/s takes {epoch_s:.1f} s: "
                  f"{100 * ms / 1000 / epoch_s:.2f}%")


if __name__ == "__main__":
    main(tyro.cli(Args))
