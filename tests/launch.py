"""Run the project's scripts as separate processes without paying their imports each time.

Most tests start a script as a user would (`python safer.py ...`) and read its files, output and exit status. A
fresh interpreter spends ~2.5 s importing torch, gymnasium, pybullet and scipy before the script's first line, and
the suite starts ~70 of them. Here one server process per test worker imports those libraries once and forks a
fresh process for each launch, which then runs the script as `python` would (its `__main__`, `sys.argv`,
`sys.path[0]`, working directory, exit status and signals). The forked process is re-parented to the test worker
(a Linux child subreaper), so the test waits for it and signals it like any child. Not for tests of start-up
itself: those use `subprocess`.

run(argv, ...) mirrors subprocess.run(argv, capture_output=True, text=True, ...) and start(argv, ...) a Popen with
both streams captured, for argv = [sys.executable, <script path> | -m <module> | -c <code>, *args].
"""

import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PRELOADED = ["numpy", "scipy.optimize", "torch", "torch.utils.tensorboard", "gymnasium", "bullet_safety_gym", "tyro"]
PR_SET_CHILD_SUBREAPER = 36
_server = None


class Launched:
    """A launched script: poll, wait, send_signal and communicate as on a subprocess.Popen."""

    def __init__(self, args, pid, out_dir):
        self.args, self.pid, self.returncode, self._out_dir = args, pid, None, out_dir

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                self.send_signal(signal.SIGKILL)
                self.wait()
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.005)
        return self.returncode

    def send_signal(self, sig):
        if self.returncode is None:
            os.kill(self.pid, sig)

    def communicate(self, timeout=None):
        self.wait(timeout)
        streams = []
        for name in ("stdout", "stderr"):
            with open(os.path.join(self._out_dir, name), errors="replace") as f:
                streams.append(f.read())
        return tuple(streams)


def _start_server():
    global _server
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(theirs.fileno())],
                            pass_fds=[theirs.fileno()])
    theirs.close()
    # every launch's captured output lives under one folder of this worker's, removed when the worker exits
    _server = (proc, ours, ours.makefile("r"), tempfile.mkdtemp(prefix="launch_"))
    atexit.register(shutil.rmtree, _server[3], ignore_errors=True)
    atexit.register(proc.kill)


def start(argv, cwd=None):
    """Launch argv (see the module docstring) with both output streams captured."""
    if argv[0] != sys.executable or len(argv) < 2:
        raise ValueError(f"launch.start runs {sys.executable} <script> | -m | -c, not {argv}")
    if _server is None or _server[0].poll() is not None:
        _start_server()
    out_dir = tempfile.mkdtemp(dir=_server[3])
    request = dict(argv=list(map(str, argv[1:])), cwd=os.path.abspath(cwd or os.getcwd()), env=dict(os.environ),
                   out_dir=out_dir)
    _server[1].sendall((json.dumps(request) + "\n").encode())
    reply = _server[2].readline()
    if not reply:
        raise RuntimeError("the launch server exited")
    return Launched(argv, json.loads(reply)["pid"], out_dir)


def run(argv, cwd=None, timeout=None, check=False):
    """subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout, check=check), forked."""
    launched = start(argv, cwd)
    stdout, stderr = launched.communicate(timeout)
    done = subprocess.CompletedProcess(argv, launched.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


def _exit_status(exc):
    """What python's own exit would give for an exception escaping __main__ (None: no exception)."""
    import traceback
    if exc is None:
        return 0
    if isinstance(exc, SystemExit):
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    traceback.print_exception(exc)
    if isinstance(exc, KeyboardInterrupt):
        return -signal.SIGINT
    return 1


def _run_as_main(argv, cwd):
    import runpy
    import threading
    os.chdir(cwd)
    exc = None
    try:
        if argv[0] == "-m":
            sys.argv, sys.path[0] = ["-m", *argv[2:]], cwd
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] == "-c":
            sys.argv, sys.path[0] = ["-c", *argv[2:]], ""
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:
            sys.argv, sys.path[0] = list(argv), os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
    except BaseException as e:  # noqa: B036 - everything python's own exit handles
        exc = e
    status = _exit_status(exc)
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status)


def _child(request, sock):
    """The forked process: detach from the server, set up as python would, run, exit with python's status."""
    sock.close()
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, name, mode in ((0, os.devnull, os.O_RDONLY), (1, "stdout", os.O_WRONLY | os.O_CREAT),
                           (2, "stderr", os.O_WRONLY | os.O_CREAT)):
        target = os.open(os.path.join(request["out_dir"], name), mode, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False, buffering=1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _run_as_main(request["argv"], request["cwd"])


def serve(fd):
    """Import the heavy libraries once, then fork one process per request until the test worker goes away."""
    import importlib
    for name in PRELOADED:
        importlib.import_module(name)
    import torch
    torch.set_num_threads(1)
    sock = socket.socket(fileno=fd)
    requests = sock.makefile("r")
    for line in requests:
        request = json.loads(line)
        read_end, write_end = os.pipe()
        middle = os.fork()
        if middle == 0:  # fork twice so that the script's process is re-parented to the test worker
            os.close(read_end)
            pid = os.fork()
            if pid == 0:
                os.close(write_end)
                _child(request, sock)
            os.write(write_end, str(pid).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as f:
            pid = int(f.read())
        os.waitpid(middle, 0)  # the script's process has its new parent once the middle one is gone
        sock.sendall((json.dumps({"pid": pid}) + "\n").encode())


if __name__ == "__main__":
    serve(int(sys.argv[1]))
