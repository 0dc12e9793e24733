"""--capture-video and --track in every script: headless videos of evaluation episodes that leave the results as
they were, and a Weights & Biases run (offline here: no machine of ours reaches its server)."""

import glob
import importlib
import json
import os
import sys

import pytest

import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("safer", "cvpo", "adv_cvpo", "ppol", "sa_ppol", "adv_ppol")
# the off-policy evaluation films here; the on-policy one in the tracked run below
COMMITTED = {"safer.py": "results/SafetyBallCircle-v0/safer/seed1/model.pt"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_takes_the_video_and_tracking_flags(script):
    module = importlib.import_module(script)
    args, _ = module.parse_args(["--capture-video", "--video-episodes", "3", "--track", "--wandb-project-name", "p",
                                 "--wandb-entity", "e"])
    assert (args.capture_video, args.video_episodes, args.track, args.wandb_project_name, args.wandb_entity) == \
        (True, 3, True, "p", "e")
    with pytest.raises(SystemExit, match="--video-episodes must be in \\[1, 20\\]"):
        module.resolve_args(module.parse_args(["--video-episodes", "0"])[0])


def frames_of(path):
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    return meta, sum(1 for _ in reader)


@pytest.mark.parametrize("script", COMMITTED)
def test_committed_policy_filmed_without_changing_its_evaluation(script, tmp_path):
    base = [sys.executable, script, "--eval-checkpoint", os.path.join(ROOT, COMMITTED[script]), "--eval-episodes", "2",
            "--eval-attackers", "none"]
    filmed = launch.run([*base, "--capture-video", "--video-episodes", "1", "--eval-output",
                         str(tmp_path / "filmed" / "eval.json")], cwd=ROOT, timeout=600)
    plain = launch.run([*base, "--eval-output", str(tmp_path / "plain.json")], cwd=ROOT, timeout=600)
    assert filmed.returncode == 0 and plain.returncode == 0, filmed.stderr + plain.stderr
    videos = glob.glob(str(tmp_path / "filmed" / "videos" / "*" / "*.mp4"))
    assert videos == [str(tmp_path / "filmed" / "videos" / "none" / "episode0.mp4")]
    meta, count = frames_of(videos[0])
    assert meta["size"] == (480, 360) and meta["fps"] == 10 and count == 200  # Ball-Circle: 200 steps of 0.1 s
    results = [json.loads(p.read_text())["results"] for p in (tmp_path / "filmed" / "eval.json",
                                                               tmp_path / "plain.json")]
    assert results[0] == results[1]


def test_tracked_run_logs_its_scalars_arguments_and_videos_to_weights_and_biases(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    flags = ["--env-id", "SafetyBallCircle-v0", "--total-timesteps", "400", "--num-envs", "1", "--steps-per-epoch",
             "200", "--eval-episodes", "1", "--eval-attackers", "none", "--q-steps", "2", "--track",
             "--wandb-project-name", "safer-rl-test", "--capture-video", "--video-episodes", "1"]
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    proc = launch.run([sys.executable, "ppol.py", *flags, "--run-dir", str(run_dir)], cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (offline,) = glob.glob(str(run_dir / "wandb" / "offline-run-*"))
    (records,) = glob.glob(os.path.join(offline, "run-*.wandb"))  # what `wandb sync` would upload
    data = open(records, "rb").read()
    for logged in (b"cost_limit", b"safer-rl-test", b"charts/episodic_return", b"charts/episodic_cost",
                   b"eval/none/return", b"eval/none/cost"):
        assert logged in data, logged
    assert glob.glob(os.path.join(offline, "files", "media", "videos", "videos", "none_*.mp4"))
    assert (run_dir / "videos" / "none" / "episode0.mp4").is_file()
