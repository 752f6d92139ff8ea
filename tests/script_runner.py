"""The project's scripts run as a user runs them, each in a process of its own, without paying for the imports.

A fresh ``python train.py`` spends about 5 of its CPU seconds on two cores importing TensorFlow and
Keras (JAX and Keras: about 4), before it reads a flag; the suite runs the scripts more than a hundred
times, several at once in the cluster cases.  So each run is started in a forked copy of a waiting
process (one per pytest worker and framework set-up) that has imported the project's modules, and
nothing more: no framework op has run there, so no thread pool or device state is copied.  Each run is
still its own process, with its own pid, exit status, stdout and stderr (read back as text), working
folder and environment; an uncaught exception prints its traceback and exits 1, as Python does.

`run` waits for the run, as ``subprocess.run(..., capture_output=True, text=True)`` does; `start`
returns at once with a handle that a test uses as it would a ``subprocess.Popen``: ``pid``, ``poll``,
``wait``, ``send_signal``, ``kill``, ``communicate``, ``returncode``.  The environment variables that
the frameworks read when they start (``KERAS_BACKEND``, ``XLA_FLAGS``, the JAX and thread settings,
...) pick the waiting process: one per combination, started on first use.  Where
``OASIS_GAN_TEST_FRESH_PROCESSES=1``, every run gets a fresh interpreter instead, exactly as a user's
does (to check that both agree).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRESH_VARIABLE = "OASIS_GAN_TEST_FRESH_PROCESSES"
# Read when the frameworks start (not when a run asks for them), so each combination has its own waiting
# process.  TF_CONFIG is not among them: TensorFlow reads it when a run sets up its cluster.
START_UP_VARIABLES = ("KERAS_BACKEND", "XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES",
                      "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "PYTHONPATH",
                      "TF_ENABLE_ONEDNN_OPTS", "JAX_PLATFORMS", "JAX_ENABLE_X64", "JAX_COMPILATION_CACHE_DIR",
                      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
                      "JAX_LOG_COMPILES")

# The waiting process: imports the scripts' modules, then forks one child per request read from stdin (a
# JSON line) and answers on stdout with the child's pid at once, and with its exit status when it ends.
# Several children may run at once (the processes of one cluster run): the loop reaps them as they end.
WAITING_PROCESS = r"""
import atexit, json, os, runpy, select, signal, sys, traceback
sys.path.insert(0, os.environ["REPO"])
# What the scripts import once past their flags (they import Keras late, to keep --help light); no op runs here.
import keras, metrics, modelscript
import train, generate, evaluate, tqdm.auto
from oasis_gan import batches, engines, plots, training
from oasis_gan.runs import checkpoints, run_folder, sampling
if keras.backend.backend() == "tensorflow":  # the JAX path must not import TensorFlow
    from oasis_gan.engines import tensorflow_engine
answers = os.fdopen(os.dup(1), "w")
children = {}  # pid -> the request's id


def answer(**message):
    answers.write(json.dumps(message) + "\n")
    answers.flush()


def run_child(request):
    code = 1
    try:
        os.close(answers.fileno())
        os.chdir(request["cwd"])
        os.environ.clear(); os.environ.update(request["env"])
        for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                               (2, request["stderr"], os.O_WRONLY)):
            os.dup2(os.open(path, mode), fd)
        if request["ignore_sigint"]:  # as a shell's `cmd &` starts it
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.argv = [request["script"], *request["args"]]
        sys.path[0] = os.path.dirname(request["script"])
        try:
            runpy.run_path(request["script"], run_name="__main__")
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush(); sys.stderr.flush()
        finally:
            os._exit(code)


pending, open_ = b"", True
while open_ or children:
    ready, _, _ = select.select([0] if open_ else [], [], [], 0.05 if children else None)
    if ready:
        chunk = os.read(0, 1 << 16)
        open_ = bool(chunk)
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            sys.stdout.flush(); sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                run_child(request)
            children[pid] = request["id"]
            answer(id=request["id"], pid=pid)
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        answer(id=children.pop(pid), status=os.waitstatus_to_exitcode(status))
"""


class _WaitingProcess:
    """One waiting process and what it has answered: each child's pid, and its exit status once it ended."""

    def __init__(self, environment: dict):
        self.process = subprocess.Popen([sys.executable, "-c", WAITING_PROCESS], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=environment,
                                        cwd=ROOT)
        self.pids: dict[int, int] = {}
        self.statuses: dict[int, int] = {}
        self.next_id = 0
        self.pending = b""

    def alive(self) -> bool:
        return self.process.poll() is None

    def submit(self, request: dict) -> int:
        """Send one run's request; its id."""
        self.next_id += 1
        self.process.stdin.write((json.dumps(dict(request, id=self.next_id)) + "\n").encode())
        self.process.stdin.flush()
        return self.next_id

    def read(self, timeout: float | None) -> None:
        """Take what the waiting process has answered, waiting up to ``timeout`` s for the first answer."""
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return
        chunk = os.read(self.process.stdout.fileno(), 1 << 16)
        if not chunk:
            raise RuntimeError("the tests' waiting process ended; rerun with OASIS_GAN_TEST_FRESH_PROCESSES=1")
        self.pending += chunk
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            message = json.loads(line)
            if "pid" in message:
                self.pids[message["id"]] = message["pid"]
            else:
                self.statuses[message["id"]] = message["status"]

    def read_until(self, done, timeout: float | None) -> bool:
        """Take answers until ``done()`` holds (True) or ``timeout`` s have passed (False; None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.read(left)
        return True

    def pid_of(self, request_id: int) -> int:
        if not self.read_until(lambda: request_id in self.pids, 60):
            raise RuntimeError("the tests' waiting process did not start a run within 60 s")
        return self.pids[request_id]


_waiting: dict[tuple, _WaitingProcess] = {}  # this pytest worker's waiting processes, by start-up variables


def _start_environment() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", REPO=str(ROOT))


def _waiting_process(environment: dict) -> _WaitingProcess | None:
    """The waiting process for a run in `environment`, started on first use; None where runs start fresh."""
    if os.environ.get(FRESH_VARIABLE) == "1" or environment.get("KERAS_BACKEND") not in (None, "tensorflow", "jax"):
        return None  # (a backend the project refuses: the waiting process could not import Keras with it)
    key = tuple(environment.get(name) for name in START_UP_VARIABLES)
    if key not in _waiting or not _waiting[key].alive():
        start = {name: value for name, value in _start_environment().items() if name not in START_UP_VARIABLES}
        start.update((name, value) for name, value in zip(START_UP_VARIABLES, key) if value is not None)
        _waiting[key] = _WaitingProcess(start)
    return _waiting[key]


class Forked:
    """A script running in a forked copy of a waiting process, used as a ``subprocess.Popen`` (text) is."""

    def __init__(self, waiting: _WaitingProcess, request_id: int, args: list[str], folder: Path):
        self.waiting, self.request_id, self.args, self.folder = waiting, request_id, args, folder
        self.pid = waiting.pid_of(request_id)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.waiting.read(0)
            self.returncode = self.waiting.statuses.get(self.request_id)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self.waiting.read_until(lambda: self.poll() is not None, timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.poll() is None:  # not yet reaped by the waiting process: the pid is still this run's
            os.kill(self.pid, number)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def output(self) -> tuple[str, str]:
        return tuple((self.folder / name).read_text(errors="replace") for name in ("stdout", "stderr"))

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the run; its (stdout, stderr)."""
        self.wait(timeout)
        return self.output()

    def __del__(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def _environment(env: dict | None) -> dict:
    """This process's environment for a run, with `env`'s changes (a value of None removes the variable)."""
    environment = _start_environment()
    environment.pop("REPO")
    environment.update(env or {})
    return {name: value for name, value in environment.items() if value is not None}


def start(script: str | Path, *args, cwd, env: dict | None = None, ignore_sigint: bool = False):
    """``python ROOT/script ARGS`` in `cwd`, in the background -> a handle used as a ``subprocess.Popen``.

    `script` is relative to the repository (or absolute); `env` adds to (or overrides, or with None removes
    from) this process's environment, with the repository on PYTHONPATH and TensorFlow's C++ log lines off.  ``ignore_sigint``
    starts it with SIGINT ignored, as a shell's ``cmd &`` does.
    """
    environment = _environment(env)
    command = [sys.executable, str(ROOT / script), *map(str, args)]
    waiting = _waiting_process(environment)
    if waiting is None:
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        return subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=ignore)
    folder = Path(tempfile.mkdtemp(prefix="script-runner-"))
    (folder / "stdout").touch(), (folder / "stderr").touch()
    request_id = waiting.submit({"script": command[1], "args": command[2:], "cwd": str(cwd), "env": environment,
                                 "stdout": str(folder / "stdout"), "stderr": str(folder / "stderr"),
                                 "ignore_sigint": ignore_sigint})
    return Forked(waiting, request_id, command, folder)


def run(script: str | Path, *args, cwd, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python ROOT/script ARGS`` in `cwd` -> its exit status and output, as ``subprocess.run`` gives them.

    Raises ``subprocess.TimeoutExpired`` after `timeout` seconds, having killed the run.
    """
    process = start(script, *args, cwd=cwd, env=env)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise subprocess.TimeoutExpired(process.args, timeout, out, err) from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)
