"""Several processes, one run (cluster.py): two train.py processes on 127.0.0.1 for each engine.

Each case starts real processes as a cluster would (TF_CONFIG for
TensorFlow, --coordinator/--num-processes/--process-id for JAX) on free
ports, at 32x32 for a few steps, each forked from a process that has
imported the project (tests/script_runner.py, as the other scripts' runs
are: the imports cost more than the steps).  A launcher records, through Python's audit
hooks, every file each process opens for writing (or renames, removes,
makes) inside the run folder, so "only the chief writes" is checked, not
assumed.
"""

import csv
import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import script_runner
from oasis_gan import cluster
from oasis_gan.cluster import ClusterError

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[1]
# The JAX cases run one after the other on one pytest-xdist worker: their processes compile the same
# programs, which the second case then finds in the session's XLA cache (conftest.py), and four JAX
# processes compiling at once on two cores take longer than two and two.
ENGINES = ("tensorflow", "jax")  # the jax cases run one after the other on one worker (conftest.work_unit)
LAUNCHER = textwrap.dedent("""
    import os, runpy, sys
    run = os.path.realpath(os.environ["RUN_FOLDER"])
    writes = []

    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and args[1] is not None \\
                and any(flag in str(args[1]) for flag in "wax+"):
            paths = [args[0]]
        elif event in ("os.rename", "os.remove", "os.mkdir", "shutil.rmtree"):
            paths = [args[0]] + ([args[1]] if event == "os.rename" else [])
        else:
            return
        for path in paths:
            path = os.path.realpath(os.fsdecode(path))
            if path.startswith(run):
                writes.append(path)

    sys.addaudithook(hook)
    if os.environ.get("LOGICAL_CPUS"):  # one TensorFlow process with two CPU devices, the reference
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, os.environ["REPO"])
    sys.argv = [os.path.join(os.environ["REPO"], "train.py")] + sys.argv[1:]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        with open(os.environ["WRITES_LOG"], "w") as handle:  # outside the run folder
            handle.write("\\n".join(writes))
""")


def train_args(demo_dir, run, steps: int, *more) -> list[str]:
    return ["--data", str(demo_dir), "--arch", "dcgan", "--image-size", "32", "--batch-size", "8", "--steps",
            str(steps), "--log-every", "1", "--sample-every", "2", "--checkpoint-every", "2", "--ssim-every", "2",
            "--ssim-references", "16", "--sample-grid", "4", "--seed", "1", "--precision", "float32", "--quiet", "--out", str(run), *more]


class Processes:
    """Two train.py processes of one run (or one process: ``count=1``), for ``engine``."""

    def __init__(self, tmp_path: Path, engine: str, count: int = 2):
        self.tmp_path, self.engine, self.count = tmp_path, engine, count
        self.ports = cluster.free_ports(count)
        self.processes: list = []

    def environment(self, index: int, run: Path, **more) -> dict:
        """The changes to this process's environment for process ``index`` (None: the variable is removed)."""
        env = dict(RUN_FOLDER=str(run), REPO=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=None,
                   WRITES_LOG=str(self.tmp_path / f"writes-{run.name}-{index}.txt"), **more)
        if self.engine == "jax":
            env["KERAS_BACKEND"] = "jax"
        else:
            env["KERAS_BACKEND"] = None
            if self.count > 1:
                env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in self.ports]},
                                               "task": {"type": "worker", "index": index}})
        return env

    def start(self, args: list[str], run: Path, **env) -> list:
        """The processes, started: handles used as subprocess.Popen is (forked, see script_runner.py)."""
        launcher = self.tmp_path / "launcher.py"
        launcher.write_text(LAUNCHER)
        self.processes = []
        for index in range(self.count):
            extra = []
            if self.engine == "jax" and self.count > 1:
                extra = ["--coordinator", f"127.0.0.1:{self.ports[0]}", "--num-processes", str(self.count),
                         "--process-id", str(index)]
            self.processes.append(script_runner.start(launcher, *args, *extra, cwd=self.tmp_path,
                                                      env=self.environment(index, run, **env)))
        return self.processes

    def wait(self, timeout: float = 300) -> list[tuple[int, str]]:
        """(exit status, stdout + stderr) of each process."""
        results = []
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for other in self.processes:
                    other.kill()
                raise AssertionError(f"process {process.args[3:]} still running after {timeout} s")
            results.append((process.returncode, out + err))
        return results

    def run(self, args: list[str], run: Path, **env) -> list[tuple[int, str]]:
        self.start(args, run, **env)
        results = self.wait()
        for status, output in results:
            assert status == 0, output[-4000:]
        return results

    def writes(self, run: Path, index: int) -> list[str]:
        text = (self.tmp_path / f"writes-{run.name}-{index}.txt").read_text()
        return [line for line in text.splitlines() if line]


def history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def losses(rows: list[dict]) -> np.ndarray:
    return np.array([[float(row[key]) for key in ("g_loss", "d_loss", "d_acc_real", "d_acc_fake")] for row in rows])


def wait_for_rows(run: Path, count: int, processes, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "history.csv").exists() and len(history(run)) >= count:
            return
        if any(process.poll() is not None for process in processes):
            raise AssertionError("a process ended early: " + "\n".join(
                process.communicate()[1][-3000:] for process in processes if process.poll() is not None))
        time.sleep(0.2)
    raise AssertionError(f"{run}: fewer than {count} history rows after {timeout} s")


# ------------------------------------------------------------- the set-up, read without starting anything


def test_cluster_comes_from_flags_environment_tf_config_or_slurm():
    assert cluster.discover("tensorflow", environ={}) == cluster.SINGLE
    flags = cluster.discover("jax", "node0:1234", 2, 1, environ={})
    assert (flags.num_processes, flags.process_id, flags.coordinator, flags.is_chief) == (2, 1, "node0:1234", False)
    environment = cluster.discover("jax", environ={"JAX_COORDINATOR_ADDRESS": "node0:99", "JAX_NUM_PROCESSES": "3",
                                                   "JAX_PROCESS_ID": "0"})
    assert (environment.num_processes, environment.is_chief, environment.source) == (3, True, "environment")
    tf_config = json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}})
    found = cluster.discover("tensorflow", environ={"TF_CONFIG": tf_config})
    assert (found.num_processes, found.process_id, found.coordinator) == (2, 1, "a:1")
    slurm = cluster.discover("jax", environ={"SLURM_NTASKS": "4", "SLURM_PROCID": "2"})
    assert (slurm.num_processes, slurm.process_id, slurm.source) == (4, 2, "slurm")
    assert cluster.discover("jax", environ={"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == cluster.SINGLE


@pytest.mark.parametrize("call, names", [
    (dict(backend="jax", coordinator="node0:1234", num_processes=2), "--process-id"),
    (dict(backend="jax", coordinator="node0:1234", num_processes=2, process_id=2), "--process-id: must be from 0 to 1"),
    (dict(backend="jax", coordinator="node0", num_processes=2, process_id=0), "--coordinator: must be HOST:PORT"),
    (dict(backend="jax", coordinator="node0:1", num_processes=0, process_id=0), "--num-processes: must be at least 1"),
    (dict(backend="tensorflow", coordinator="node0:1234", num_processes=2, process_id=0), "TF_CONFIG or Slurm"),
    (dict(backend="tensorflow", environ={"TF_CONFIG": "{not json"}), "TF_CONFIG"),
    (dict(backend="jax", environ={"JAX_COORDINATOR_ADDRESS": "a:1", "JAX_NUM_PROCESSES": "2"}), "JAX_PROCESS_ID"),
    (dict(backend="jax", environ={"JAX_COORDINATOR_ADDRESS": "a:1", "JAX_NUM_PROCESSES": "two",
                                  "JAX_PROCESS_ID": "0"}), "JAX_NUM_PROCESSES: must be an integer"),
])
def test_bad_set_ups_are_named(call, names):
    call.setdefault("environ", {})
    with pytest.raises(ClusterError, match=names.replace("(", r"\(")):
        cluster.discover(**call)


def test_a_coordinator_that_cannot_be_reached_fails_within_the_timeout(tmp_path, demo_dir):
    (port,) = cluster.free_ports(1)  # nothing listens there
    started = time.monotonic()
    result = script_runner.run(
        "train.py", *train_args(demo_dir, tmp_path / "run", 2), "--coordinator", f"127.0.0.1:{port}",
        "--num-processes", "2", "--process-id", "1", "--cluster-timeout", "5", cwd=tmp_path,
        env=dict(KERAS_BACKEND="jax"), timeout=120)
    assert result.returncode != 0 and time.monotonic() - started < 90
    assert f"127.0.0.1:{port}" in result.stderr and "process 1 of 2" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("index", [0, 1])
def test_a_tensorflow_worker_whose_peer_never_starts_exits_4_within_the_timeout(tmp_path, demo_dir, index):
    """TF_CONFIG names two workers and only one starts: TensorFlow's join used to wait for ever, deaf to SIGTERM."""
    ports = cluster.free_ports(2)
    tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                            "task": {"type": "worker", "index": index}})
    started = time.monotonic()
    result = script_runner.run("train.py", *train_args(demo_dir, tmp_path / "run", 2), "--cluster-timeout", "5",
                               cwd=tmp_path, env=dict(KERAS_BACKEND=None, TF_CONFIG=tf_config), timeout=150)
    assert result.returncode == cluster.CLUSTER_FAILED, result.stderr[-3000:]
    assert time.monotonic() - started < 120
    assert f"process {index} of 2" in result.stderr and "--cluster-timeout" in result.stderr, result.stderr[-3000:]


# ------------------------------------------------------------- two processes on this machine


@pytest.mark.parametrize("engine", ENGINES)
def test_two_processes_train_what_one_process_with_the_same_global_batch_trains(tmp_path, demo_dir, engine):
    two, one = tmp_path / "two", tmp_path / "one"
    pair = Processes(tmp_path, engine)
    pair.run(train_args(demo_dir, two, 4), two)
    # The reference: one process, the same global batch of 8 over two devices (batch-norm statistics are
    # per device on TensorFlow, so one device would differ by more than rounding).
    reference = {"jax": dict(XLA_FLAGS="--xla_force_host_platform_device_count=2"), "tensorflow": dict(LOGICAL_CPUS="2")}
    Processes(tmp_path, engine, count=1).run(train_args(demo_dir, one, 4, "--devices", "2"), one, **reference[engine])

    assert [row["step"] for row in history(two)] == ["1", "2", "3", "4"]
    np.testing.assert_allclose(losses(history(two)), losses(history(one)), rtol=1e-4, atol=1e-5)
    assert [path.name for path in sorted((two / "checkpoints").iterdir())] == ["ckpt-00000002", "ckpt-00000004"]
    assert pair.writes(two, 0), "the chief wrote nothing"
    assert pair.writes(two, 1) == []  # the other process wrote nothing in the run folder


@pytest.mark.parametrize("engine", ["tensorflow"])  # the agreement is the trainer's; JAX's collective runs every step
def test_sigterm_to_any_process_stops_both_at_one_step_with_one_checkpoint(tmp_path, demo_dir, engine):
    run = tmp_path / "run"
    pair = Processes(tmp_path, engine)
    processes = pair.start(train_args(demo_dir, run, 10_000, "--checkpoint-every", "1000"), run)
    wait_for_rows(run, 3, processes)
    processes[1].send_signal(signal.SIGTERM)  # not the chief: the chief must hear of it and save
    results = pair.wait(timeout=120)
    assert [status for status, _ in results] == [143, 143], [output[-2000:] for _, output in results]
    assert "SIGTERM" in results[0][1]
    (checkpoint,) = sorted((run / "checkpoints").iterdir())
    stopped = int(checkpoint.name.split("-")[1])
    assert int(history(run)[-1]["step"]) == stopped >= 3
    assert pair.writes(run, 1) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_killed_process_stops_the_other_and_both_resume_from_the_last_checkpoint(tmp_path, demo_dir, engine):
    run = tmp_path / "run"
    pair = Processes(tmp_path, engine)
    processes = pair.start(train_args(demo_dir, run, 10_000, "--cluster-timeout", "30"), run)
    wait_for_rows(run, 5, processes)
    processes[1].kill()
    killed_at = time.monotonic()
    status, output = pair.wait(timeout=120)[0]
    assert status == cluster.CLUSTER_FAILED, output[-3000:]
    assert time.monotonic() - killed_at < 30 + 30  # the collective timeout, and some slack for a busy machine
    assert "another process of the run failed" in output and "--resume" in output
    last = max(int(path.name.split("-")[1]) for path in (run / "checkpoints").iterdir())

    resumed = Processes(tmp_path, engine)
    resumed.run(train_args(demo_dir, run, last + 2, "--resume"), run)
    steps = [int(row["step"]) for row in history(run)]
    assert steps == list(range(1, last + 3))  # rows after the checkpoint were dropped, then written again
    assert resumed.writes(run, 1) == []


def test_a_global_batch_that_does_not_divide_over_the_processes_is_refused(tmp_path, demo_dir):
    run = tmp_path / "run"
    pair = Processes(tmp_path, "jax")
    pair.start(train_args(demo_dir, run, 2, "--batch-size", "7"), run)
    for status, output in pair.wait(timeout=120):
        assert status == 2 and "--batch-size: 7 does not split evenly over 2 processes" in output, output[-2000:]
