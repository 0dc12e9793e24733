"""Every script: bad input stops with one line naming the bad value, a non-zero exit, and nothing written."""

import importlib
import os
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
