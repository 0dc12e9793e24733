"""cvpo.py end to end: a tiny run writes its outputs, re-evaluation and re-runs reproduce, bad input fails cleanly."""

import csv
import glob
import importlib.util
import json
import os
import re
import sys

import pytest
import torch

import cvpo
from recording import assert_eval_outputs
import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--env-id", "SafetyBallCircle-v0", "--total-timesteps", "600", "--learning-starts", "200",
        "--num-envs", "1", "--steps-per-epoch", "200", "--batch-size", "32", "--num-particles", "8",
        "--updates-per-step", "0.05",
        "--eval-episodes", "2", "--attack-steps", "3"]
EVAL = ["--eval-episodes", "2", "--attack-steps", "3"]


def run_script(*args, script="cvpo.py"):
    return launch.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    proc = run_script(*TINY, "--eval-every", "2", "--eval-every-attackers", "none", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    (run_dir.parent / "console.txt").write_text(proc.stdout)
    return run_dir


def test_run_writes_outputs(tiny_run):
    assert glob.glob(str(tiny_run / "events.out.tfevents.*"))
    ckpt = torch.load(tiny_run / "model.pt", weights_only=True)
    assert ckpt["env_id"] == "SafetyBallCircle-v0" and ckpt["obs_dim"] == 8 and ckpt["act_dim"] == 2
    assert {"actor", "qr1", "qr2", "qc", "args"} <= set(ckpt)
    rows = (tiny_run / "progress.csv").read_text().splitlines()
    assert rows[0] == "epoch,global_step,episodic_return,episodic_cost,cumulative_cost,SPS,wall_time"
    assert len(rows) == 1 + 3
    record = json.loads((tiny_run / "eval.json").read_text())
    assert set(record["results"]) == {"none", "mc", "mr", "mad", "uniform"}
    # what made the numbers: every argument, presets resolved, and the code's commit
    assert record["args"]["total_timesteps"] == 600 and record["args"]["num_particles"] == 8
    assert record["args"]["mstep_iters"] == cvpo.PRESETS["SafetyBallCircle-v0"]["mstep_iters"]
    assert record["commit"] is None or re.fullmatch(r"[0-9a-f]{40}\+?", record["commit"])
    for attacker, r in record["results"].items():
        assert r["episodes"] == 2 and len(r["returns"]) == 2 and len(r["costs"]) == 2
        assert r["eps"] == (0.0 if attacker == "none" else 0.05)
    rows = assert_eval_outputs(tiny_run)
    # the evaluation after epoch 2 runs --eval-every-attackers (none), the last one every attacker
    assert [(r["epoch"], r["attacker"]) for r in rows] == [("2", "none")] + [("3", a) for a in record["results"]]
    assert not glob.glob(str(tiny_run / "*.tmp*"))


def test_model_best_is_the_best_natural_evaluation_by_fsrls_rule(tiny_run):
    rows = [r for r in assert_eval_outputs(tiny_run) if r["attacker"] == "none"]
    best = None
    for row in rows:
        natural = (float(row["return_mean"]), float(row["cost_mean"]))
        if cvpo.better_than_best(natural, best, 5.0):
            best, best_step = natural, int(row["global_step"])
    assert torch.load(tiny_run / "model_best.pt", weights_only=True)["global_step"] == best_step


@pytest.mark.parametrize("natural,best,better", [
    ((-5.0, 50.0), None, True),  # the first evaluation is the best so far, feasible or not
    ((200.0, 4.0), (300.0, 9.0), True),  # feasible beats infeasible, whatever the return
    ((350.0, 9.0), (300.0, 9.0), True),  # both infeasible: the higher return
    ((250.0, 10.0), (300.0, 9.0), False),
    ((300.0, 9.0), (200.0, 4.0), False),  # infeasible never replaces a feasible best
    ((250.0, 5.0), (200.0, 4.0), True),  # both feasible (cost <= limit): the higher return
    ((150.0, 0.0), (200.0, 4.0), False),
])
def test_better_than_best_is_fsrls_rule(natural, best, better):
    assert cvpo.better_than_best(natural, best, 5.0) is better


def test_tensorboard_keys(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = set(EventAccumulator(str(tiny_run)).Reload().Tags()["scalars"])
    expected = {"charts/episodic_return", "charts/episodic_cost", "charts/cumulative_cost", "charts/SPS",
                "losses/eta", "losses/lam", "losses/kl_mean", "losses/kl_std"}
    expected |= {f"eval/{a}/{m}" for a in ("none", "mc", "mr", "mad", "uniform") for m in ("return", "cost")}
    assert expected <= tags


def test_eval_checkpoint_reproduces_eval_json(tiny_run, tmp_path):
    out = tmp_path / "again.json"
    proc = run_script("--eval-checkpoint", str(tiny_run / "model.pt"), "--eval-output", str(out), *EVAL)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["results"] == json.loads((tiny_run / "eval.json").read_text())["results"]


def test_eval_seed_draws_other_episodes_and_is_recorded(tiny_run, tmp_path):
    out = tmp_path / "fresh.json"
    proc = run_script("--eval-checkpoint", str(tiny_run / "model.pt"), "--eval-output", str(out), "--eval-seed", "7",
                      "--eval-attackers", "none", *EVAL)
    assert proc.returncode == 0, proc.stderr
    fresh, own = json.loads(out.read_text()), json.loads((tiny_run / "eval.json").read_text())
    assert fresh["eval_seed"] == 7 and own["eval_seed"] is None and fresh["seed"] == own["seed"] == 1
    assert fresh["results"]["none"]["returns"] != own["results"]["none"]["returns"]
    proc = run_script("--eval-checkpoint", str(tiny_run / "model.pt"), "--eval-output", str(out), "--eval-seed", "1",
                      "--eval-attackers", "none", *EVAL)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["results"]["none"] == own["results"]["none"]


def test_same_seed_same_eval_json(tiny_run, tmp_path):
    # tiny_run also evaluated after epoch 2: an evaluation must leave the training run as it was
    proc = run_script(*TINY, "--run-dir", str(tmp_path / "again"))
    assert proc.returncode == 0, proc.stderr
    first = json.loads((tiny_run / "eval.json").read_text())
    second = json.loads((tmp_path / "again" / "eval.json").read_text())
    assert first["results"] == second["results"]


def refusal(*argv):
    """The one-line error cvpo.py stops with on this command line, through its own parse and checks, in this process
    (these all fail before an env is built; test_bad_input.py checks the stderr and exit status of a real run)."""
    with pytest.raises(SystemExit) as stop:
        args, _ = cvpo.parse_args(list(argv))
        if args.eval_checkpoint:
            cvpo.load_checkpoint(args)
        else:
            cvpo.resolve_args(args)
    message = str(stop.value.code)
    assert message.startswith("cvpo.py: error: ") and len(message.splitlines()) == 1, message
    return message


@pytest.mark.parametrize("flags,needle", [
    (["--env-id", "NoSuchEnv-v9"], "NoSuchEnv-v9"),
    (["--eps", "-0.1"], "-0.1"),
    (["--seed", "-3"], "--seed"),
    (["--eval-seed", "-2"], "--eval-seed"),
    (["--total-timesteps", "0"], "--total-timesteps"),
    (["--total-timesteps", "-5"], "-5"),
    (["--steps-per-epoch", "0"], "--steps-per-epoch"),
    (["--attack-steps", "0"], "--attack-steps"),
    (["--eval-attackers", "none", "pgd"], "pgd"),
    (["--eval-every-attackers", "fgsm"], "fgsm"),
])
def test_bad_training_input(flags, needle, tmp_path):
    assert needle in refusal(*flags, "--output-dir", str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_missing_checkpoint(tmp_path):
    missing = str(tmp_path / "nope.pt")
    assert missing in refusal("--eval-checkpoint", missing)


def test_checkpoint_of_another_env(tiny_run, tmp_path):
    out = tmp_path / "e.json"
    message = refusal("--eval-checkpoint", str(tiny_run / "model.pt"), "--env-id", "SafetyCarCircle-v0",
                      "--eval-output", str(out), *EVAL)
    assert "SafetyBallCircle-v0" in message and "SafetyCarCircle-v0" in message
    assert not out.exists()


def test_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "model.pt"
    bogus.write_text("not a checkpoint")
    assert str(bogus) in refusal("--eval-checkpoint", str(bogus))


def test_evaluation_under_an_attacker_does_not_depend_on_what_ran_before(tmp_path):
    """A car's motors keep the last command through a reset, so the episodes of an attacker evaluated after another
    could start differently from the same attacker evaluated alone."""
    torch.manual_seed(0)
    args = cvpo.resolve_args(cvpo.Args(env_id="SafetyCarCircle-v0"))
    ckpt = tmp_path / "model.pt"
    cvpo.save_checkpoint(str(ckpt), cvpo.build_networks(8, 2), args, 8, 2, 0)
    results = {}
    for attackers in (["none", "mc"], ["mc"]):
        out = tmp_path / f"{'_'.join(attackers)}.json"
        proc = run_script("--eval-checkpoint", str(ckpt), "--eval-attackers", *attackers, "--eval-output", str(out),
                          *EVAL)
        assert proc.returncode == 0, proc.stderr
        results[len(attackers)] = json.loads(out.read_text())["results"]["mc"]
    assert results[1] == results[2]


def test_time_to_quality_benchmark_reads_every_natural_evaluation_from_the_console(tiny_run):
    """benchmarks/time_to_quality.py follows cvpo.py by its printed lines; they must give evals.csv's natural rows."""
    spec = importlib.util.spec_from_file_location("time_to_quality",
                                                  os.path.join(ROOT, "benchmarks", "time_to_quality.py"))
    ttq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ttq)
    run = ttq.OurRun.__new__(ttq.OurRun)
    run.points, run.step, run.start = [], 0, 0.0
    for line in (tiny_run.parent / "console.txt").read_text().splitlines():
        run.parse(line.strip())
    with open(tiny_run / "evals.csv") as f:
        natural = [r for r in csv.DictReader(f) if r["attacker"] == "none"]
    assert [(p["env_steps"], p["reward"], p["cost"]) for p in run.points] == [
        (int(r["global_step"]), round(float(r["return_mean"]), 2), round(float(r["cost_mean"]), 2)) for r in natural]
