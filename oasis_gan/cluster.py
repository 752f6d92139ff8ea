"""Several processes, one run: who they are, how they find each other, how they agree.

A run on several machines has one process per machine (a Slurm task per
node), each driving that machine's devices; together they train one model
on the frameworks' own multi-worker engines:

* TensorFlow: ``tf.distribute.MultiWorkerMirroredStrategy``, the cluster
  from ``TF_CONFIG`` or from Slurm (``SlurmClusterResolver``);
* JAX (``KERAS_BACKEND=jax``): ``jax.distributed.initialize`` (coordinator,
  process count and id from train.py's flags, the ``JAX_COORDINATOR_ADDRESS``
  / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` variables, or Slurm), then
  ``keras.distribution.DataParallel`` over every process's devices.

``discover`` reads which of these applies into a ``Cluster``; the engine
(tensorflow_engine / jax_engine ``start_cluster``) starts it before anything else
touches the framework.  Each step's global batch is a pure function of
(seed, step), and each process gathers only its own block of it
(batches.BatchSampler), so the processes together compute what one process
with the same global batch computes.  Process 0, the chief, is the only one
that writes the run folder; the others read its config and checkpoints.
Once per step the processes agree (one small all-reduce) whether to stop,
so a SIGTERM to any of them, or the chief's time budget, stops all of them
at the same step, after which the chief writes one checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
from dataclasses import dataclass

DEFAULT_TIMEOUT_S = 300.0  # waiting for the other processes: to start, and on each collective
JAX_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
CLUSTER_FAILED = 4  # train.py's exit status when another process of the run failed or could not be reached


class ClusterError(ValueError):
    """A multi-process set-up that cannot work; the message names the flag or variable."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in a run: how many processes, which one this is, where they meet."""

    num_processes: int = 1
    process_id: int = 0
    coordinator: str | None = None  # "host:port" of process 0 (JAX); None: the engine finds it (Slurm, TF_CONFIG)
    source: str = "single process"  # "flags", "environment", "TF_CONFIG" or "slurm"
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def multi(self) -> bool:
        return self.num_processes > 1

    @property
    def is_chief(self) -> bool:
        """Process 0: the one that writes the run folder."""
        return self.process_id == 0

    def describe(self) -> str:
        if not self.multi:
            return "one process"
        return f"process {self.process_id} of {self.num_processes} ({self.source})"


SINGLE = Cluster()
_joined = SINGLE  # the run this process has joined: set once, by the engine's start_cluster


def joined() -> Cluster:
    """The run this process belongs to: what the engine joined (its ``start_cluster``), else SINGLE."""
    return _joined


def record_joined(cluster: Cluster) -> None:
    """Called by the engine once it has joined the other processes of ``cluster``."""
    global _joined
    _joined = cluster


def _integer(text, name: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ClusterError(f"{name}: must be an integer, got {text!r}") from None


def _checked(cluster: Cluster, names: tuple[str, str, str]) -> Cluster:
    """``cluster`` after checking that its numbers add up; ``names`` are where each came from."""
    coordinator_name, count_name, id_name = names
    if cluster.num_processes < 1:
        raise ClusterError(f"{count_name}: must be at least 1, got {cluster.num_processes}")
    if not 0 <= cluster.process_id < cluster.num_processes:
        raise ClusterError(f"{id_name}: must be from 0 to {cluster.num_processes - 1} ({count_name} is "
                           f"{cluster.num_processes}), got {cluster.process_id}")
    if cluster.coordinator is not None:
        host, _, port = cluster.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ClusterError(f"{coordinator_name}: must be HOST:PORT (process 0's address and a free port), "
                               f"got {cluster.coordinator!r}")
    if cluster.timeout_s <= 0:
        raise ClusterError(f"--cluster-timeout: must be positive, got {cluster.timeout_s:g}")
    return cluster


def _from_tf_config(text: str, timeout_s: float) -> Cluster:
    try:
        spec = json.loads(text)
        workers = list(spec["cluster"].get("chief", [])) + list(spec["cluster"].get("worker", []))
        task = spec["task"]
        index = int(task["index"]) + (len(spec["cluster"].get("chief", [])) if task["type"] == "worker" else 0)
        if task["type"] not in ("chief", "worker"):
            raise ValueError(f"task type {task['type']!r} (only chief and worker tasks train)")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ClusterError(f"TF_CONFIG: expected {{\"cluster\": {{\"worker\": [\"host:port\", ...]}}, \"task\": "
                           f"{{\"type\": \"worker\", \"index\": i}}}}: {error}") from None
    return _checked(Cluster(len(workers), index, workers[0] if workers else None, "TF_CONFIG", timeout_s),
                    ("TF_CONFIG cluster", "TF_CONFIG cluster", "TF_CONFIG task index"))


def discover(backend: str, coordinator: str | None = None, num_processes: int | None = None,
             process_id: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, environ=None) -> Cluster:
    """The cluster this process belongs to, from (first found) flags, environment, TF_CONFIG or Slurm.

    backend: "tensorflow" or "jax".  TensorFlow takes its cluster from
    TF_CONFIG or Slurm; JAX from the flags, the JAX_* variables or Slurm.
    Without any of them the run is a single process.
    """
    environ = os.environ if environ is None else environ
    flags = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if any(value is not None for value in flags.values()):
        if backend != "jax":
            raise ClusterError(f"{next(name for name, value in flags.items() if value is not None)}: the TensorFlow "
                               "engine takes its cluster from TF_CONFIG or Slurm; these flags are for "
                               "KERAS_BACKEND=jax")
        missing = [name for name, value in flags.items() if value is None]
        if missing:
            raise ClusterError(f"{missing[0]}: a run of several processes needs --coordinator, --num-processes "
                               "and --process-id together")
        return _checked(Cluster(num_processes, process_id, coordinator, "flags", timeout_s), tuple(flags))
    if backend == "jax" and any(name in environ for name in JAX_VARIABLES):
        missing = [name for name in JAX_VARIABLES if name not in environ]
        if missing:
            given = " and ".join(name for name in JAX_VARIABLES if name not in missing)
            raise ClusterError(f"{missing[0]}: not set, but {given} are (set all three, or none)")
        return _checked(Cluster(_integer(environ["JAX_NUM_PROCESSES"], "JAX_NUM_PROCESSES"),
                                _integer(environ["JAX_PROCESS_ID"], "JAX_PROCESS_ID"),
                                environ["JAX_COORDINATOR_ADDRESS"], "environment", timeout_s), JAX_VARIABLES)
    if backend == "tensorflow" and environ.get("TF_CONFIG"):
        return _from_tf_config(environ["TF_CONFIG"], timeout_s)
    tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS")
    if tasks and _integer(tasks, "SLURM_NTASKS") > 1:
        return _checked(Cluster(_integer(tasks, "SLURM_NTASKS"), _integer(environ.get("SLURM_PROCID"), "SLURM_PROCID"),
                                None, "slurm", timeout_s), ("SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID"))
    return SINGLE


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1 now, for processes of one run on this machine (tests, benchmarks)."""
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def give_up(cluster: Cluster, what: str, detail: str = "") -> None:
    """End this process (exit CLUSTER_FAILED) saying that the other processes did not answer in time."""
    print(f"error: {what}: the other processes did not answer within {cluster.timeout_s:g} s "
          f"(--cluster-timeout){detail}; check that all {cluster.num_processes} were started, with process ids "
          f"0 to {cluster.num_processes - 1} once each, and that {cluster.coordinator or 'process 0'} "
          "can be reached from this node", file=sys.stderr, flush=True)
    os._exit(CLUSTER_FAILED)


@contextlib.contextmanager
def bounded_wait(cluster: Cluster, what: str):
    """Run the block (meeting the other processes) or, after ``cluster.timeout_s``, end the process with a message.

    Some framework calls wait for every process without a limit of their
    own; a process that cannot meet the others must not hang forever.  The
    watchdog is a Python thread, so it fires only while the block lets
    Python run: a framework call that holds the interpreter lock while it
    waits must be given a deadline of its own (tensorflow_engine.start_cluster).
    """
    finished = threading.Event()

    def watch():
        if not finished.wait(cluster.timeout_s):
            give_up(cluster, what)

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        finished.set()
