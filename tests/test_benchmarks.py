"""The side-by-side benchmark's parsing of FSRL's console, its quality rule, and its refusals."""

import importlib.util
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("time_to_quality", os.path.join(ROOT, "benchmarks", "time_to_quality.py"))
ttq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ttq)

# the shape of FSRL's verbose epoch summary (tianshou-style logger): rows of a table, then the epoch line
FSRL_EPOCH = """
|          mstep/mstep_kl_std |         0.00051 |
|                   test/cost |             3.5 |
|                 test/length |             300 |
|                 test/reward |           -1.11 |
|             update/env_step |         1.2e+04 |
Epoch: 1 {'duration': 54.9, 'test_time': 1.07}
|                   test/cost |               0 |
|                 test/reward |             221 |
|             update/env_step |       1.5e+04 |
Epoch: 2 {'duration': 50.1, 'test_time': 1.10}
"""


def test_fsrl_epoch_tables_become_points():
    run = ttq.FsrlRun.__new__(ttq.FsrlRun)
    run.points, run.step, run.start = [], 0, 0.0
    for line in FSRL_EPOCH.splitlines():
        run.parse(line.strip())
    assert [(p["env_steps"], p["reward"], p["cost"]) for p in run.points] == [(12000, -1.11, 3.5), (15000, 221.0, 0.0)]


def test_first_time_needs_reward_and_cost_together():
    points = [dict(minutes=1, reward=260, cost=9), dict(minutes=2, reward=210, cost=0), dict(minutes=3, reward=255,
                                                                                            cost=5)]
    assert ttq.first_time(points, 200, 5)["minutes"] == 2
    assert ttq.first_time(points, 250, 5)["minutes"] == 3
    assert ttq.first_time(points, 300, 5) is None


@pytest.mark.parametrize("changes, needle", [
    (dict(minutes=0), "--minutes must be > 0, got 0"),
    (dict(pair="cvpo-fsrl", fsrl=None), "--pair cvpo-fsrl needs --fsrl PATH"),
    (dict(pair="cvpo-fsrl", fsrl="/nonexistent"), "--fsrl '/nonexistent': no examples/mlp/train_cvpo_agent.py"),
    (dict(pair="cvpo-cvpo", extra_second=" "), "--pair cvpo-cvpo needs --extra-second flags other than --extra's"),
    (dict(pair="cvpo-cvpo", extra="--mstep-iters 5", extra_second="--mstep-iters  5"), "other than --extra's"),
])
def test_bad_input_is_refused_before_anything_starts(changes, needle, tmp_path):
    args = ttq.Args(output_dir=str(tmp_path / "out"), **changes)
    with pytest.raises(SystemExit, match=needle):
        ttq.main(args)
    assert not (tmp_path / "out").exists()


def test_speed_refuses_a_checkpoint_it_cannot_attack(tmp_path):
    spec = importlib.util.spec_from_file_location("speed", os.path.join(ROOT, "benchmarks", "speed.py"))
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    ball = os.path.join(ROOT, "results", "SafetyBallCircle-v0", "safer", "seed1", "model.pt")
    actor, qc = speed.read_checkpoint("SafetyBallCircle-v0", ball)
    saved = torch.load(ball, weights_only=True)
    for network, key in ((actor, "actor"), (qc, "qc")):
        assert all(torch.equal(v, saved[key][k]) for k, v in network.state_dict().items())
    with pytest.raises(SystemExit, match="is not a model.pt of SafetyCarCircle-v0"):
        speed.read_checkpoint("SafetyCarCircle-v0", ball)
    with pytest.raises(SystemExit, match="holds no actor and cost critic of the off-policy scripts' shape"):
        speed.read_checkpoint("SafetyBallCircle-v0", ball.replace("safer", "ppol"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="is not a readable torch checkpoint"):
        speed.read_checkpoint("SafetyBallCircle-v0", str(tmp_path / "junk.pt"))


def test_across_seeds_gives_medians_and_counts_a_missed_target_as_later_than_any_hit():
    args = ttq.Args(minutes=20.0, targets=(200.0, 250.0))
    per_seed = [{"sps": 100.0, 200.0: (10.0, 60_000), 250.0: (15.0, 90_000)},
                {"sps": 120.0, 200.0: (12.0, 80_000), 250.0: None},
                {"sps": 110.0, 200.0: (8.0, 50_000), 250.0: None}]
    text = ttq.across_seeds("cvpo.py", per_seed, args)
    assert "env steps/s median 110 (range 100-120)" in text
    assert ("first 200 with cost <= 5: reached by 3 of 3; median 10.0 min, 60,000 env steps (range 8.0-12.0 min)"
            in text)
    assert "first 250 with cost <= 5: reached by 1 of 3; median not reached (range 15.0-15.0 min)" in text
    points = [dict(minutes=1.0, env_steps=3000, reward=210.0, cost=0.0)]
    assert ttq.metrics(points, args) == {"sps": 3000 / 1200, 200.0: (1.0, 3000), 250.0: None}
