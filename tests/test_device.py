"""--device: every script runs its networks, updates and attacks on the chosen device (envs stay on the CPU); on
the CPU the results are those the scripts gave before the flag existed, pinned in tests/data/cpu_reference.json up
to the last bits another CPU may change (a --resume on another --device setting: test_resume.py).

A deliberate change of what a tiny run computes rewrites that file: python tests/test_device.py --write
"""

import csv
import json
import os
import sys

import pytest
import torch

from recording import assert_eval_outputs, assert_same_run
import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "tests", "data", "cpu_reference.json")
SCRIPTS = ("cvpo", "safer", "adv_cvpo", "ppol", "sa_ppol", "adv_ppol")
COMMON = ["--env-id", "SafetyBallCircle-v0", "--total-timesteps", "600", "--num-envs", "1", "--steps-per-epoch",
          "200", "--eval-episodes", "2", "--eval-attackers", "none", "mc", "--attack-steps", "3"]
OFF_POLICY = ["--learning-starts", "200", "--batch-size", "32", "--num-particles", "8", "--updates-per-step", "0.05"]
FLAGS = {
    "cvpo": OFF_POLICY,
    "safer": [*OFF_POLICY, "--adv-start-epoch", "0", "--adv-ramp-epochs", "1", "--train-attack-steps", "3"],
    "adv_cvpo": [*OFF_POLICY, "--adv-start-epoch", "0", "--adv-ramp-epochs", "1", "--train-attack-steps", "3"],
    "ppol": ["--q-steps", "5"],
    "sa_ppol": ["--q-steps", "5", "--train-attack-steps", "3"],
    "adv_ppol": ["--q-steps", "5", "--train-attack-steps", "3", "--adv-start-steps", "1", "--adv-ramp-steps", "1"],
}


NETWORKS = {script: ("actor", "qr1", "qr2", "qc") for script in SCRIPTS[:3]} | {
    script: ("actor", "value_r", "value_c", "qr", "qc") for script in SCRIPTS[3:]}


def tiny_run(script, run_dir, *extra):
    """progress.csv (timings aside) and eval.json's results of a tiny run, after checking its output files."""
    proc = launch.run([sys.executable, f"{script}.py", *COMMON, *FLAGS[script], *extra, "--run-dir", run_dir],
                      cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(run_dir, "progress.csv")) as f:
        progress = [{k: v for k, v in row.items() if k not in ("SPS", "wall_time")} for row in csv.DictReader(f)]
    with open(os.path.join(run_dir, "eval.json")) as f:
        results = json.load(f)["results"]
    assert_eval_outputs(run_dir)
    networks = torch.load(os.path.join(run_dir, "model.pt"), weights_only=True)
    assert set(NETWORKS[script]) <= set(networks)
    return dict(progress=progress, results=results)


def reference(script):
    with open(REFERENCE) as f:
        return json.load(f)[script]


@pytest.mark.parametrize("script", SCRIPTS)
def test_cpu_results_are_pinned(tmp_path, script):
    assert_same_run(tiny_run(script, str(tmp_path / "run"), "--device", "cpu"), reference(script))


def test_pinned_comparison_tolerates_last_bits_only():
    pinned = reference("cvpo")

    def last_return_times(factor):
        row = pinned["progress"][-1]
        return {**pinned, "progress": [*pinned["progress"][:-1],
                                       {**row, "episodic_return": repr(float(row["episodic_return"]) * factor)}]}

    assert_same_run(last_return_times(1 + 4e-16), pinned)
    with pytest.raises(AssertionError, match="differ by 1e-06 relative"):
        assert_same_run(last_return_times(1 + 1e-6), pinned)
    with pytest.raises(AssertionError, match="lengths differ"):
        assert_same_run({**pinned, "progress": pinned["progress"][:-1]}, pinned)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error():
    proc = launch.run([sys.executable, "safer.py", "--device", "cuda", "--run-dir", "unused"], cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["safer.py: error: --device cuda: torch sees no GPU here "
                                                "(torch.cuda.is_available() is False); use --device cpu or auto"]
    assert not os.path.exists(os.path.join(ROOT, "unused"))


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        pinned = {script: tiny_run(script, os.path.join(tmp, script)) for script in SCRIPTS}
    with open(REFERENCE, "w") as f:
        json.dump(pinned, f, indent=1)
    print(f"wrote {REFERENCE}")
