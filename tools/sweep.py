"""Sweep runner: a grid of methods x env ids x seeds, a pool of worker processes, resumable.

Each run writes into results/<env-id>/<method>/seed<N>/ (its run directory: progress.csv, eval.json, model.pt,
TensorBoard events, train.log). A run whose eval.json exists is skipped and an unfinished one (train_state.pt, no
eval.json) continues with --resume from its last epoch end, so an interrupted sweep goes on where it stopped; a
failed run is reported with its log path and the others go on.

Two backends: a pool of processes on this machine (the default), or an existing Ray cluster (--ray-address): each
run is then a Ray task of one CPU (and --gpus-per-run) that trains in a temporary directory of its node and returns
the run directory's files, which land in the same results tree on this machine, so the cluster needs no shared
filesystem. The code travels with the tasks (Ray's working_dir); each node needs the requirements installed. A
task whose node dies is retried (--retries); a run that fails is reported with its log and never stops the others.

    python tools/sweep.py --methods safer cvpo --env-ids SafetyCarCircle-v0 --seeds 1 2 3 \
        --extra='--total-timesteps 100000'
    python tools/sweep.py ... --ray-address auto          # the Ray cluster this machine has joined
"""

import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The methods, in the paper's order: directory name under results/<env-id>/ -> (script, its flags, label). The
# report reads this list too.
METHODS = {
    "safer": ("safer.py", [], "SAFER"),
    "safer_no_vm": ("safer.py", ["--no-vanilla-mstep"], "SAFER w/o vanilla M-step"),
    "safer_no_kl": ("safer.py", ["--no-adv-kl"], "SAFER w/o adv. KL"),
    "safer_no_mle": ("safer.py", ["--no-adv-mle"], "SAFER w/o adv. MLE"),
    "cvpo": ("cvpo.py", [], "CVPO-vanilla"),
    "cvpo_random": ("cvpo.py", ["--random-noise"], "CVPO-random"),
    "adv_cvpo": ("adv_cvpo.py", [], "ADV-CVPO"),
    "adv_em_cvpo": ("adv_cvpo.py", ["--attack-buffer"], "ADV-EM-CVPO"),
    "ppol": ("ppol.py", [], "PPOL"),
    "sa_ppol": ("sa_ppol.py", [], "SA-PPOL"),
    "sa_ppol_mc": ("sa_ppol.py", ["--attacker", "mc"], "SA-PPOL(MC)"),
    "adv_ppol": ("adv_ppol.py", [], "ADV-PPOL"),
    # SA-PPOL as the authors' code trained it (docs/sa_ppol.md); after the paper's methods, so colours stay
    "sa_ppol_corner": ("sa_ppol.py", ["--attacker", "corner"], "SA-PPOL(corner)"),
    # Table 7: SAFER at other bounds xi_adv of the adversarial KL (8); the report tabulates their worst case
    "safer_xi0.01": ("safer.py", ["--xi-adv", "0.01"], "SAFER xi_adv 0.01"),
    "safer_xi0.02": ("safer.py", ["--xi-adv", "0.02"], "SAFER xi_adv 0.02"),
    "safer_xi0.05": ("safer.py", ["--xi-adv", "0.05"], "SAFER xi_adv 0.05"),
    "safer_xi0.07": ("safer.py", ["--xi-adv", "0.07"], "SAFER xi_adv 0.07"),
    "safer_xi0.09": ("safer.py", ["--xi-adv", "0.09"], "SAFER xi_adv 0.09"),
    "safer_xi0.11": ("safer.py", ["--xi-adv", "0.11"], "SAFER xi_adv 0.11"),
    "safer_xi0.12": ("safer.py", ["--xi-adv", "0.12"], "SAFER xi_adv 0.12"),
}
# the algorithm scripts by name, for the tools that read their checkpoints and states
SCRIPTS = tuple(dict.fromkeys(script.removesuffix(".py") for script, _, _ in METHODS.values()))


@dataclass
class Args:
    methods: tuple[str, ...] = ("safer", "cvpo")
    """method directory names (see METHODS in this file)"""
    env_ids: tuple[str, ...] = ("SafetyCarCircle-v0",)
    """env ids"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """seeds"""
    workers: int = os.cpu_count() or 1
    """runs at once on this machine, each with one torch thread (the local pool; with --ray-address local, the
    CPUs of the local Ray instance)"""
    results_dir: str = "results"
    """root of results/<env-id>/<method>/seed<N>/"""
    extra: str = ""
    """extra flags for every run as one shell-quoted string, e.g. --extra='--total-timesteps 100000'"""
    ray_address: Optional[str] = None
    """run on Ray: auto (the cluster this machine has joined), HOST:PORT of its head, or local (a Ray instance
    started here with --workers CPUs)"""
    gpus_per_run: float = 0.0
    """with --ray-address, the GPU share each run asks for (e.g. 0.5: two runs per GPU)"""
    retries: int = 2
    """with --ray-address, how often a run whose node died is started again"""


THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_dir_of(results_dir, env_id, method, seed):
    return os.path.join(results_dir, env_id, method, f"seed{seed}")


def with_run_dir(argv, run_dir):
    """argv with the run directory in place of its {run_dir} marker."""
    return [run_dir if a == "{run_dir}" else a for a in argv]


def prepare(job):
    """(run directory, log path, script, its flags with {run_dir} standing for the run directory, resumed?), or None
    if the run is finished. Starts the log with the command as run from the repository's root."""
    method, env_id, seed, results_dir, extra = job
    script, flags, _ = METHODS[method]
    run_dir = run_dir_of(results_dir, env_id, method, seed)
    if os.path.exists(os.path.join(run_dir, "eval.json")):
        return None
    os.makedirs(run_dir, exist_ok=True)
    argv = ["--env-id", env_id, "--seed", str(seed), "--run-dir", "{run_dir}", "--threads", "1", *flags, *extra]
    resume = os.path.exists(os.path.join(run_dir, "train_state.pt"))
    if resume:  # the same command with --resume: the script refuses it if a flag now differs from the run's own
        argv += ["--resume", "{run_dir}"]
    log = os.path.join(run_dir, "train.log")
    with open(log, "a" if resume else "w") as f:
        f.write(" ".join(shlex.quote(c) for c in ["python", script, *with_run_dir(argv, run_dir)]) + "\n")
    return run_dir, log, script, argv, resume


def status_of(code, seconds, resume):
    status = f"done in {seconds / 60:.1f} min" if code == 0 else f"FAILED (exit {code})"
    return ("resumed, " + status) if resume else status


def run_local(job):
    """Run one job in a process of this machine; returns (job, status, log path)."""
    prepared = prepare(job)
    if prepared is None:
        return job, "skipped (eval.json exists)", None
    run_dir, log, script, argv, resume = prepared
    cmd = [sys.executable, os.path.join(ROOT, script), *with_run_dir(argv, run_dir)]
    start = time.time()
    with open(log, "a") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, **THREAD_ENV)).returncode
    return job, status_of(code, time.time() - start, resume), log


def read_tree(folder):
    """{path relative to folder: bytes} of every file under it."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def write_tree(folder, files):
    """Write {relative path: bytes} under folder, each file atomically."""
    for rel, data in files.items():
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)


def train_in_temp_dir(script, argv, files):
    """A Ray task: the run in a temporary directory of its node, seeded with the run directory's files (a resumed
    run's state, the log); returns (exit code, seconds, the run directory's files)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        write_tree(run_dir, files)
        start = time.time()
        with open(os.path.join(run_dir, "train.log"), "a") as f:
            code = subprocess.run([sys.executable, script, *with_run_dir(argv, run_dir)], stdout=f,
                                  stderr=subprocess.STDOUT, env=dict(os.environ, **THREAD_ENV)).returncode
        return code, time.time() - start, read_tree(run_dir)


def run_ray(jobs, args):
    """Submit every unfinished job as a Ray task; yields (job, status, log path) as they end."""
    import ray
    # the code travels with the tasks; results, runs and the venv stay here
    runtime_env = dict(working_dir=ROOT, excludes=[".git", ".venv", "results", "runs", "**/__pycache__"],
                       env_vars=THREAD_ENV)
    if args.ray_address == "local":
        # Ray starts its workers at nice 15, and a run then waits behind anything else on the machine
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=args.workers, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(address=args.ray_address, runtime_env=runtime_env, log_to_driver=False)
    task = ray.remote(num_cpus=1, num_gpus=args.gpus_per_run, max_retries=args.retries)(train_in_temp_dir)
    pending = {}
    for job in jobs:
        prepared = prepare(job)
        if prepared is None:
            yield job, "skipped (eval.json exists)", None
            continue
        run_dir, log, script, argv, resume = prepared
        pending[task.remote(script, argv, read_tree(run_dir))] = (job, run_dir, log, resume)
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        job, run_dir, log, resume = pending.pop(ref)
        try:
            code, seconds, files = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the task's node died more often than --retries, or Ray failed
            with open(log, "a") as f:
                f.write(f"sweep.py: the Ray task failed: {type(exc).__name__}: {exc}\n")
            yield job, f"FAILED ({type(exc).__name__})", log
            continue
        write_tree(run_dir, files)
        yield job, status_of(code, seconds, resume), log
    ray.shutdown()


def fail(message):
    raise SystemExit(f"sweep.py: error: {message}")


def check_run(method, env_id, seed, extra):
    """The error a run of the grid would stop with at once (an unknown env id, a flag its script refuses, a bad
    value), or None: the script's own argument checks, run here before any folder is made."""
    import contextlib
    import importlib
    import io
    script, flags, _ = METHODS[method]
    module = importlib.import_module(script.removesuffix(".py"))
    argv = ["--env-id", env_id, "--seed", str(seed), *flags, *extra]
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages), contextlib.redirect_stdout(messages):
            args, _ = module.parse_args(argv)
            module.resolve_args(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # the script's own one-line error
            return exc.code
        # tyro's framed message: a title, then the line that says what is wrong
        text = [line.strip().strip("│").strip() for line in messages.getvalue().splitlines()]
        text = [line for line in text if line and not set(line) <= set("-─╭╮╰╯ ")]
        return f"{script} refuses {' '.join(shlex.quote(a) for a in extra)}: " + \
            (text[1] if len(text) > 1 else f"see python {script} --help")
    return None


def main(args):
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        fail(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if args.workers < 1:
        fail(f"--workers must be >= 1, got {args.workers}")
    if args.gpus_per_run < 0 or args.retries < 0:
        fail(f"--gpus-per-run and --retries must be >= 0, got {args.gpus_per_run} and {args.retries}")
    if os.path.exists(args.results_dir) and not os.path.isdir(args.results_dir):
        fail(f"--results-dir {args.results_dir!r} is a file, not a folder")
    try:
        extra = shlex.split(args.extra)
    except ValueError as exc:
        fail(f"--extra {args.extra!r} is not a valid shell-quoted string ({exc})")
    sys.path.insert(0, ROOT)
    for env_id in args.env_ids:
        for method in args.methods:
            error = check_run(method, env_id, args.seeds[0] if args.seeds else 1, extra)
            if error:
                fail(f"{env_id} {method}: {error.removeprefix(METHODS[method][0] + ': error: ')}")
    jobs = [(m, e, s, args.results_dir, extra) for e in args.env_ids for m in args.methods for s in args.seeds]
    failed = []
    if args.ray_address is None:
        pool = ThreadPoolExecutor(max_workers=args.workers)
        outcomes = pool.map(run_local, jobs)
    else:
        outcomes = run_ray(jobs, args)
    for (method, env_id, seed, _, _), status, log in outcomes:
        print(f"{env_id} {method} seed{seed}: {status}" + (f", log {log}" if log else ""), flush=True)
        if "FAILED" in status:
            failed.append(log)
    if failed:
        print(f"{len(failed)} of {len(jobs)} runs failed; logs: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
