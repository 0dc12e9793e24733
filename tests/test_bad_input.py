"""Every script: bad input stops with one line naming the bad value, a non-zero exit, and nothing written."""

import importlib
import os
import re
import sys

import pytest

import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["cvpo.py", "safer.py", "adv_cvpo.py", "ppol.py", "sa_ppol.py", "adv_ppol.py"]

CASES = [(script, ["--env-id", "NoSuchEnv-v9"], "NoSuchEnv-v9") for script in SCRIPTS] + [
    ("safer.py", ["--xi-adv", "-0.5"], "-0.5"),
    ("safer.py", ["--adv-dual-max", "-0.03"], "--adv-dual-max must be >= 0, got -0.03"),
    ("safer.py", ["--train-attack-steps", "0"], "--train-attack-steps"),
    ("adv_cvpo.py", ["--adv-ramp-epochs", "0"], "--adv-ramp-epochs"),
    ("sa_ppol.py", ["--attacker", "mr"], "'mr'"),
    ("adv_ppol.py", ["--attacker", "mad"], "'mad'"),
    ("ppol.py", ["--eps", "-1"], "-1"),
    ("ppol.py", ["--steps-per-epoch", "0"], "--steps-per-epoch"),
    ("adv_ppol.py", ["--eval-checkpoint", "/nonexistent/model.pt"], "/nonexistent/model.pt"),
] + [(script, ["--env-id", "Pendulum-v1"], "--env-id Pendulum-v1: not a bullet-safety-gym env, so its steps carry no "
                                            "cost signal") for script in SCRIPTS] + [
    ("safer.py", ["--cost-limit", "nan"], "--cost-limit must be a finite number, got nan"),
    ("ppol.py", ["--cost-limit", "inf"], "--cost-limit must be a finite number, got inf"),
    ("cvpo.py", ["--updates-per-step", "nan"], "--updates-per-step must be a finite number, got nan"),
    ("adv_ppol.py", ["--total-timesteps", "1" + "0" * 30], "--total-timesteps must be at most 10,000,000,000, got 1,0"),
    ("adv_cvpo.py", ["--buffer-size", "10000000000"], "--buffer-size must be at most 10,000,000"),
] + [(script, flags, needle) for script in ("cvpo.py", "safer.py", "ppol.py") for flags, needle in [
    (["--env-id", "CartPole-v1"], "CartPole-v1"),  # registered, but with a discrete action space
    (["--eps", "5"], "--eps must be in [0, 1]"),
    (["--eval-checkpoint", "/"], "is a directory"),
]]


# these fail before any env is built, so in this process: the scripts' own path from the command line to the
# one-line error (SystemExit with the message), without a process start each
IN_PROCESS = [case for case in CASES if "CartPole-v1" not in case[1]]


@pytest.mark.parametrize("script,flags,needle", IN_PROCESS)
def test_bad_input(script, flags, needle, tmp_path):
    module = importlib.import_module(script.removesuffix(".py"))
    with pytest.raises(SystemExit) as stop:
        args, _ = module.parse_args([*flags, "--output-dir", str(tmp_path / "r")])
        if args.eval_checkpoint:
            module.load_checkpoint(args)
        else:
            module.resolve_args(args)
    message = str(stop.value.code)
    assert message.startswith(f"{script}: error: ") and len(message.splitlines()) == 1 and needle in message
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("script,flags,needle", [case for case in CASES if case not in IN_PROCESS] +
                         [("safer.py", ["--xi-adv", "-0.5"], "-0.5")])
def test_bad_input_is_one_line_on_stderr_and_a_failed_exit(script, flags, needle, tmp_path):
    proc = launch.run([sys.executable, os.path.join(ROOT, script), *flags, "--output-dir", str(tmp_path / "r")],
                      timeout=600, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("script,where", [("cvpo.py", "under a file"), ("safer.py", "a file"),
                                          ("ppol.py", "under a read-only place")])
def test_run_dir_that_cannot_be_made(script, where, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    run_dir = {"under a file": a_file / "run", "a file": a_file, "under a read-only place": "/proc/no-such-run"}[where]
    proc = launch.run([sys.executable, os.path.join(ROOT, script), "--env-id", "SafetyBallCircle-v0",
                       "--run-dir", str(run_dir)], timeout=600, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(run_dir) in lines[0], proc.stderr


COMMITTED = {"safer.py": "results/SafetyBallCircle-v0/safer/seed1/model.pt",
             "ppol.py": "results/SafetyBallCircle-v0/ppol/seed1/model.pt"}


@pytest.mark.parametrize("script", COMMITTED)
@pytest.mark.parametrize("where", ["a directory", "under a file", "under /proc"])
def test_eval_output_that_cannot_be_written_is_refused_before_the_evaluation(script, where, tmp_path, monkeypatch):
    module = importlib.import_module(script.removesuffix(".py"))
    a_file = tmp_path / "file"
    a_file.write_text("")
    out = {"a directory": tmp_path, "under a file": a_file / "eval.json", "under /proc": "/proc/no-such/eval.json"}
    monkeypatch.setattr(module, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking --eval-output"))
    args, _ = module.parse_args(["--eval-checkpoint", os.path.join(ROOT, COMMITTED[script]), "--eval-output",
                                 str(out[where])])
    with pytest.raises(SystemExit) as stop:
        module.eval_checkpoint(args)
    message = str(stop.value.code)
    assert message.startswith(f"{script}: error: --eval-output {str(out[where])!r}") and "\n" not in message
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.parametrize("script", COMMITTED)
def test_checkpoint_with_changed_weights_is_refused(script, tmp_path):
    import torch
    module = importlib.import_module(script.removesuffix(".py"))
    ckpt = torch.load(os.path.join(ROOT, COMMITTED[script]), weights_only=True)
    ckpt["checksum"] = module.weights_checksum(ckpt)
    good, changed, nan = tmp_path / "good.pt", tmp_path / "changed.pt", tmp_path / "nan.pt"
    torch.save(ckpt, good)
    weight = next(iter(ckpt["actor"]))
    ckpt["actor"][weight].view(-1)[0] += 1e-3
    torch.save(ckpt, changed)
    ckpt["actor"][weight].view(-1)[0] = float("nan")
    del ckpt["checksum"]  # older checkpoints have none: non-finite weights are refused all the same
    torch.save(ckpt, nan)

    def load(path):
        args, _ = module.parse_args(["--eval-checkpoint", str(path)])
        return module.load_checkpoint(args)

    assert load(good)
    for path, reason in ((changed, "its weights do not match the checksum written with them"),
                         (nan, "it holds non-finite weights")):
        with pytest.raises(SystemExit) as stop:
            load(path)
        assert str(stop.value.code) == f"{script}: error: checkpoint {str(path)!r} is corrupted: {reason}"


DISK_FULL = """
import runpy, sys, torch
script, run_dir, kind = sys.argv[1:4]
save, state_writes = torch.save, []
def save_until_the_disk_is_full(obj, f, *args, **kwargs):
    if str(f).startswith(run_dir + "/train_state.pt"):
        if len(state_writes) == 2:  # the states of epochs 0 and 1 are written, then the disk is full
            if kind == "torch":
                raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0\\n"
                                   "PytorchStreamWriter failed writing file data/0: file write failed")
            raise OSError(28, "No space left on device")
        state_writes.append(f)
    return save(obj, f, *args, **kwargs)
torch.save = save_until_the_disk_is_full
sys.argv = [script, *sys.argv[4:], "--run-dir", run_dir]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.parametrize("script,kind", [("cvpo.py", "torch"), ("ppol.py", "os")])
def test_full_disk_stops_with_one_line_naming_the_last_good_epoch_and_the_resume_command(script, kind, tmp_path):
    import torch
    from test_resume import FAMILIES
    run_dir = str(tmp_path / "run")
    flags = [*FAMILIES[script], "--total-timesteps", "800"]
    proc = launch.run([sys.executable, "-c", DISK_FULL, script, run_dir, kind, *flags], timeout=600, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    reason = ("PytorchStreamWriter failed writing file data/0: file write failed" if kind == "torch"
              else "No space left on device")
    assert proc.stderr.strip().splitlines() == [
        f"{script}: error: cannot write {run_dir + '/train_state.pt'!r} ({reason}) at step 400; the last good state "
        f"is step 200, epoch 1; make room and continue with: python {script} --resume {run_dir}"]
    assert not [name for name in os.listdir(run_dir) if ".tmp" in name]
    assert torch.load(os.path.join(run_dir, "train_state.pt"), weights_only=True)["epoch"] == 1
    resumed = launch.run([sys.executable, script, "--resume", run_dir], timeout=600, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert os.path.isfile(os.path.join(run_dir, "eval.json"))


DIVERGED = """
import sys
script, run_dir = sys.argv[1:3]
sys.argv = [script, *sys.argv[3:], "--run-dir", run_dir]
# the reward critic's particle values become NaN inside the E-step, as a diverged critic's would
source = open(script).read().replace("qr = torch.min(target_qr1(flat_obs, flat_act)",
                                     "qr = float('nan') * torch.min(target_qr1(flat_obs, flat_act)")
exec(compile(source, script, "exec"), {"__name__": "__main__", "__file__": script})
"""


def test_a_diverged_critic_stops_the_run_with_one_line(tmp_path):
    from test_resume import FAMILIES
    run_dir = tmp_path / "run"
    proc = launch.run([sys.executable, "-c", DIVERGED, "cvpo.py", str(run_dir), *FAMILIES["cvpo.py"],
                       "--total-timesteps", "800"], timeout=600, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cvpo.py: error: the reward critic diverged: non-finite Q values")
    assert re.search(r"\(try a lower --critic-lr\) at step \d+$", lines[0]), lines[0]  # the first update's step
