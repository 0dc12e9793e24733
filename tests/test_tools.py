"""tools/: the report's numbers on a fabricated results tree, its figures, and the sweep runner's resume/failure."""

import json
import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import report  # noqa: E402
from tools.diagnostics import time_to_target  # noqa: E402
import launch  # noqa: E402
from recording import assert_same_run  # noqa: E402

ENV = "SafetyCarCircle-v0"


def fabricate(results, method, seed, natural, mc, mr):
    run_dir = results / ENV / method / f"seed{seed}"
    run_dir.mkdir(parents=True)
    res = {name: dict(return_mean=r, cost_mean=c, return_std=0.0, cost_std=0.0, episodes=10, eps=0.05,
                      attack_steps=200) for name, (r, c) in (("none", natural), ("mc", mc), ("mr", mr))}
    (run_dir / "eval.json").write_text(json.dumps(dict(algo=method, env_id=ENV, seed=seed, eps=0.05, results=res)))
    steps = np.arange(1, 6) * 1000
    rows = ["epoch,global_step,episodic_return,episodic_cost,cumulative_cost,SPS,wall_time"]
    rows += [f"{i + 1},{s},{natural[0] * (i + 1) / 5},{i},{10.0 * (i + 1) * seed},100,1" for i, s in enumerate(steps)]
    (run_dir / "progress.csv").write_text("\n".join(rows) + "\n")


def test_report_means_stds_and_figures(tmp_path):
    results = tmp_path / "results"
    fabricate(results, "safer", 1, (300, 0), (280, 1), (320, 2))
    fabricate(results, "safer", 2, (200, 2), (260, 3), (300, 4))
    fabricate(results, "cvpo", 1, (350, 0), (330, 60), (380, 40))
    stats = report.table(str(results))
    mean, std, n = stats[ENV]["safer"]
    assert n == 2
    assert mean[0].tolist() == [250, 1] and std[0].tolist() == [50, 1]  # natural
    assert mean[1].tolist() == [270, 2] and std[1].tolist() == [10, 1]  # MC
    assert mean[3, 0] == pytest.approx(np.mean([(300 + 280 + 320) / 3, (200 + 260 + 300) / 3]))  # average
    assert mean[3, 1] == pytest.approx(2.0)
    report.main(report.Args(results_dir=str(results)))
    table = (results / "table5.md").read_text()
    assert "| SAFER | 2 | 250.0+-50.0 / 1.00+-1.00 [258.6 / 0.00]" in table
    assert "CVPO-vanilla | 1 |" in table
    # worst case over MC and MR of the seed means: SAFER max(2, 3), CVPO max(60, 40); paper 0.32 and 57.21
    assert ("Off-policy rows by worst-case attacked cost, lowest first: ours SAFER (3.00) < CVPO-vanilla (60.00); "
            "paper SAFER (0.32) < CVPO-vanilla (57.21); the same order.") in table
    png = results / ENV / "figure2.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_draws_the_evaluations_of_evals_csv(tmp_path):
    results = tmp_path / "results"
    for seed, evaluations in ((1, 3), (2, 2)):  # seed 2 made fewer evaluations: only the shared ones are drawn
        fabricate(results, "safer", seed, (300, 0), (280, 1), (320, 2))
        rows = ["epoch,global_step,wall_time,attacker,return_mean,cost_mean,episodes"]
        rows += [f"{i},{1000 * i},1.0,{attacker},{100 * i + seed},{7 if attacker == 'mc' else 0},10"
                 for i in range(1, evaluations + 1) for attacker in ("none", "mc")]
        (results / ENV / "safer" / f"seed{seed}" / "evals.csv").write_text("\n".join(rows) + "\n")
    steps, reward, cost = report.evaluations(str(results / ENV / "safer" / "seed1"), "mc")
    assert steps.tolist() == [1000, 2000, 3000] and reward.tolist() == [101, 201, 301] and cost.tolist() == [7] * 3
    assert report.evaluations(str(results / ENV / "safer" / "seed1"), "mr") is None
    path = str(tmp_path / "evals.png")
    assert report.evaluation_curves(str(results), ENV, ["safer", "cvpo"], path)
    assert open(path, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n" and not os.path.exists(path + ".tmp.png")
    assert not report.evaluation_curves(str(results), ENV, ["cvpo"], str(tmp_path / "none.png"))
    assert not os.path.exists(tmp_path / "none.png")


def test_report_table7_takes_the_worse_attacker_per_seed_and_groups_by_xi_adv(tmp_path):
    results = tmp_path / "results"
    for method, seed, xi, mc, mr in (("safer", 1, 0.012, (280, 1), (320, 2)), ("safer_xi0.02", 1, 0.02, (300, 9),
                                     (310, 3)), ("safer_xi0.02", 2, 0.02, (250, 0), (330, 4))):
        fabricate(results, method, seed, (300, 0), mc, mr)
        path = results / ENV / method / f"seed{seed}" / "eval.json"
        record = json.loads(path.read_text())
        path.write_text(json.dumps(dict(record, args=dict(xi_adv=xi))))
    rows = report.table7(str(results))[ENV]
    assert list(rows) == [0.012, 0.02]
    mean, std, n = rows[0.02]
    assert n == 2 and mean.tolist() == [(300 + 330) / 2, (9 + 4) / 2] and std.tolist() == [15, 2.5]  # MC, then MR
    report.main(report.Args(results_dir=str(results)))
    table = (results / "table5.md").read_text()
    assert "| 0.02 | 2 | 315.0 +- 15.0 / 6.50 +- 2.50 [379.8 / 0.65] |" in table
    assert "| 0.012 | 1 | 320.0 +- 0.0 / 2.00 +- 0.00 |" in table
    assert "SAFER xi_adv 0.02 |" not in table  # not a Table 5 row


def test_report_removes_figures_whose_runs_are_gone(tmp_path):
    results = tmp_path / "results"
    fabricate(results, "safer", 1, (300, 0), (280, 1), (320, 2))
    (results / "SafetyBallCircle-v0" / "cvpo" / "seed1").mkdir(parents=True)  # a run still training, no eval.json
    stale = results / "SafetyBallCircle-v0" / "figure2.png"
    stale.write_bytes(b"made from runs since moved to experiments/")
    report.main(report.Args(results_dir=str(results)))
    assert not stale.exists()
    assert (results / ENV / "figure2.png").exists()
    assert not (results / ENV / "evals_on_policy.png").exists()  # no on-policy run


def test_report_skips_a_run_still_training(tmp_path):
    results = tmp_path / "results"
    fabricate(results, "safer", 1, (300, 0), (280, 1), (320, 2))
    fabricate(results, "safer", 2, (200, 2), (260, 3), (300, 4))
    seed1, running = str(results / ENV / "safer" / "seed1"), str(results / ENV / "safer" / "seed2")
    assert report.seed_dirs(str(results), ENV, "safer") == [seed1, running]
    os.remove(os.path.join(running, "eval.json"))  # progress.csv stays, as while training
    assert report.seed_dirs(str(results), ENV, "safer") == [seed1]
    assert report.table(str(results))[ENV]["safer"][2] == 1
    cumulative_cost, best_return = report.progress(seed1)
    assert cumulative_cost.tolist() == [10, 20, 30, 40, 50] and best_return[-1] == 300


def test_robustness_plot_from_cached_values_and_skipped_without_any(tmp_path, capsys):
    results = tmp_path / "results"
    fabricate(results, "cvpo", 1, (350, 0), (330, 60), (380, 40))
    args = report.Args(results_dir=str(results), robustness=True)
    # no model.pt and no cache: nothing to plot, and no empty figure left behind
    report.main(args)
    assert not (results / ENV / "robustness.png").exists()
    assert "skipped" in capsys.readouterr().out
    cache = {f"{e:.6g}": [300.0 - e * 100, e * 10] for e in np.linspace(0, 0.1, args.robustness_points)}
    (results / ENV / "cvpo" / "seed1" / "robustness.json").write_text(json.dumps(cache))
    values = report.robustness_values(str(results / ENV / "cvpo" / "seed1"), args)
    assert sorted(values) == pytest.approx([0, 0.025, 0.05, 0.075, 0.1])  # 0 to 2x the run's eps
    report.main(args)
    png = results / ENV / "robustness.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_end_labels_of_close_curves_do_not_overlap():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 100])
    # two curves ending 0.8% of the axis apart, one far away
    report.label_ends(ax, {"sa_ppol_mc": (1, 9.0), "adv_ppol": (1, 9.8), "cvpo": (1, 90.0)}, fontsize=7, offset=4)
    fig.canvas.draw()
    labels = {a.get_text(): a for a in ax.texts}
    assert set(labels) == {"SA-PPOL(MC)", "ADV-PPOL", "CVPO-vanilla"}
    assert not labels["SA-PPOL(MC)"].get_window_extent().overlaps(labels["ADV-PPOL"].get_window_extent())
    # a label with room stays at its curve's end
    assert labels["CVPO-vanilla"].xyann == (4, 0)
    plt.close(fig)


TINY = "--total-timesteps 200 --num-envs 1 --steps-per-epoch 200 --eval-episodes 1 --eval-attackers none"


def unreadable_state(results, method, seed, env_id=ENV):
    """A run directory whose train_state.pt is garbage: the sweep resumes it and the run fails at its start."""
    run_dir = results / env_id / method / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "train_state.pt").write_bytes(b"not a torch file")
    return run_dir / "train.log"


def test_sweep_skips_finished_runs_and_survives_failures(tmp_path):
    results = tmp_path / "results"
    fabricate(results, "cvpo", 1, (1, 0), (1, 0), (1, 0))  # finished: has eval.json
    failing = unreadable_state(results, "ppol", 1)
    proc = launch.run([sys.executable, os.path.join(ROOT, "tools", "sweep.py"), "--methods", "cvpo",
                       "ppol", "--env-ids", ENV, "--seeds", "1", "2", "--workers", "2", "--results-dir",
                       str(results), f"--extra={TINY}"], timeout=600)
    assert proc.returncode == 1
    assert f"{ENV} cvpo seed1: skipped" in proc.stdout
    assert f"{ENV} ppol seed1: resumed, FAILED (exit 1), log {failing}" in proc.stdout
    assert "is not a readable training state" in failing.read_text()
    for method in ("cvpo", "ppol"):
        log = results / ENV / method / "seed2" / "train.log"
        assert f"{ENV} {method} seed2: done" in proc.stdout
        # the command as run from the repository's root, without the interpreter's or the repository's path
        assert log.read_text().startswith(f"python {method}.py --env-id {ENV}")
    assert "1 of 4 runs failed" in proc.stdout


@pytest.mark.parametrize("flags,needle", [
    (["--env-ids", "NoSuchEnv-v9"], "NoSuchEnv-v9 ppol: unknown env id 'NoSuchEnv-v9'"),
    (["--extra=--no-such-flag 3"], "ppol.py refuses --no-such-flag 3: Unrecognized options: --no-such-flag, 3"),
    (["--extra=--total-timesteps 0"], "--total-timesteps must be a positive integer, got 0"),
    (["--extra=--eps '0.1"], "is not a valid shell-quoted string (No closing quotation)"),
    (["--results-dir", "FILE"], "is a file, not a folder"),
])
def test_sweep_checks_the_grid_before_it_makes_anything(flags, needle, tmp_path):
    results = tmp_path / "results"
    a_file = tmp_path / "file"
    a_file.write_text("")
    flags = [str(a_file) if f == "FILE" else f for f in flags]
    argv = ["--methods", "ppol", "--env-ids", ENV, "--seeds", "1", "--results-dir", str(results), *flags]
    proc = launch.run([sys.executable, os.path.join(ROOT, "tools", "sweep.py"), *argv], timeout=300, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep.py: error: ") and needle in lines[0], proc.stderr
    assert not results.exists()


def sharp_checkpoint(path, env_id="SafetyBallCircle-v0"):
    """A cvpo.py-shaped checkpoint whose policy mean swings with small observation changes."""
    import safer
    import torch
    torch.manual_seed(0)
    actor, critics = safer.Actor(8, 2), [safer.QNetwork(8, 2) for _ in range(3)]
    with torch.no_grad():  # steeper hidden layer, narrow std: the KL under attack far above any xi_adv
        actor.body[0].weight.mul_(5.0)
        actor.body[-1].bias[2:] = -2.5
    torch.save(dict(algo="cvpo", env_id=env_id, args=dict(eps=0.05, seed=1), obs_dim=8, act_dim=2,
                    global_step=0, actor=actor.state_dict(), qr1=critics[0].state_dict(),
                    qr2=critics[1].state_dict(), qc=critics[2].state_dict()), path)


@pytest.mark.slow  # a one-off diagnostic: checked on demand
def test_robust_fit_meets_the_bound_and_writes_its_record(tmp_path):
    ckpt, out = tmp_path / "model.pt", tmp_path / "fit.json"
    sharp_checkpoint(ckpt)
    # another process: bullet-safety-gym redirects the C stdout, which pytest's capture does not allow in-process
    launch.run([sys.executable, "-m", "tools.diagnostics.robust_fit", "--checkpoint", str(ckpt),
                "--updates", "120", "--ramp-updates", "40", "--report-every", "40", "--num-states", "400",
                "--eval-episodes", "1", "--attack-steps", "2", "--output", str(out)], check=True, cwd=ROOT)
    record = json.loads(out.read_text())
    first, last = record["reports"][0], record["reports"][-1]
    assert [r["update"] for r in record["reports"]] == [0, 40, 80, 120]
    assert first["kl_adv"] > 3 * record["xi_adv"]  # the sharp policy breaks the bound
    assert last["kl_adv"] < 1.5 * record["xi_adv"] and last["moved_from_original"] > 0
    assert set(record["evaluation"]) == {"original", "fitted"}
    assert set(record["evaluation"]["fitted"]) == {"none", "mc"}


@pytest.mark.parametrize("tool, foreign_algo, messages", [
    pytest.param("robust_fit", "ppol", ("does not exist", "not a cvpo.py"), marks=pytest.mark.slow),
    ("authors_attacker", "foo", ("is not a file", "written by 'foo'")),
    ("authors_mad", "foo", ("is not a file", "is not a model.pt of these scripts")),
])
def test_diagnostics_reject_a_missing_or_foreign_checkpoint(tmp_path, tool, foreign_algo, messages):
    import torch
    torch.save(dict(algo=foreign_algo), tmp_path / "other.pt")
    for path, message in zip((tmp_path / "missing.pt", tmp_path / "other.pt"), messages):
        proc = launch.run([sys.executable, "-m", f"tools.diagnostics.{tool}", "--checkpoint", str(path)], cwd=ROOT)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def mean_vs_sample(*flags):
    return launch.run([sys.executable, "-m", "tools.diagnostics.mean_vs_sample", *flags], cwd=ROOT)


def save_ball_checkpoint(path, actor, seed):
    """A cvpo.py checkpoint of SafetyBallCircle-v0 holding this actor and fresh critics."""
    from dataclasses import asdict

    import cvpo
    import torch
    critics = [cvpo.QNetwork(8, 2) for _ in range(3)]
    args = cvpo.Args(env_id="SafetyBallCircle-v0", seed=seed, eps=0.05)
    torch.save(dict(algo="cvpo", env_id=args.env_id, args=asdict(args), obs_dim=8, act_dim=2, global_step=0,
                    actor=actor.state_dict(), qr1=critics[0].state_dict(), qr2=critics[1].state_dict(),
                    qc=critics[2].state_dict()), path)


@pytest.mark.slow  # a one-off diagnostic: checked on demand
def test_mean_vs_sample_mean_mode_is_the_scripts_evaluation(tmp_path):
    import cvpo
    import torch
    ckpt, out, eval_out = tmp_path / "model.pt", tmp_path / "mvs.json", tmp_path / "eval.json"
    torch.manual_seed(0)
    save_ball_checkpoint(ckpt, cvpo.Actor(8, 2), seed=3)
    proc = mean_vs_sample("--checkpoint", str(ckpt), "--episodes", "2", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    launch.run([sys.executable, os.path.join(ROOT, "cvpo.py"), "--eval-checkpoint", str(ckpt), "--eval-output",
                str(eval_out), "--eval-episodes", "2", "--eval-attackers", "none"], check=True)
    record, evaluated = json.loads(out.read_text()), json.loads(eval_out.read_text())["results"]["none"]
    # the mean mode replays the scripts' deterministic evaluation: same initial states, same actions
    assert record["mean"]["return_mean"] == pytest.approx(evaluated["return_mean"], abs=1e-6)
    assert record["mean"]["cost_mean"] == pytest.approx(evaluated["cost_mean"], abs=1e-6)
    assert record["sample"]["return_mean"] != pytest.approx(record["mean"]["return_mean"], abs=1e-6)
    assert record["cost_limit"] == 5.0 and record["sample"]["episodes"] == 2
    assert 0 <= record["sample"]["episodes_over_limit"] <= 2


@pytest.mark.slow  # a one-off diagnostic: checked on demand
def test_mean_vs_sample_records_executed_actions_clipped_to_the_box(tmp_path):
    import cvpo
    import torch
    ckpt, out = tmp_path / "model.pt", tmp_path / "mvs.json"
    actor = cvpo.Actor(8, 2)
    with torch.no_grad():  # a constant policy: mean (0.9, -0.9) in every state, std 0.74
        actor.body[-1].weight.zero_()
        actor.body[-1].bias.copy_(torch.tensor([math.atanh(0.9), math.atanh(-0.9), 0.0, 0.0]))
    save_ball_checkpoint(ckpt, actor, seed=1)
    proc = mean_vs_sample("--checkpoint", str(ckpt), "--episodes", "2", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["mean"]["action_mean"] == pytest.approx([0.9, -0.9], abs=1e-5)
    assert record["mean"]["action_abs_mean"] == pytest.approx([0.9, 0.9], abs=1e-5)
    # N(0.9, 0.74^2) clipped to [-1, 1] averages 0.65: the samples execute a milder action than the mean
    sample_mean = record["sample"]["action_mean"]
    assert 0.55 < sample_mean[0] < 0.75 and -0.75 < sample_mean[1] < -0.55
    assert all(0 < a <= 1 for a in record["sample"]["action_abs_mean"])


@pytest.mark.slow  # a one-off diagnostic: checked on demand
def test_mean_vs_sample_rejects_bad_input(tmp_path):
    import torch
    torch.save(dict(algo="ppol"), tmp_path / "other.pt")
    for flags, message in (((str(tmp_path / "missing.pt"),), "does not exist"),
                           ((str(tmp_path / "other.pt"),), "is not a checkpoint of cvpo.py"),
                           ((str(tmp_path / "other.pt"), "--episodes", "0"), "--episodes must be a positive")):
        proc = mean_vs_sample("--checkpoint", *flags)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def test_time_to_target_finds_the_first_evaluation_meeting_reward_and_cost(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = ["epoch,global_step,wall_time,attacker,return_mean,cost_mean,episodes"]
    # (return, cost) of the natural evaluation per epoch: 2 is too costly, 3 too slow, 4 and 6 meet the target
    for epoch, (ret, cost) in enumerate([(100, 0), (300, 9), (240, 1), (260, 5), (400, 20), (251, 0)], 1):
        rows += [f"{epoch},{epoch * 3000},{epoch * 60.0},none,{ret},{cost},20",
                 f"{epoch},{epoch * 3000},{epoch * 60.0},mc,{ret},{cost + 50},20"]
    (run_dir / "evals.csv").write_text("\n".join(rows) + "\n")
    args = time_to_target.Args(run_dirs=(str(run_dir),))
    text = time_to_target.report_run(str(run_dir), args)
    assert "first 260.0 / 5.00 at 12,000 steps, 4.0 min; 2 of 6 evaluations meet it" in text
    assert "last 251.0 / 0.00 at 18,000 steps, 6.0 min" in text
    assert "training episodes" not in text  # no progress.csv
    mc = time_to_target.report_run(str(run_dir), time_to_target.Args(run_dirs=(str(run_dir),), attacker="mc"))
    assert "first never; 0 of 6 evaluations" in mc
    proc = launch.run([sys.executable, "-m", "tools.diagnostics.time_to_target", "--run-dirs", str(tmp_path)],
                      timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"time_to_target.py: error: {str(tmp_path)!r} has no evals.csv (a run of an " \
                                  f"older version, or not a run directory)"


def test_ray_backend_gives_the_local_pools_results_and_reports_a_failure(tmp_path):
    """A 2-run grid on a local Ray instance: the cvpo_random run's state is unreadable and it fails, the cvpo run
    finishes with the evaluation the local pool gives for the same run here, its files back in the results tree."""
    from test_device import COMMON, FLAGS
    ball = "SafetyBallCircle-v0"
    flags = " ".join(a for a in COMMON + FLAGS["cvpo"] if a != ball and a != "--env-id")
    grids, stdout = {}, {}
    for backend, extra in (("ray", ["--methods", "cvpo", "cvpo_random", "--ray-address", "local", "--workers", "2"]),
                           ("pool", ["--methods", "cvpo", "--workers", "1"])):
        grids[backend] = tmp_path / backend
        if backend == "ray":
            unreadable_state(grids[backend], "cvpo_random", 1, ball)
        proc = launch.run([sys.executable, os.path.join(ROOT, "tools", "sweep.py"), *extra, "--env-ids", ball,
                           "--seeds", "1", "--results-dir", str(grids[backend]), f"--extra={flags}"], cwd=ROOT,
                          timeout=1200)
        assert proc.returncode == (1 if backend == "ray" else 0), proc.stdout + proc.stderr
        assert f"{ball} cvpo seed1: done" in proc.stdout
        stdout[backend] = proc.stdout
    assert f"{ball} cvpo_random seed1: resumed, FAILED (exit 1)" in stdout["ray"]
    run_dir = grids["ray"] / ball / "cvpo" / "seed1"
    assert {"eval.json", "progress.csv", "model.pt", "train_state.pt", "train.log"} <= set(os.listdir(run_dir))
    assert_same_run(json.loads((run_dir / "eval.json").read_text())["results"],
                    json.loads((grids["pool"] / ball / "cvpo" / "seed1" / "eval.json").read_text())["results"])


def test_warm_adam_attacker_takes_torch_adams_steps_stays_in_the_ball_and_keeps_its_state():
    import torch
    from tools.diagnostics.authors_attacker import WarmAdamAttacker
    torch.manual_seed(0)
    weights = torch.randn(3, 2)
    policy = lambda s: (torch.tanh(s @ weights), None)  # noqa: E731
    qc = lambda s0, a: (a * torch.tensor([1.0, -2.0])).sum(-1) + (s0 ** 2).sum(-1)  # noqa: E731
    obs, eps = torch.randn(4, 3), 0.05
    attacker = WarmAdamAttacker(lr=0.01, max_iters=3, tol=0.0)  # small lr: three steps stay inside the ball
    adv = attacker(obs, eps, policy, qc)
    # the same three steps by torch.optim.Adam on each row alone (the authors' attacker sees one state at a time)
    for row in range(4):
        delta = torch.zeros(1, 3, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=0.01)
        for _ in range(3):
            opt.zero_grad()
            (-0.5 * qc(obs[row:row + 1], policy(obs[row:row + 1] + delta)[0])).sum().backward()
            opt.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
        assert torch.allclose(adv[row] - obs[row], delta.detach()[0], atol=1e-6)
    assert attacker.t.flatten().tolist() == [3.0] * 4
    # a large lr reaches the ball's edge; the next call starts from there, not from the clean state
    strong = WarmAdamAttacker(lr=1.0, max_iters=60, tol=1e-4)
    first = strong(obs, eps, policy, qc) - obs
    assert (first.abs() <= eps + 1e-7).all() and (first.abs() > 0.99 * eps).any()
    with torch.no_grad():
        clean, attacked = qc(obs, policy(obs)[0]), qc(obs, policy(obs + first)[0])
    assert (attacked > clean).all()
    t_before = strong.t.clone()
    second = strong(obs, eps, policy, qc) - obs
    assert torch.allclose(strong.delta, second) and (strong.t > t_before).all()
    assert (strong.t - t_before).max() < 60  # converged at the edge: stops early


def test_the_authors_langevin_mad_lands_on_random_corners_not_adversarial_ones():
    import torch
    from attacks import corner_attack, mad_attack
    from tools.diagnostics.authors_mad import LangevinMAD, shift_stats
    torch.manual_seed(0)
    weights = torch.randn(6, 2)
    policy = lambda s: (torch.tanh(s @ weights), torch.full((len(s), 2), 0.3))  # noqa: E731
    obs, eps = torch.randn(2000, 6), 0.05
    langevin = LangevinMAD()
    first = langevin(obs, eps, policy)
    assert (first - obs).abs().max() <= eps + 1e-6
    second = langevin(obs, eps, policy)  # warm: the preconditioner has decayed, the noise only grew
    assert langevin.v.max() < 0.95 ** 119 + 1e-6
    corners = corner_attack(obs, eps)
    ours, theirs, random = (shift_stats(policy, obs, o, eps) for o in (mad_attack(obs, eps, policy, steps=10),
                                                                      second, corners))
    assert shift_stats(policy, obs, first, eps)["edge"] > 0.9 and theirs["edge"] > 0.9
    assert abs(theirs["sq_shift"] / random["sq_shift"] - 1) < 0.1  # what random signs give, within sampling
    assert ours["sq_shift"] > 2 * theirs["sq_shift"]


def test_selected_iterate_is_the_authors_best_score_evaluated_again_on_fresh_episodes(tmp_path):
    import csv
    from test_device import COMMON, FLAGS
    run_dir = tmp_path / "run"
    flags = [*COMMON, *FLAGS["cvpo"], "--eval-every", "1", "--eval-attackers", "none", "mc", "mr"]
    proc = launch.run([sys.executable, "cvpo.py", *flags, "--run-dir", str(run_dir)], cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with open(run_dir / "evals.csv") as f:
        rows = list(csv.DictReader(f))
    steps = sorted({int(r["global_step"]) for r in rows})
    assert sorted(os.listdir(run_dir / "checkpoints")) == [f"step{s:010d}.pt" for s in steps]
    scores = {s: sum(float(r["return_mean"]) / 20 - float(r["cost_mean"]) for r in rows if int(r["global_step"]) == s)
              for s in steps}
    proc = launch.run([sys.executable, os.path.join(ROOT, "tools", "select_iterate.py"), "--run-dirs", str(run_dir),
                       "--episodes", "3"], cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    selected = json.loads((run_dir / "selected.json").read_text())
    assert selected["step"] == max(scores, key=scores.get) and selected["score"] == pytest.approx(max(scores.values()))
    assert selected["eval_seed"] == 1001 and set(selected["results"]) == {"none", "mc", "mr"}
    assert all(r["episodes"] == 3 for r in selected["results"].values())
    (run_dir / "evals.csv").unlink()
    proc = launch.run([sys.executable, os.path.join(ROOT, "tools", "select_iterate.py"), "--run-dirs", str(run_dir)],
                      cwd=ROOT, timeout=600)
    assert proc.returncode == 1 and proc.stderr.strip() == \
        f"select_iterate.py: error: {str(run_dir)!r} has no evals.csv (train with --eval-every N)"


def test_branch_continues_a_runs_state_with_changed_arguments_and_refuses_bad_ones(tmp_path):
    import torch
    from test_device import COMMON, FLAGS
    base, branch = tmp_path / "base", tmp_path / "branch"
    proc = launch.run([sys.executable, "safer.py", *COMMON, *FLAGS["safer"], "--run-dir", str(base)], cwd=ROOT,
                      timeout=600)
    assert proc.returncode == 0, proc.stderr
    tool = [sys.executable, os.path.join(ROOT, "tools", "branch.py"), "--source", str(base)]
    proc = launch.run([*tool, "--target", str(branch), "--set", "iteration_steps=0", "std_fit=executed",
                       "eval_every_attackers=none mc"], cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    state = torch.load(branch / "train_state.pt", weights_only=True)
    source = torch.load(base / "train_state.pt", weights_only=True)
    assert (state["args"]["iteration_steps"], state["args"]["std_fit"]) == (0, "executed")
    assert tuple(state["args"]["eval_every_attackers"]) == ("none", "mc")
    assert state["global_step"] == source["global_step"] and state["epoch"] == source["epoch"]
    resumed = launch.run([sys.executable, "safer.py", "--resume", str(branch), "--total-timesteps", "1000"], cwd=ROOT,
                         timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((branch / "eval.json").read_text())["args"]["std_fit"] == "executed"
    for flags, needle in ((["--target", str(branch)], "exists already"),
                          (["--target", str(tmp_path / "x"), "--set", "seed=3"], "a branch keeps the source's seed"),
                          (["--target", str(tmp_path / "x"), "--set", "std_fit=bad"], "not a valid value"),
                          (["--target", str(tmp_path / "x"), "--set", "no_such=1"], "expected name=value")):
        proc = launch.run([*tool, *flags], cwd=ROOT, timeout=300)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("branch.py: error: ") and needle in lines[0], proc.stderr
    assert not (tmp_path / "x").exists()


def test_report_puts_the_selected_iterates_below_the_final_ones(tmp_path):
    results = tmp_path / "results"
    for seed, (natural, mc) in ((1, ((300, 0), (280, 1))), (2, ((200, 2), (260, 3)))):
        fabricate(results, "safer", seed, natural, mc, (320, 2))
    run_dir = results / ENV / "safer" / "seed1"
    chosen = {name: dict(return_mean=r, cost_mean=c) for name, (r, c) in (("none", (350, 0)), ("mc", (340, 1)),
                                                                          ("mr", (360, 2)))}
    (run_dir / "selected.json").write_text(json.dumps(dict(step=1000, results=chosen)))
    final, selected = report.table(str(results)), report.table(str(results), "selected")
    assert final[ENV]["safer"][2] == 2 and selected[ENV]["safer"][2] == 1  # only seed 1 has been selected
    assert selected[ENV]["safer"][0][0].tolist() == [350, 0]
    lines = report.readme_tables(final, selected).splitlines()
    row = lines.index(next(line for line in lines if line.startswith("| SAFER |")))
    assert lines[row + 1] == "| SAFER, selected | 1 | **350 / 0.00** | **340 / 1.00** | **360 / 2.00** |"
    assert "| SAFER, selected | 1 | 350.0+-0.0 / 0.00+-0.00 |" in report.markdown(final, selected)


def same_results(*flags):
    return launch.run([sys.executable, os.path.join(ROOT, "tools", "same_results.py"), *flags], cwd=ROOT, timeout=600)


def test_same_results_refuses_a_folder_that_is_not_a_checkout(tmp_path):
    proc = same_results("--before", str(tmp_path))
    assert proc.returncode == 1 and "is not a checkout of this project" in proc.stderr
    proc = same_results("--before", ROOT, "--scripts", "foo")
    assert proc.returncode == 1 and "unknown script 'foo'" in proc.stderr


@pytest.mark.slow
def test_same_results_finds_a_checkout_identical_to_itself_and_a_changed_one_different(tmp_path):
    proc = same_results("--before", ROOT, "--scripts", "ppol")
    assert proc.returncode == 0 and proc.stdout.count("identical") == 1, proc.stdout + proc.stderr
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("ppol.py", "attacks.py"):
        text = open(os.path.join(ROOT, name)).read()
        if name == "ppol.py":  # a different initial log-std: the same code path, other numbers
            assert "torch.full((act_dim,), -0.5)" in text
            text = text.replace("torch.full((act_dim,), -0.5)", "torch.full((act_dim,), -0.4)")
        (changed / name).write_text(text)
    proc = same_results("--before", ROOT, "--after", str(changed), "--scripts", "ppol")
    assert proc.returncode == 1 and "DIFFERENT" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow  # a one-off diagnostic: checked on demand
def test_box_fit_runs_the_scripts_e_step_on_a_checkpoint_and_writes_shares_of_the_box(tmp_path):
    import torch
    import cvpo
    torch.manual_seed(0)
    ckpt, out = tmp_path / "model.pt", tmp_path / "box.json"
    args = cvpo.resolve_args(cvpo.Args(env_id="SafetyCarCircle-v0"))
    cvpo.save_checkpoint(str(ckpt), cvpo.build_networks(8, 2), args, 8, 2, 0)
    proc = launch.run([sys.executable, "-m", "tools.diagnostics.box_fit", "--checkpoints", str(ckpt), "--episodes",
                       "1", "--states", "64", "--batch-size", "32", "--output", str(out)], cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    [record] = json.loads(out.read_text())
    assert record["checkpoint"] == str(ckpt) and record["states"] == 64
    for beyond, fit, clamped in zip(record["beyond"], record["fit_ratio"], record["clamped_ratio"]):
        # the mean is inside the box, so clamping a particle never moves it away from the mean: the fit to the
        # clamped particles can only be narrower
        assert 0 < beyond < 1 and 0 < clamped <= fit
