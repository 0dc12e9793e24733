"""--device: every script runs its networks, updates and attacks on the chosen device (envs stay on the CPU); on
a machine without a GPU, --device cpu and the default give the same run, bit for bit (a --resume on another
--device setting: test_resume.py). Both runs are made here: another CPU rounds differently, so no number recorded
elsewhere is compared."""

import csv
import json
import os
import sys

import pytest
import torch

from recording import assert_eval_outputs, assert_same_run
import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="the default device is the GPU here")
@pytest.mark.parametrize("script", SCRIPTS)
def test_cpu_device_gives_the_default_run(tmp_path, script):
    on_cpu = tiny_run(script, str(tmp_path / "cpu"), "--device", "cpu")
    assert_same_run(on_cpu, tiny_run(script, str(tmp_path / "auto")))


def test_same_run_comparison_finds_any_change_beyond_text_round_trips():
    pinned = dict(progress=[dict(epoch="1", episodic_return="12.5"), dict(epoch="2", episodic_return="30.25")],
                  results=dict(none=dict(return_mean=30.0, returns=[29.0, 31.0])))

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
