"""Branch a run: a copy of a run's training state, with some of its arguments changed, to continue with --resume.

To compare variants of an algorithm, train once to a saved state, then branch each variant from it beside an
unchanged branch (the control), instead of training each from scratch. A resumed run keeps its stored arguments;
this writes a new run directory whose train_state.pt is the source's with the given arguments changed, checked
against the script's own Args (its fields and their types as the command line would give them). An argument the
script has gained since the source began takes the value its ADDED_FLAGS gives (else its default), one it has lost is
dropped; both are printed. The branch's progress.csv and evals.csv continue the source's rows.

    python tools/branch.py --source runs/base --target runs/it3000 --set iteration_steps=3000
    python safer.py --resume runs/it3000 --total-timesteps 705000
"""

import contextlib
import importlib
import io
import os
import sys
from dataclasses import dataclass, fields

import torch
import tyro

from sweep import SCRIPTS  # tools/ is this script's folder, so on its path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STATE_FILE = "train_state.pt"
FIXED = ("env_id", "seed", "num_envs", "steps_per_epoch", "buffer_size")  # the state's shapes and episodes


@dataclass
class Args:
    source: str
    """run directory holding the train_state.pt to branch from"""
    target: str
    """new run directory of the branch (must not exist)"""
    set: tuple[str, ...] = ()
    """changed arguments as name=value, with the script's field names (iteration_steps=3000; several values
    separated by spaces: "eval_every_attackers=none mc mr")"""


def fail(message):
    raise SystemExit(f"branch.py: error: {message}")


def parse_value(script, name, text, several):
    """text as the script's command line would read it for field `name` (several values: split at spaces)."""
    argv = [f"--{name.replace('_', '-')}", *(text.split() if several else [text])]
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return getattr(tyro.cli(script.Args, args=argv, config=script.CLI_CONFIG), name)
    except SystemExit:
        fail(f"--set {name}={text}: not a valid value for {script.ALGO}.py's --{name.replace('_', '-')}")


def parse_flag(script, name):
    """A boolean field set by its flag alone (the scripts' flags take no value)."""
    return getattr(tyro.cli(script.Args, args=[f"--{name.replace('_', '-')}"], config=script.CLI_CONFIG), name)


def branch(args):
    path = os.path.join(args.source, STATE_FILE)
    if not os.path.isfile(path):
        fail(f"--source {args.source!r}: no {STATE_FILE} there")
    if os.path.exists(args.target):
        fail(f"--target {args.target!r} exists already; a branch starts in a new directory")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the same bad input to the user
        fail(f"{path!r} is not a readable training state ({type(exc).__name__})")
    if not isinstance(state, dict) or state.get("algo") not in SCRIPTS or not state.get("epoch"):
        fail(f"{path!r} is not the state of a run of {', '.join(s + '.py' for s in SCRIPTS)} past its first epoch")
    script = importlib.import_module(state["algo"])
    names = {field.name: field for field in fields(script.Args)}
    stored = dict(state["args"])
    for name in sorted(set(stored) - set(names)):
        print(f"dropped {name}={stored.pop(name)!r}: {script.ALGO}.py no longer has it")
    default = script.Args()
    for name in sorted(set(names) - set(stored)):
        stored[name] = script.ADDED_FLAGS.get(name, getattr(default, name))
        why = "the value that repeats runs begun before it" if name in script.ADDED_FLAGS else "its default"
        print(f"added {name}={stored[name]!r}: new in {script.ALGO}.py since the source began ({why})")
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep or name not in names:
            fail(f"--set {item!r}: expected name=value with a field of {script.ALGO}.py's Args")
        if name in FIXED or name in ("resume", "run_dir", "output_dir", "eval_checkpoint"):
            fail(f"--set {name}: a branch keeps the source's {name}")
        if isinstance(getattr(default, name), bool):
            if text not in ("true", "false"):
                fail(f"--set {item!r}: {name} is true or false")
            value = text == "true" and parse_flag(script, name)
        else:
            value = parse_value(script, name, text, "tuple" in str(names[name].type))
        print(f"{name}: {stored[name]!r} -> {value!r}")
        stored[name] = value
    stored["run_dir"] = args.target
    state["args"] = stored
    os.makedirs(args.target)
    target = os.path.join(args.target, STATE_FILE)
    tmp = f"{target}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, target)
    print(f"wrote {target} (step {state['global_step']:,}, epoch {state['epoch']}); continue it with: "
          f"python {script.ALGO}.py --resume {args.target} --total-timesteps N")


if __name__ == "__main__":
    branch(tyro.cli(Args))
