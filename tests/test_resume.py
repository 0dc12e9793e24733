"""--resume: a run killed at any point and resumed ends with the files of the same run uninterrupted; unfinished run
directories are never reused silently; Ctrl-C and SIGTERM stop with one line that says how to resume."""

import csv
import glob
import importlib
import json
import os
import shutil
import signal
import sys
import time

import pytest
import torch

import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Ball-Circle episodes are 200 steps: with one env, an epoch of 200 steps is one episode and 800 steps are 4 epochs
BALL = ["--env-id", "SafetyBallCircle-v0", "--num-envs", "1", "--steps-per-epoch", "200", "--eval-episodes", "2",
        "--attack-steps", "3", "--eval-every", "2", "--eval-every-attackers", "none"]
OFF_POLICY = ["--learning-starts", "200", "--batch-size", "32", "--num-particles", "8", "--updates-per-step", "0.05"]
FAMILIES = {
    "cvpo.py": BALL + OFF_POLICY,
    # eps_t > 0 from epoch 2 on, so the attack inside the update and the schedule are part of what must repeat
    "safer.py": BALL + OFF_POLICY + ["--adv-start-epoch", "1", "--adv-ramp-epochs", "2", "--train-attack-steps", "2"],
    "ppol.py": BALL + ["--actor-steps", "3", "--critic-steps", "3", "--q-steps", "3"],
}


def command(script, *flags):
    return [sys.executable, os.path.join(ROOT, script), *flags]


def run(script, *flags):
    return launch.run(command(script, *flags), cwd=ROOT, timeout=600)


def saved_epoch(run_dir):
    try:
        return torch.load(os.path.join(run_dir, "train_state.pt"), weights_only=True)["epoch"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return None


def start_and_wait(script, flags, run_dir, epoch):
    """Start a run and return its process once the training state of `epoch` is on disk."""
    proc = launch.start(command(script, *flags, "--run-dir", str(run_dir)), cwd=ROOT)
    deadline = time.time() + 300
    while (saved_epoch(run_dir) or 0) < epoch:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.01)
    return proc


def kill_inside_next_epoch(script, flags, run_dir, epoch, delays=(0.1, 0.03, 0.0)):
    """Start a run and kill -9 it a delay after the training state of `epoch` is on disk, before that of the next
    epoch: the first delay that lands there, a fresh run each try (on an idle machine a tiny epoch can end within
    0.1 s)."""
    for delay in delays:
        shutil.rmtree(run_dir, ignore_errors=True)
        proc = start_and_wait(script, flags, run_dir, epoch)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if saved_epoch(run_dir) == epoch:
            return
    pytest.fail(f"{script} finished epoch {epoch + 1} before every kill in {delays}")


def table(path, drop=()):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def evaluation(run_dir):
    """eval.json without the arguments, which hold the run directory and --resume."""
    record = json.loads((run_dir / "eval.json").read_text())
    record.pop("args")
    return record


def assert_same_run(first, second):
    """progress.csv (SPS and wall time aside), evals.csv (wall time aside) and eval.json are the same."""
    assert table(first / "progress.csv", ("SPS", "wall_time")) == table(second / "progress.csv", ("SPS", "wall_time"))
    assert table(first / "evals.csv", ("wall_time",)) == table(second / "evals.csv", ("wall_time",))
    assert evaluation(first) == evaluation(second)


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory):
    """Each family's 4-epoch run, uninterrupted."""
    runs = {}
    for script, flags in FAMILIES.items():
        run_dir = tmp_path_factory.mktemp("straight") / script.removesuffix(".py")
        proc = run(script, *flags, "--total-timesteps", "800", "--run-dir", str(run_dir))
        assert proc.returncode == 0, proc.stderr
        runs[script] = run_dir
    return runs


def tensorboard_points(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    scalars = EventAccumulator(str(path)).Reload()
    return {tag: [(e.step, e.value) for e in scalars.Scalars(tag)] for tag in scalars.Tags()["scalars"]
            if not tag.endswith("SPS")}  # timings


def raw_points(path):
    """(tag, step) of every scalar in the event files as any reader of them sees it, without TensorBoard's purge."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    return sorted((value.tag, event.step) for events in sorted(glob.glob(str(path / "events.out.tfevents.*")))
                  for event in EventFileLoader(events).Load() for value in event.summary.value)


def assert_resumed_is_the_uninterrupted_run(run_dir, straight):
    """The resumed run's files, and its TensorBoard points (no duplicates, none missing, also in the raw event
    files), are the uninterrupted run's, and no temporary file is left."""
    assert_same_run(straight, run_dir)
    assert tensorboard_points(run_dir) == tensorboard_points(straight)
    assert raw_points(run_dir) == raw_points(straight)
    assert not glob.glob(str(run_dir / "*.tmp*"))


@pytest.mark.parametrize("script", ["safer.py", "ppol.py"])  # cvpo.py's is the sweep runner's test below
def test_killed_inside_epoch_3_and_resumed_is_the_uninterrupted_run(script, straight_runs, tmp_path):
    """Killed up to 0.1 s into epoch 3, when its first episode and loss points may already be in the events file."""
    run_dir = tmp_path / "run"
    kill_inside_next_epoch(script, [*FAMILIES[script], "--total-timesteps", "800"], run_dir, epoch=2)
    assert saved_epoch(run_dir) == 2 and not (run_dir / "eval.json").exists()
    resumed = run(script, "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at step 400, epoch 2" in resumed.stdout
    assert "warning" not in resumed.stdout
    assert_resumed_is_the_uninterrupted_run(run_dir, straight_runs[script])


def test_finished_run_extended_by_a_larger_total_is_the_longer_run(straight_runs, tmp_path):
    """Also on another --device setting, the one other flag a resume may change (a run started on a GPU goes on
    where there is none)."""
    run_dir = tmp_path / "run"
    proc = run("cvpo.py", *FAMILIES["cvpo.py"], "--total-timesteps", "400", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert_clean_failure(run("cvpo.py", "--resume", str(run_dir)), "--total-timesteps", "400")
    proc = run("cvpo.py", "--resume", str(run_dir), "--total-timesteps", "800", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    straight = straight_runs["cvpo.py"]
    assert table(straight / "progress.csv", ("SPS", "wall_time")) == table(run_dir / "progress.csv",
                                                                           ("SPS", "wall_time"))
    assert evaluation(straight) == evaluation(run_dir)
    # the progress lines say where the run is
    lines = proc.stdout.splitlines()
    assert lines[0] == f"run directory: {run_dir} (resumed at step 400, epoch 2)"
    epoch_line = next(line for line in lines if line.startswith("epoch 3 |"))
    assert "step 600/800 (75%)" in epoch_line and "min, ETA" in epoch_line and "SPS" in epoch_line
    assert "return" in epoch_line and "cost" in epoch_line and "E-step temperature" in epoch_line
    assert " eta " not in epoch_line


def test_a_run_begun_before_a_flag_was_added_resumes_as_it_began(straight_runs, tmp_path):
    """A training state saved by a version without --preset (ADDED_FLAGS) resumes with the value that repeats it;
    branching it records the same value."""
    run_dir = tmp_path / "run"
    proc = run("safer.py", *FAMILIES["safer.py"], "--total-timesteps", "400", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    path = run_dir / "train_state.pt"
    state = torch.load(path, weights_only=True)
    del state["args"]["preset"]
    torch.save(state, path)
    branched = tmp_path / "branch"
    proc = launch.run([sys.executable, os.path.join(ROOT, "tools", "branch.py"), "--source", str(run_dir), "--target",
                       str(branched)], cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and "added preset='paper'" in proc.stdout, proc.stdout + proc.stderr
    proc = run("safer.py", "--resume", str(run_dir), "--total-timesteps", "800")
    assert proc.returncode == 0, proc.stderr
    straight = straight_runs["safer.py"]
    assert table(straight / "progress.csv", ("SPS", "wall_time")) == table(run_dir / "progress.csv",
                                                                           ("SPS", "wall_time"))
    assert evaluation(straight) == evaluation(run_dir)


def test_preset_fast_caps_particles_and_mstep_iterations_and_flags_override_it():
    safer = importlib.import_module("safer")
    car = safer.resolve_args(safer.Args(env_id="SafetyCarCircle-v0", preset="fast"))
    assert (car.num_particles, car.mstep_iters, car.estep_kl) == (16, 5, 0.1)  # the rest stays Table 4's
    ball = safer.resolve_args(safer.Args(env_id="SafetyBallCircle-v0", preset="fast", num_particles=24))
    assert (ball.num_particles, ball.mstep_iters) == (24, 5)
    paper = safer.resolve_args(safer.Args(env_id="SafetyAntRun-v0"))
    assert (paper.num_particles, paper.mstep_iters) == (64, 8)


def assert_clean_failure(proc, *needles):
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("script,sig", [("cvpo.py", signal.SIGINT), ("ppol.py", signal.SIGTERM)])
def test_ctrl_c_and_sigterm_stop_with_one_line_naming_the_resume_command(script, sig, tmp_path):
    run_dir = tmp_path / "run"
    proc = start_and_wait(script, [*FAMILIES[script], "--total-timesteps", "400"], run_dir, epoch=1)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig and "Traceback" not in stderr  # 130 after Ctrl-C, 143 after SIGTERM
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and f"--resume {run_dir}" in lines[0], stderr
    assert not glob.glob(str(run_dir / "*.tmp*")) and saved_epoch(run_dir) >= 1


def test_finished_run_directory_is_not_reused_silently(straight_runs):
    """(An unfinished one: the sweep runner's test below.)"""
    finished = straight_runs["cvpo.py"]
    again = run("cvpo.py", *FAMILIES["cvpo.py"], "--total-timesteps", "800", "--run-dir", str(finished))
    assert_clean_failure(again, "finished", "--resume")


def test_resume_refuses_a_conflicting_flag_and_a_directory_without_a_run(tmp_path):
    run_dir = tmp_path / "run"
    flags = [*FAMILIES["cvpo.py"], "--random-noise", "--run-dir", str(run_dir)]
    assert run("cvpo.py", *flags, "--total-timesteps", "200").returncode == 0
    # a run begun by a version with one flag fewer: resumed, the new flag would silently take its default
    older = tmp_path / "older"
    older.mkdir()
    state = torch.load(run_dir / "train_state.pt", weights_only=True)
    del state["args"]["mstep_dual_max"]
    torch.save(state, older / "train_state.pt")
    for script, argv, needles in [("cvpo", ["--resume", str(run_dir), "--seed", "2"], ("--seed 2", "1")),
                                  ("cvpo", ["--resume", str(older)], (str(older), "not those of this version")),
                                  ("cvpo", ["--resume", str(tmp_path)], (str(tmp_path), "train_state.pt")),
                                  ("ppol", ["--resume", str(run_dir), "--total-timesteps", "400"], ("cvpo.py",))]:
        with pytest.raises(SystemExit) as stop:  # the scripts' own parse, in this process
            importlib.import_module(script).parse_args(argv)
        assert len(str(stop.value.code).splitlines()) == 1 and all(n in str(stop.value.code) for n in needles)
    # the run's own flags are no conflict, a boolean that set a stored True included (the sweep resumes that way)
    proc = run("cvpo.py", *flags, "--seed", "1", "--total-timesteps", "400", "--resume", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "eval.json").read_text())["args"]["random_noise"] is True


def test_sweep_runner_resumes_an_unfinished_run(straight_runs, tmp_path):
    """cvpo.py killed up to 0.1 s into epoch 3; its directory is not reused silently; the sweep resumes it."""
    flags = [f for f in FAMILIES["cvpo.py"] if f not in ("--env-id", "SafetyBallCircle-v0")] + ["--total-timesteps",
                                                                                                  "800"]
    run_dir = tmp_path / "results" / "SafetyBallCircle-v0" / "cvpo" / "seed1"
    start = ["--env-id", "SafetyBallCircle-v0", "--seed", "1", "--threads", "1", *flags]
    kill_inside_next_epoch("cvpo.py", start, run_dir, epoch=2)
    assert_clean_failure(run("cvpo.py", *start, "--run-dir", str(run_dir)), "unfinished", f"--resume {run_dir}")
    sweep = launch.run([sys.executable, os.path.join(ROOT, "tools", "sweep.py"), "--methods", "cvpo",
                        "--env-ids", "SafetyBallCircle-v0", "--seeds", "1", "--workers", "1", "--results-dir",
                        str(tmp_path / "results"), f"--extra={' '.join(flags)}"], cwd=ROOT, timeout=600)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert "seed1: resumed, done" in sweep.stdout
    assert_resumed_is_the_uninterrupted_run(run_dir, straight_runs["cvpo.py"])


def test_resume_takes_the_stopped_sessions_later_points_out_of_the_raw_event_files(tmp_path):
    """A run stopped after epoch 1 whose event file already holds later points (a session flushes its events at
    exit): the resumed run takes them out of the old file, or a reader without TensorBoard's purge sees them twice.
    The stopped run is made exactly: a finished 1-epoch run's state, kept, under the events of its extension."""
    flags = [*FAMILIES["cvpo.py"], "--steps-per-epoch", "400"]
    run_dir = tmp_path / "run"
    assert run("cvpo.py", *flags, "--total-timesteps", "400", "--run-dir", str(run_dir)).returncode == 0
    shutil.copy(run_dir / "train_state.pt", tmp_path / "epoch1.pt")
    assert run("cvpo.py", "--resume", str(run_dir), "--total-timesteps", "1200").returncode == 0
    once = raw_points(run_dir)
    assert len(once) == len(set(once))
    shutil.copy(tmp_path / "epoch1.pt", run_dir / "train_state.pt")
    (run_dir / "eval.json").unlink()
    assert max(step for _, step in raw_points(run_dir)) == 1200  # the later points, as a stopped session leaves them
    resumed = run("cvpo.py", "--resume", str(run_dir), "--total-timesteps", "1200")
    assert resumed.returncode == 0, resumed.stderr
    assert raw_points(run_dir) == once
