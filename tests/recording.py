"""Run a training script in a child process that records what it does: every transition handed to its replay
buffer, or how often it copies its old policy.

bullet-safety-gym redirects the C-level stdout while it builds an env, which fails under pytest's capture, so
in-process training runs are not possible; the child saves what its buffer received to an .npz file.
Also the check of the evaluation files every script writes.
"""

import csv
import json
import os
import sys

import numpy as np

import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import importlib, sys, numpy as np, tyro
script = importlib.import_module(sys.argv[1])
buffer_class = getattr(script, sys.argv[3])
stored = []
add = buffer_class.add
def recording_add(self, obs, act, rew, cost, next_obs, *rest):
    stored.append((np.array(obs), np.array(next_obs)))
    add(self, obs, act, rew, cost, next_obs, *rest)
buffer_class.add = recording_add
script.train(script.resolve_args(tyro.cli(script.Args, args=sys.argv[4:])))
np.savez(sys.argv[2], obs=np.stack([s[0] for s in stored]), next_obs=np.stack([s[1] for s in stored]))
"""


def run_child(code, *argv):
    """Run `code` in a fresh Python with `argv` from the project's root; it must exit with status 0."""
    proc = launch.run([sys.executable, "-c", code, *argv], cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def recorded_run(module, tmp_path, flags, buffer_class="ReplayBuffer"):
    """Train `module` (e.g. "safer") with `flags`, recording what `buffer_class`.add(obs, act, rew, cost, next_obs,
    ...) receives; returns (completed process, stored obs, stored next obs)."""
    record_file = tmp_path / "stored.npz"
    proc = run_child(CHILD, module, str(record_file), buffer_class, *flags)
    stored = np.load(record_file)
    return proc, stored["obs"], stored["next_obs"]


COUNT_COPIES = """
import importlib, sys, tyro
script = importlib.import_module(sys.argv[1])
copies = []
load = script.Actor.load_state_dict
def counting_load(self, *args, **kwargs):
    copies.append(1)
    return load(self, *args, **kwargs)
script.Actor.load_state_dict = counting_load
script.train(script.resolve_args(tyro.cli(script.Args, args=sys.argv[2:])))
print("old policy copies", len(copies))
"""


def count_old_policy_copies(module, flags):
    """Train `module` with `flags`; returns how many times an Actor loaded a state dict (the old policy's copies:
    training loads no other actor)."""
    proc = run_child(COUNT_COPIES, module, *flags)
    return int(proc.stdout.rsplit("old policy copies ", 1)[1])


def assert_eval_outputs(run_dir):
    """evals.csv holds a row per attacker and evaluation; its last evaluation's rows are eval.json's means; the
    natural evaluation made model_best.pt."""
    with open(os.path.join(run_dir, "evals.csv")) as f:
        rows = list(csv.DictReader(f))
    record = json.loads(open(os.path.join(run_dir, "eval.json")).read())
    last = [r for r in rows if int(r["global_step"]) == record["global_step"]]
    assert [r["attacker"] for r in last] == list(record["results"])
    for row in last:
        result = record["results"][row["attacker"]]
        assert float(row["return_mean"]) == result["return_mean"] and float(row["cost_mean"]) == result["cost_mean"]
        assert int(row["episodes"]) == result["episodes"]
    assert os.path.isfile(os.path.join(run_dir, "model_best.pt"))
    return rows


def max_relative_difference(got, want, path="result"):
    """The largest |got - want| / max(|want|, 1) over the numbers of two nested results (dicts, lists, numbers,
    and numeric strings as progress.csv holds them); anything else, and the structure, must be equal."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{path}: keys differ"
        return max((max_relative_difference(got[k], want[k], f"{path}[{k!r}]") for k in want), default=0.0)
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: lengths differ"
        return max((max_relative_difference(g, w, f"{path}[{i}]") for i, (g, w) in enumerate(zip(got, want))),
                   default=0.0)
    if isinstance(want, str):
        try:
            want_number = float(want)
        except ValueError:
            assert got == want, f"{path}: {got!r} != {want!r}"
            return 0.0
        got, want = float(got), want_number
    if isinstance(want, bool) or not isinstance(want, (int, float)):
        assert got == want, f"{path}: {got!r} != {want!r}"
        return 0.0
    return abs(got - want) / max(abs(want), 1.0)


# Two runs compared here are both made on the machine the test runs on, where the same computation gives the same
# bits; the tolerance only absorbs the text round trip of progress.csv. (Across CPUs an episode's last bits grow to
# whole percents, so no test compares with numbers recorded on another machine.)
SAME_RUN_TOLERANCE = 1e-9


def assert_same_run(got, want):
    difference = max_relative_difference(got, want)
    assert difference <= SAME_RUN_TOLERANCE, f"the results differ by {difference:.3g} relative"
