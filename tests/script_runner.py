"""The project's scripts run as a user runs them, each in a process of its own, without paying for the imports.

A fresh ``python train.py`` spends about 7 of its CPU seconds on two cores importing TensorFlow and
Keras, before it reads a flag; the suite runs the scripts about a hundred times.  So `run` starts each
one in a forked copy of a waiting process (one per pytest worker) that has imported the project's
modules, and nothing more: no TensorFlow op has run there, so no thread pool or device state is
copied.  Each run is still its own process, with its own pid, exit status, stdout and stderr (read back
as text, as ``subprocess.run(..., capture_output=True, text=True)`` gives them), working folder and
environment; an uncaught exception prints its traceback and exits 1, as Python does.

A fresh interpreter is used instead, exactly as before, where the fork cannot stand in for one: when
the run's environment changes how the frameworks start (``KERAS_BACKEND``, ``XLA_FLAGS``, thread
counts, ...), and always where ``OASIS_GAN_TEST_FRESH_PROCESSES=1`` (to check that both agree).
Tests that signal a run in the background start it with ``subprocess.Popen`` themselves.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRESH_VARIABLE = "OASIS_GAN_TEST_FRESH_PROCESSES"
# Read when the frameworks start, so a run that sets one of these differently needs a fresh interpreter.
START_UP_VARIABLES = ("KERAS_BACKEND", "XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES",
                      "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "PYTHONPATH",
                      "TF_ENABLE_ONEDNN_OPTS", "JAX_PLATFORMS")

# The waiting process: imports the scripts' modules, then forks one child per request read from stdin
# (a JSON line) and answers on stdout with the child's pid, then with its exit status.
WAITING_PROCESS = r"""
import atexit, json, os, runpy, sys, traceback
sys.path.insert(0, os.environ["REPO"])
# What the scripts import once past their flags (they import Keras late, to keep --help light); no op runs here.
import keras, metrics, modelscript
import train, generate, evaluate, tqdm.auto
from oasis_gan import batches, engines, plots, training
from oasis_gan.engines import tensorflow_engine
from oasis_gan.runs import checkpoints, run_folder, sampling
answers = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(answers.fileno())
            os.chdir(request["cwd"])
            os.environ.clear(); os.environ.update(request["env"])
            for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                                   (2, request["stderr"], os.O_WRONLY)):
                os.dup2(os.open(path, mode), fd)
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
    answers.write(json.dumps({"pid": pid}) + "\n"); answers.flush()
    _, status = os.waitpid(pid, 0)
    answers.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n"); answers.flush()
"""

_waiting: dict = {}  # "process", "environment": the one waiting process of this pytest worker


def _start_environment() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", REPO=str(ROOT))


def _waiting_process(environment: dict) -> subprocess.Popen | None:
    """This worker's waiting process, started on first use; None where `environment` needs a fresh interpreter."""
    if os.environ.get(FRESH_VARIABLE) == "1":
        return None
    if not _waiting or _waiting["process"].poll() is not None:
        start = _start_environment()
        process = subprocess.Popen([sys.executable, "-c", WAITING_PROCESS], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=start, text=True,
                                   cwd=ROOT)
        _waiting.update(process=process, environment=start)
    started = _waiting["environment"]
    if any(environment.get(name) != started.get(name) for name in START_UP_VARIABLES):
        return None
    return _waiting["process"]


def _answer(process: subprocess.Popen, timeout: float | None) -> dict:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError
    line = process.stdout.readline()
    if not line:
        raise RuntimeError("the tests' waiting process ended; rerun with OASIS_GAN_TEST_FRESH_PROCESSES=1")
    return json.loads(line)


def run(script: str, *args, cwd, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python ROOT/script ARGS`` in `cwd` -> its exit status and output, as ``subprocess.run`` gives them.

    `env` adds to (or overrides) this process's environment, with the repository on PYTHONPATH and
    TensorFlow's C++ log lines off.  Raises ``subprocess.TimeoutExpired`` after `timeout` seconds,
    having killed the run.
    """
    environment = dict(_start_environment(), **(env or {}))
    environment.pop("REPO")
    command = [sys.executable, str(ROOT / script), *map(str, args)]
    process = _waiting_process(environment)
    if process is None:
        return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
    with tempfile.TemporaryDirectory() as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        out.touch(), err.touch()
        process.stdin.write(json.dumps({"script": command[1], "args": command[2:], "cwd": str(cwd),
                                        "env": environment, "stdout": str(out), "stderr": str(err)}) + "\n")
        process.stdin.flush()
        pid = _answer(process, 60)["pid"]
        try:
            status = _answer(process, timeout)["status"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            _answer(process, 60)
            raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text()) from None
        return subprocess.CompletedProcess(command, status, out.read_text(errors="replace"),
                                           err.read_text(errors="replace"))
