"""What a Trainer keeps beside its networks: the session clock and its stops, the history log, the checkpointer.

* ``SessionClock``: training time over every session of a run (idle time
  between sessions not counted), the time budget judged on the clock the
  records show, stop requests from SIGINT and SIGTERM, and, in a run of
  several processes, the per-step agreement on stopping and the check that
  all of them start from the same step of the same data.
* ``HistoryLog``: each step's metrics, averaged into a history row every
  ``log_every`` steps (with the best-match SSIM every ``ssim_every``), and the
  divergence check on them.
* ``Checkpointer``: the run's checkpoints, written by the chief (the others
  make the same reads into a scratch folder), restored on resume;
* ``SampleGrid``: the images of the fixed latent grid (made once a step) and
  their best-match SSIM against a fixed subset of the training set.

Each is given the step, epoch and elapsed time as arguments: the Trainer
owns those (training.py).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import keras
import numpy as np

import metrics
from oasis_gan.cluster import ClusterError
from oasis_gan.runs import checkpoints, sampling
from oasis_gan.runs.run_folder import free_bytes

# A BCE loss of L needs a logit of about -L on the wrong side: healthy GAN losses stay under ~20, and a
# loss above this means one network has won outright (logits in the thousands) and training has stopped
# learning, though every number is still finite (e.g. learning rates near 1 with betas 0).
LOSS_LIMIT = 1e4


class Divergence(Exception):
    """Losses or weights that are not finite (or past LOSS_LIMIT): the Trainer ends the session on it."""

    def __init__(self, values: dict, why: str = "losses or weights are not finite"):
        super().__init__(why)
        self.values, self.why = values, why


class SessionClock:
    """Seconds of training over the run's sessions, the time budget, and the requests to stop."""

    def __init__(self, minutes: float | None, cluster, engine):
        self.minutes, self.cluster, self.engine = minutes, cluster, engine
        self.before = 0.0  # training seconds of earlier sessions (and of the run before a resume)
        self.recorded = 0.0  # training seconds as the newest history row (or checkpoint) records them
        self.session_start: float | None = None
        self.stop_signal: int | None = None  # the signal (SIGINT, SIGTERM) that asked the loop to stop
        self.agreed_out_of_time = False  # several processes: the chief's clock decides, agreed every step

    def resume_at(self, elapsed: float) -> None:
        self.before = self.recorded = elapsed

    @property
    def elapsed(self) -> float:
        running = 0.0 if self.session_start is None else time.perf_counter() - self.session_start
        return self.before + running

    def start(self) -> None:
        self.stop_signal = None
        self.session_start = time.perf_counter()

    def end(self) -> None:
        if self.session_start is not None:
            self.before += time.perf_counter() - self.session_start
            self.session_start = None

    def out_of_time(self) -> bool:
        """The time budget is judged on the clock the run's records show, so they agree that it was spent.

        That is the newest history row's ``elapsed_s`` (a run stops at the
        first row past its budget: at most ``log_every`` steps over). On the
        live clock a run could stop after the bookkeeping that follows a row,
        with every record short of the budget; a resume would then take
        another step, and compare_archs.py would think the run unfinished.
        """
        return self.minutes is not None and self.recorded >= 60.0 * self.minutes

    def spent(self) -> bool:
        """The budget is spent: on this clock, or, in a run of several processes, as they last agreed."""
        return self.agreed_out_of_time if self.cluster.multi else self.out_of_time()

    def should_stop(self, done) -> bool:
        """Whether to stop before the next step: ``done()`` (all steps taken or the budget spent) or a signal.

        Several processes agree on it (one small collective per step): a
        signal to any of them, or the chief running out of time, stops them
        all at the same step.  A signal that arrives after the agreement
        counts at the next step, so no process leaves while the others step.
        """
        if not self.cluster.multi:
            return done() or self.stop_signal is not None
        requested = self.stop_signal
        out_of_time, signal_number = self.engine.agree_max(
            [float(self.cluster.is_chief and self.out_of_time()), float(requested or 0)])
        self.agreed_out_of_time = bool(out_of_time)
        if signal_number and requested is None:
            self.stop_signal = int(signal_number)
            print(f"process {self.cluster.process_id}: another process of the run got "
                  f"{signal.Signals(self.stop_signal).name}; stopping after this step", file=sys.stderr, flush=True)
        return done() or bool(signal_number)

    def check_processes_agree(self, step: int, images: int, run_dir) -> None:
        """Every process of a run must start from the same step of the same data, or none trains (ClusterError)."""
        high_step, minus_step, high_count, minus_count = self.engine.agree_max([step, -step, images, -images])
        if high_step != -minus_step or high_count != -minus_count:
            raise ClusterError(
                f"the processes of this run disagree: they start from steps {-minus_step:.0f} to {high_step:.0f} and "
                f"hold {-minus_count:.0f} to {high_count:.0f} training images. {run_dir} must be on a file system "
                "every process shares, and every process must be given the same data and flags")

    @contextlib.contextmanager
    def stop_on_signals(self):
        """While inside: SIGINT (Ctrl-C) and SIGTERM only set ``stop_signal``; the loop stops between steps.

        So a step is never cut in half (a checkpoint's step always equals the
        optimizers' iteration count), SIGINT works even where the shell
        started the run with SIGINT ignored (``cmd &`` in a script), and a
        second signal while the checkpoint is written waits for it.  Outside
        the main thread signals cannot be caught, and nothing changes.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            if self.stop_signal is None:
                self.stop_signal = signum
                print(f"\n{signal.Signals(signum).name}: stopping after this step; a checkpoint will be saved",
                      file=sys.stderr, flush=True)
            else:
                print(f"\n{signal.Signals(signum).name} again: still saving the checkpoint; the run stops as "
                      "soon as it is written", file=sys.stderr, flush=True)

        previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


class HistoryLog:
    """The metrics of the steps since the last history row, and the rows written from them."""

    def __init__(self, run, batch_size: int, ssim_every: int):
        self.run, self.batch_size, self.ssim_every = run, batch_size, ssim_every
        self.pending: list[dict] = []  # metrics of steps not yet written to history
        self.started = 0.0  # when the steps of the pending row began (for images/s)

    def add(self, step_metrics: dict) -> None:
        self.pending.append(step_metrics)

    def restart(self) -> None:
        self.started = time.perf_counter()

    def ssim_due(self, step: int, done: bool) -> bool:
        """True on the first logged row at or after each multiple of ssim_every, and at the end."""
        if not self.ssim_every:
            return False
        return done or step // self.ssim_every > (step - len(self.pending)) // self.ssim_every

    def write(self, step: int, epoch: int, elapsed: float, done: bool, extras: dict, measure_ssim) -> dict | None:
        """Append the row of the pending steps (losses averaged over them) -> the row, or None when none is pending.

        Raises Divergence, writing nothing, when a value is not finite or a loss passed LOSS_LIMIT.
        """
        if not self.pending:
            return None
        now = time.perf_counter()
        keys = dict.fromkeys(key for step_metrics in self.pending for key in step_metrics)  # r1_penalty: some steps
        values = {key: float(np.mean([float(m[key]) for m in self.pending if key in m])) for key in keys}
        if not all(math.isfinite(value) for value in values.values()):
            raise Divergence(values)
        if max(abs(values["g_loss"]), abs(values["d_loss"])) > LOSS_LIMIT:
            raise Divergence(values, f"the losses passed {LOSS_LIMIT:g}, so one network has won outright")
        row = {"step": step, "epoch": epoch, **values,
               "images_per_s": len(self.pending) * self.batch_size / max(now - self.started, 1e-9),
               "elapsed_s": elapsed, **extras}
        if self.ssim_due(step, done):
            row["nn_ssim"] = measure_ssim()
        self.run.append_history(row)
        self.pending.clear()
        self.started = now
        return row


class Checkpointer:
    """The run's checkpoints: what one holds, how large it is, saving (the chief) and restoring."""

    def __init__(self, run, architecture, config, cluster, model_fields: tuple):
        self.run, self.architecture, self.config, self.cluster = run, architecture, config, cluster
        self.model_fields = model_fields
        self.last_step = -1

    def model_meta(self) -> dict:
        """What a checkpoint records about the model, checked again on resume."""
        return {name: getattr(self.config, name) for name in self.model_fields}

    def restore(self, checkpoint: Path) -> dict:
        arch = self.architecture
        return checkpoints.restore_checkpoint(
            checkpoint, arch.generator, arch.discriminator, arch.g_optimizer, arch.d_optimizer,
            expect=self.model_meta(), **arch.checkpoint_parts(),
        )

    def size_bytes(self) -> int:
        """About how large one checkpoint of this run is: every saved network and both optimizers, float32."""
        arch = self.architecture
        networks = [arch.generator, arch.discriminator, *arch.checkpoint_parts().get("extra_models", {}).values()]
        optimizer_values = sum(int(np.prod(v.shape)) for v in [*arch.g_optimizer.variables, *arch.d_optimizer.variables])
        return 4 * (sum(network.count_params() for network in networks) + optimizer_values)

    def warn_if_disk_is_low(self) -> None:
        """Say so up front when the run folder's disk holds fewer than two checkpoints."""
        needed, free = self.size_bytes(), free_bytes(self.run.path)
        if free < 2 * needed:
            print(f"warning: {self.run.path} has {free / 2**20:.1f} MiB free, but each checkpoint needs about "
                  f"{needed / 2**20:.1f} MiB (and the next one is written before the oldest is removed); "
                  "free some space or the run will stop at its next checkpoint", file=sys.stderr)

    def save(self, step: int, epoch: int, elapsed: float, pending: list[dict]) -> Path | None:
        """Checkpoint ``step``, unless it is saved already -> its folder (None on the other processes).

        Raises Divergence, saving nothing, when the generator's weights or the pending losses are not finite.
        """
        if step == self.last_step:
            return None
        losses = [float(m["g_loss"]) + float(m["d_loss"]) for m in pending]
        arch = self.architecture
        weights_finite = all(
            bool(np.isfinite(keras.ops.convert_to_numpy(v)).all()) for v in arch.generator.trainable_variables
        )
        if not weights_finite or not all(math.isfinite(value) for value in losses):
            raise Divergence({"weights_finite": weights_finite})
        meta = {**self.model_meta(), "backend": keras.backend.backend(), "elapsed_s": elapsed, **arch.state(),
                "config": self.config.to_dict()}  # so a run whose config.json is lost can still resume
        with contextlib.ExitStack() as scratch:
            if self.cluster.is_chief:
                folder, keep = self.run.path, self.config.keep_checkpoints
            else:
                # The chief writes the checkpoint every process resumes from.  The others make the same
                # reads into a scratch folder they delete: under TensorFlow's multi-worker strategy reading
                # a variable (batch-norm statistics) can be a collective, which every worker must join.
                folder, keep = scratch.enter_context(tempfile.TemporaryDirectory(prefix="follower-ckpt-")), 1
            path = checkpoints.save_checkpoint(
                folder, step, epoch, arch.generator, arch.discriminator, arch.g_optimizer,
                arch.d_optimizer, meta, keep=keep, size_hint=self.size_bytes(), **arch.checkpoint_parts(),
            )
        self.last_step = step
        return path if self.cluster.is_chief else None


class SampleGrid:
    """The fixed latent grid's images, made at most once a step, and their SSIM against real references."""

    def __init__(self, generator, latents: np.ndarray, references: np.ndarray):
        self.generator = generator  # -> the generator that samples (StyleGAN's EMA, else G itself)
        self.latents, self.references = latents, references
        self._latest: tuple[int, np.ndarray] | None = None  # (step, images) of the latest grid

    def images(self, step: int, latent_vectors=None) -> np.ndarray:
        """The grid's images at ``step`` (or images for the given latents)."""
        if latent_vectors is not None:
            return sampling.generate_images(self.generator(), latent_vectors)
        if self._latest is None or self._latest[0] != step:
            self._latest = (step, sampling.generate_images(self.generator(), self.latents))
        return self._latest[1]

    def best_match_ssim(self, step: int) -> float:
        """Median over the grid of each image's best SSIM against the references.

        The fast kernel's maxima (within ~1e-7 of skimage); evaluate.py does
        the full exact search.
        """
        scores = metrics.pairwise_ssim(self.images(step), self.references)
        return float(np.median(scores.max(axis=1)))
