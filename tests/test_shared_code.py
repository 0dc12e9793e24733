"""The code every script carries a copy of: the copies are identical, and the pieces do what they say."""

import difflib
import importlib
import inspect
import os
import sys

import numpy as np
import pytest
import torch

import cvpo
import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OFF_POLICY = ("cvpo", "safer", "adv_cvpo")
ON_POLICY = ("ppol", "sa_ppol", "adv_ppol")
MODULES = {name: importlib.import_module(name) for name in OFF_POLICY + ON_POLICY}
MARKER = "# run plumbing"  # the comment line that opens the block every script ends with
# each script's own: its flags, their bounds, its state, its update and loop, SAFER's multipliers and their step with
# beta_adv's own cap, and the on-policy scripts' use of their attacks in the epoch's data and the policy update
OWN = {"Args", "check_args", "TrainState", "update", "train", "MStepDuals", "dual_step", "epoch_data", "ppo_update"}
# one copy per family: the off-policy scripts have two reward critics, target networks and a state-dependent std,
# ADV-PPOL ramps its attack as its authors did (exponentially in env steps), and only the off-policy ones have
# --preset fast
PER_FAMILY = {"Actor", "eps_schedule", "build_networks", "attack_critics", "preset_values"}
# the lines of each script's train that are not its family's first script's (cvpo.py, ppol.py), stripped: every
# other line is the same in the whole family, so a copy that drifts fails here
OWN_TRAIN_LINES = {
    "safer": [
        "eps_t = eps_schedule(run.epoch, args.eps, args.adv_start_epoch, args.adv_ramp_epochs)",
        "# the behaviour agent is never attacked: every stored transition is benign",
        "mean, std = actor(torch.as_tensor(obs, dtype=torch.float32, device=run.device))",
        "s.buffer.add(obs, act, step.rew, step.cost, step.real_next_obs, step.terminated)",
        "record(stats, update(s, batch, eps_t, args, qc_threshold, run.global_step))",
        'run.end_epoch(obs, stats, {"charts/eps_t": eps_t})'],
    "adv_cvpo": [
        "eps_t = eps_schedule(run.epoch, args.eps, args.adv_start_epoch, args.adv_ramp_epochs)",
        "# ADV-CVPO: the behaviour agent sees, and the buffer stores, MC-attacked observations nu(s)",
        "seen_obs = obs",
        "if not args.attack_buffer:",
        "seen_obs = critic_attack(torch.as_tensor(obs, dtype=torch.float32, device=run.device), eps_t, actor,",
        'nets["qc"], args.train_attack_steps, args.attack_lr).cpu().numpy()',
        "record(stats, update(s, batch, eps_t, args, qc_threshold, run.global_step))",
        'run.end_epoch(obs, stats, {"charts/eps_t": eps_t})'],
    "sa_ppol": [
        "# Algorithm 4, line 4: adversarial states for the whole rollout, once per epoch",
        'obs_adv = perturb(args.attacker, data.obs, args.eps, actor, nets["qr"], nets["qc"], args.train_attack_steps,',
        "args.attack_lr)",
        "stats, actor_steps_done = ppo_update(s, data, obs_adv, lam, args, run.rng)"],
    "adv_ppol": [
        "eps_t = eps_schedule(run.global_step, args.eps, args.adv_start_steps, args.adv_ramp_steps)",
        "def attack(states):  # nu(s) at this rollout's budget",
        'return perturb(args.attacker, torch.as_tensor(states, device=run.device), eps_t, actor, nets["qr"],',
        'nets["qc"], args.train_attack_steps, args.attack_lr)',
        "# Algorithm 5, line 3: the agent acts on, and learns from, nu(s)",
        "seen_obs = attack(obs.astype(np.float32))",
        "mean, std = actor(seen_obs)",
        "rollout.add(seen_obs.cpu().numpy(), act.cpu().numpy(), step.rew, step.cost, step.real_next_obs,",
        "step.terminated, step.truncated, logp.cpu().numpy())",
        "data = epoch_data(rollout, nets, lambda states: attack(states).cpu().numpy(), args, run.device)",
        '"losses/actor_steps": actor_steps_done, "charts/eps_t": eps_t})'],
}


def marker_line(name):
    """The number (from 0) of the line that opens the run plumbing block of name.py."""
    with open(os.path.join(ROOT, f"{name}.py")) as f:
        lines = f.read().splitlines()
    marks = [i for i, line in enumerate(lines) if line.startswith(MARKER)]
    assert len(marks) == 1, f"{name}.py has {len(marks)} lines starting with {MARKER!r}; one opens the block"
    return marks[0]


def plumbing_block(name):
    """The text of name.py from the rule above the marker line to the end."""
    with open(os.path.join(ROOT, f"{name}.py")) as f:
        lines = f.read().splitlines(keepends=True)
    return "".join(lines[marker_line(name) - 1:])


def test_every_script_ends_with_the_same_run_plumbing_block():
    """The plumbing each script needs to run safely is one block, byte for byte the same in all six."""
    reference = plumbing_block("cvpo")
    assert reference.startswith("# ====") and len(reference.splitlines()) > 500
    for name in MODULES:
        block = plumbing_block(name)
        if block != reference:
            first = next(i for i, (a, b) in enumerate(zip(reference.splitlines(), block.splitlines())) if a != b)
            pytest.fail(f"{name}.py's run plumbing differs from cvpo.py's at its line {first + 1}: "
                        f"{block.splitlines()[first]!r}")


def definitions(module):
    """The functions and classes the script defines above its run plumbing block (the block is checked whole)."""
    above = marker_line(module.__name__)
    return {name: obj for name, obj in vars(module).items()
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__
            and inspect.getsourcelines(obj)[1] <= above}


def shared_names():
    counts = {}
    for module in MODULES.values():
        for name in definitions(module):
            counts[name] = counts.get(name, 0) + 1
    return sorted(name for name, count in counts.items() if count > 1 and name not in OWN)


@pytest.mark.parametrize("name", shared_names())
def test_every_copy_of_a_shared_definition_is_identical(name):
    """A copy that drifts from the others is a bug nobody sees: compare the source of every copy."""
    families = (OFF_POLICY, ON_POLICY) if name in PER_FAMILY else (OFF_POLICY + ON_POLICY,)
    for family in families:
        sources = {m: inspect.getsource(getattr(MODULES[m], name)) for m in family if hasattr(MODULES[m], name)}
        assert len(set(sources.values())) == 1, f"{name} differs between {', '.join(sources)}"


def train_lines(name):
    return [line.strip() for line in inspect.getsource(MODULES[name].train).splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(OWN_TRAIN_LINES))
def test_train_differs_from_its_familys_first_script_only_in_its_own_lines(name):
    reference = train_lines("cvpo" if name in OFF_POLICY else "ppol")
    lines = train_lines(name)
    matcher = difflib.SequenceMatcher(a=reference, b=lines, autojunk=False)
    own = [line for tag, _, _, j1, j2 in matcher.get_opcodes() if tag != "equal" for line in lines[j1:j2]]
    assert own == OWN_TRAIN_LINES[name]


def test_train_reads_as_the_algorithms_loop_in_at_most_100_lines():
    for name, module in MODULES.items():
        assert len(inspect.getsource(module.train).splitlines()) <= 100, name


def test_qc_threshold_spreads_the_episode_limit_evenly():
    # the discounted sum of a constant per-step cost c over H steps is c (1 - gamma^H) / (1 - gamma); with
    # c = limit / H it is the threshold
    limit, gamma, horizon = 5.0, 0.99, 300
    per_step = limit / horizon
    discounted = sum(per_step * gamma**t for t in range(horizon))
    assert cvpo.qc_threshold_for(limit, gamma, horizon) == pytest.approx(discounted)


def test_step_costs_reads_the_last_step_of_a_reset_episode_from_final_info():
    infos = {"cost": np.array([0.0, 2.0, 0.0]), "_cost": np.array([False, True, False]),
             "final_info": np.array([None, None, {"cost": 1.0}]), "_final_info": np.array([False, False, True])}
    assert cvpo.step_costs(infos, 3).tolist() == [0.0, 2.0, 1.0]
    # when every env resets on the same step the "cost" key is missing altogether
    infos = {"final_info": np.array([{"cost": 3.0}, {}]), "_final_info": np.array([True, True])}
    assert cvpo.step_costs(infos, 2).tolist() == [3.0, 0.0]
    assert cvpo.step_costs({}, 2).tolist() == [0.0, 0.0]  # the reset info has no cost


def test_replay_buffer_wraps_around_and_its_state_round_trips():
    buffer = cvpo.ReplayBuffer(5, 2, 1)
    for step in range(3):  # 2 transitions per call: 6 into 5 slots
        obs = np.full((2, 2), step * 2 + np.arange(2)[:, None], np.float32)
        buffer.add(obs, np.zeros((2, 1)), np.arange(2) + 2 * step, np.zeros(2), obs + 1, np.zeros(2))
    assert buffer.size == 5 and buffer.ptr == 1
    assert buffer.rew.tolist() == [5, 1, 2, 3, 4]  # the sixth transition overwrote the first
    copy = cvpo.ReplayBuffer(5, 2, 1)
    copy.load_state_dict(buffer.state_dict())
    assert (copy.ptr, copy.size) == (buffer.ptr, buffer.size) and np.array_equal(copy.obs, buffer.obs)
    batch = buffer.sample(4, np.random.default_rng(0), "cpu")
    assert [t.shape[0] for t in batch] == [4] * 6


class ConstantQ(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, obs, act):
        return self.weight + torch.full((obs.shape[0],), self.value)


def test_update_critics_bootstraps_through_truncation_not_termination_with_the_twin_minimum():
    torch.manual_seed(0)
    obs, act = torch.zeros(2, 3), torch.zeros(2, 1)
    rew, cost = torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5])
    terminated = torch.tensor([0.0, 1.0])  # row 0 is mid-episode or truncated, row 1 terminated
    critics = [ConstantQ(0.0) for _ in range(3)]
    targets = [ConstantQ(10.0), ConstantQ(4.0), ConstantQ(2.0)]  # the reward target takes min(10, 4)
    actor = cvpo.Actor(3, 1)
    opt = torch.optim.SGD([c.weight for c in critics], lr=0.5)
    loss_r, loss_c = cvpo.update_critics((obs, act, rew, cost, obs, terminated), *critics, targets, actor, opt, 0.9)
    y_r, y_c = torch.tensor([1 + 0.9 * 4, 1.0]), torch.tensor([0.5 + 0.9 * 2, 0.5])
    assert loss_r == pytest.approx(2 * (y_r**2).mean().item())  # both reward critics start at 0
    assert loss_c == pytest.approx((y_c**2).mean().item())
    # one SGD step of 0.5 on the mean-squared error moves each constant critic to the targets' mean
    assert critics[0].weight.item() == pytest.approx(y_r.mean().item())
    assert critics[2].weight.item() == pytest.approx(y_c.mean().item())


def test_drone_run_is_the_papers_100_steps_at_the_authors_frame_skip_and_other_envs_are_as_registered():
    # bullet-safety-gym redirects the C-level stdout while it builds an env, which pytest's capture breaks: a child
    code = """
import gymnasium as gym, pybullet, cvpo
env = cvpo.make_env("SafetyDroneRun-v0")()
env.reset(seed=0)
print([bool(env.step(env.action_space.sample())[3]) for _ in range(100)].index(True))
params = env.unwrapped.bc.getPhysicsEngineParameters()
print(params["numSubSteps"], round(params["fixedTimeStep"] * 120, 9))
for env_id in ("SafetyBallCircle-v0", "SafetyCarCircle-v0", "SafetyAntRun-v0"):
    made, registered = cvpo.make_env(env_id)(), gym.make(env_id)
    print(made.spec.max_episode_steps == registered.spec.max_episode_steps
          and made.unwrapped.frame_skip == registered.unwrapped.frame_skip)
"""
    proc = launch.run([sys.executable, "-c", code], cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-6:] == ["99", "4", "4.0", "True", "True", "True"]
