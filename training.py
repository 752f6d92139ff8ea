"""The training loop shared by train.py, the notebook and the tests.

Tensor conventions: images ``(N, S, S, 1)`` float32 in [-1, 1] (the
training set itself may be uint8 pixels 0..255, as ``load_training_pixels``
keeps it; batches.py converts each batch); latent vectors ``(B,
latent_dim)`` standard normal; discriminator logits ``(B, 1)`` with real = 1
and fake = 0.

``Trainer.new(config, run_dir)`` starts a run and ``Trainer.resume(run_dir,
**changes)`` continues one from its latest checkpoint.  A run is driven by
``start()``, ``train_one_step()`` until ``done``, and ``stop(status)``;
``fit()`` is exactly that loop with a progress bar, and the notebook shows
it written out.  The pieces it stands on:

* architectures.py: the models, optimizers and compiled step of each
  architecture (the step's engine comes from engines.py: TensorFlow or JAX);
* batches.py: each step's real images, flips and latents, a pure function
  of (seed, step), so a resumed run continues exactly;
* run_folder.py: config.json, history.csv, sample grids, figures, and the
  checkpoints (checkpoints.py).

The trainer adds the bookkeeping: a history row every ``log_every`` steps
(with the best-match SSIM of the sample grid every ``ssim_every``), a sample
grid every ``sample_every``, a checkpoint every ``checkpoint_every``, and a
stop when losses or weights stop being finite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import keras
import numpy as np

import architectures
import checkpoints
import data_utils
import engines
import metrics
import sampling
from batches import BatchSampler, float_images, latent_grid
from cluster import ClusterError, joined as joined_cluster
from config import ConfigError, TrainConfig
from run_folder import FollowerRunFolder, RunFolder, WriteError, free_bytes

MODEL_FIELDS = ("arch", "image_size", "latent_dim")  # fixed for the life of a run
DEVICE_SET_BYTES = 8 * 2**30  # the largest training set copied whole to one accelerator (OASIS at 256x256: 0.7 GiB)
# A BCE loss of L needs a logit of about -L on the wrong side: healthy GAN losses stay under ~20, and a
# loss above this means one network has won outright (logits in the thousands) and training has stopped
# learning, though every number is still finite (e.g. learning rates near 1 with betas 0).
LOSS_LIMIT = 1e4
STATUSES = ("done", "interrupted")


class TrainingDiverged(RuntimeError):
    """Losses or weights stopped being finite; the last good checkpoint is kept."""


def load_training_images(config: TrainConfig, progress: bool = True) -> np.ndarray:
    """The configured data (demo cohort or a real folder) at the training size: float32 ``(N, S, S, 1)`` in [-1, 1]."""
    return data_utils.to_float_images(load_training_pixels(config, progress)[..., 0])


def load_training_pixels(config: TrainConfig, progress: bool = True) -> np.ndarray:
    """The same data as uint8 pixels ``(N, S, S, 1)``: what a Trainer keeps when it loads the data itself.

    Memory-mapped from the data cache, so a cached load is near-instant, the
    set takes a quarter of float32's memory and only the pages batches touch
    are read in; each batch becomes float32 in [-1, 1] where it is gathered
    (batches.py).
    """
    pixels = data_utils.load_pixels(data_utils.training_folder(config, progress), splits=config.splits,
                                    image_size=config.image_size, limit=config.limit, progress=progress)
    return pixels[..., np.newaxis]


def ssim_reference_subset(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A fixed random subset of the training images (in data order, float32) for SSIM during training."""
    return float_images(data_utils.random_subset(images, count, np.random.default_rng([seed, 7])))


def with_absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with its data folder and demo root made absolute (against the current folder).

    config.json keeps them so: a resume, generate.py or evaluate.py started
    from another folder finds the same data (a relative path stored as typed
    would point elsewhere, or build a second demo cohort there).
    """
    absolute = {name: str(Path(value).expanduser().absolute()) for name in ("data_dir", "demo_root")
                if (value := getattr(config, name))}
    return dataclasses.replace(config, **absolute)


def resume_config(run: RunFolder, changes: dict) -> TrainConfig:
    """The run's saved config with ``changes`` applied on top.

    The model's shape (arch, image_size, latent_dim) must match the saved
    run; anything else (length, learning rates, data folder) may change, and
    the updated config is saved back when training goes on.
    """
    saved = run.read_config()
    if changes.get("precision") == "auto":  # the run's own, as it resolved when it started
        changes = {name: value for name, value in changes.items() if name != "precision"}
    for name in MODEL_FIELDS:
        if changes.get(name) is not None and changes[name] != getattr(saved, name):
            raise ConfigError(
                name,
                f"{run.path} was trained with {name}={getattr(saved, name)!r} but {changes[name]!r} was asked "
                "for; resume it with its own settings or start a new run folder",
            )
    merged = with_absolute_paths(TrainConfig.from_dict({**saved.to_dict(), **changes}).validate().resolved())
    for name, on, kept in (("ema_kimg", lambda config: config.ema_kimg > 0, "a generator average (EMA)"),
                           ("augment", lambda config: config.augment == "ada", "augmentation state")):
        if on(saved) != on(merged):
            raise ConfigError(
                name, f"{run.path} was trained {'with' if on(saved) else 'without'} {kept}; it cannot be turned "
                      f"{'off' if on(saved) else 'on'} when a run resumes (its checkpoints "
                      f"{'hold' if on(saved) else 'lack'} it); start a new run folder")
    if (saved.precision == "mixed_float16") != (merged.precision == "mixed_float16"):
        raise ConfigError(
            "precision",
            f"{run.path} was trained with precision {saved.precision!r}; a run cannot switch to or from "
            "mixed_float16 (its optimizer state holds the loss scale); resume it with its own precision",
        )
    return merged


def _check_own_checkpoint(run: RunFolder, folder: Path) -> None:
    """Refuse (ValueError) a checkpoint that is not in ``run``'s checkpoints folder: another run's weights."""
    own = (run.path / checkpoints.CHECKPOINT_DIR).resolve()
    if folder.resolve().parent != own:
        raise ValueError(
            f"checkpoint {folder} is not one of {run.path}'s own (those are in {own}); resuming from it would "
            f"graft another run's weights onto this run's history. To do that on purpose, copy it into {own} "
            "first; to continue the other run, resume that run")


def folder_for(run_dir) -> RunFolder:
    """The run folder as this process uses it: written by the chief (or a lone process), read by the others."""
    return RunFolder(run_dir) if joined_cluster().is_chief else FollowerRunFolder(run_dir)


class Trainer:
    """One run: its architecture (models, optimizers, step), its batches, its folder and its bookkeeping.

    Make one with ``Trainer.new`` or ``Trainer.resume``.
    """

    def __init__(self, config: TrainConfig, run: RunFolder, images: np.ndarray | None, progress: bool):
        self.config = config
        self.run = run
        self.run_dir = run.path
        self.engine = engine = engines.current()
        if config.deterministic:
            engine.enable_determinism()
        engine.set_random_seed(config.seed)

        # uint8 pixels memory-mapped from the data cache, or the caller's float32 (or uint8) images
        self.images = load_training_pixels(config, progress) if images is None else images
        if self.images.dtype not in (np.uint8, np.float32):
            raise ConfigError("images", f"images must be float32 in [-1, 1] or uint8 pixels, got {self.images.dtype}")
        if self.images.ndim != 4 or self.images.shape[1:] != (config.image_size, config.image_size, 1):
            raise ConfigError(
                "image_size",
                f"images have shape {self.images.shape[1:]}, expected ({config.image_size}, {config.image_size}, 1)",
            )
        self.steps_per_epoch = config.steps_per_epoch(len(self.images))
        self.total_steps = config.total_steps(len(self.images))
        self.cluster = joined_cluster()  # one process, or this one's place in a run of several
        if config.batch_size % self.cluster.num_processes:
            raise ConfigError("batch_size", f"{config.batch_size} does not split evenly over "
                                            f"{self.cluster.num_processes} processes; use a multiple of the count")
        self.sampler = BatchSampler(self.images, config.batch_size, config.latent_dim, config.seed, config.flip,
                                    process=(self.cluster.process_id, self.cluster.num_processes))
        self.fixed_latents = latent_grid(config.seed, config.sample_grid, config.latent_dim)
        self.ssim_references = ssim_reference_subset(self.images, config.ssim_references, config.seed)

        self.distribution = engine.make_distribution(config.devices)
        self.replicas = engine.replica_count(self.distribution)
        if config.batch_size % self.replicas:
            over = f" of {self.cluster.num_processes} processes" if self.cluster.multi else ""
            raise ConfigError("batch_size", f"{config.batch_size} does not split evenly over {self.replicas} "
                                            f"devices{over}; use a multiple of the device count")
        self.architecture = architectures.for_config(config)
        self.architecture.build(engine, self.distribution)
        # On a single accelerator the training set lives on the device and batches are gathered there.
        # A set too large for that (a set larger than memory, say) is gathered on the host from its memory map.
        on_device = (self.distribution is None and bool(engine.accelerators())
                     and self.images.nbytes <= DEVICE_SET_BYTES)
        self._device_images = engine.to_device(self.images) if on_device else None
        self._gather = engine.compile_gather() if on_device else None

        self.step = 0
        self.last_checkpoint_step = -1
        self._samples: tuple[int, np.ndarray] | None = None  # (step, fixed-latent images) of the latest sample
        self._pending: list[dict] = []  # metrics of steps not yet written to history
        self._elapsed_before = 0.0  # training seconds of earlier sessions (and of the run before a resume)
        self._elapsed_recorded = 0.0  # training seconds as the newest history row (or checkpoint) records them
        self._session_start: float | None = None
        self._log_start = 0.0
        self.stop_signal: int | None = None  # the signal (SIGINT, SIGTERM) that asked fit() to stop
        self._agreed_out_of_time = False  # several processes: the chief's clock decides, agreed every step

    # --- the two ways in

    @classmethod
    def new(cls, config: TrainConfig, run_dir, images: np.ndarray | None = None, progress: bool = True) -> "Trainer":
        """Start a new run in ``run_dir`` (which must not hold one) from ``config``."""
        config = with_absolute_paths(config.validate().resolved())
        config = dataclasses.replace(config, precision=engines.resolve_precision(config.precision))
        run = folder_for(run_dir)
        run.check_fresh()  # before the data load and model build, so nothing is wasted or changed
        created = run.path.absolute()
        while not created.parent.exists():
            created = created.parent  # the outermost folder this call makes
        created = None if created.exists() else created
        run.acquire_lock()
        try:
            trainer = cls(config, run, images, progress)
            run.create(config, engines.describe_environment(), trainer.fixed_latents,
                       float_images(trainer.images[: config.sample_grid]))
        except BaseException:  # a run that cannot start leaves no half-made folder behind
            run.release_lock()
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise
        trainer.warn_if_disk_is_low()
        return trainer

    @classmethod
    def resume(cls, run_dir, images: np.ndarray | None = None, progress: bool = True, checkpoint=None,
               **changes) -> "Trainer":
        """Continue the run in ``run_dir`` with ``changes`` to its config.

        It continues from the newest good checkpoint (a corrupt one is skipped
        with a warning), or from ``checkpoint`` (a folder, or its name such as
        "ckpt-00000400"); a run stopped before its first checkpoint starts
        again from step 0 with its own config.  arch, image_size and
        latent_dim cannot change.
        """
        run = folder_for(run_dir)
        config = resume_config(run, changes)
        run.check_history()
        if checkpoint:
            _check_own_checkpoint(run, run.checkpoint_candidates(checkpoint)[0])
        run.acquire_lock()
        try:
            trainer = cls(config, run, images, progress)
            if run.checkpoints() or checkpoint:
                _, state = run.restore(trainer._restore, checkpoint)
                run.set_aside_checkpoints_after(int(state["step"]))
                trainer._continue_from(state)
            else:
                print(f"{run.path} holds no checkpoint yet (it stopped before its first one): starting again "
                      "from step 0 with its own config", file=sys.stderr)
                run.truncate_history(0)
            if ("steps" in changes or "epochs" in changes) and trainer.total_steps < trainer.step:
                asked = f"{config.steps} steps" if config.steps is not None else f"{config.epochs} epochs"
                raise ConfigError("steps" if config.steps is not None else "epochs",
                                  f"{run.path} is already at step {trainer.step}, past the {asked} asked for; "
                                  f"ask for more than {trainer.step} steps to train longer")
            run.write_config(config)  # with any settings changed for this resume
        except BaseException:
            run.release_lock()
            raise
        trainer.warn_if_disk_is_low()
        return trainer

    def _restore(self, checkpoint: Path) -> dict:
        arch = self.architecture
        return checkpoints.restore_checkpoint(
            checkpoint, arch.generator, arch.discriminator, arch.g_optimizer, arch.d_optimizer,
            expect=self._model_meta(), **arch.checkpoint_parts(),
        )

    def _continue_from(self, state: dict) -> None:
        self.architecture.load_state(state)
        self.step = self.last_checkpoint_step = int(state["step"])
        self._elapsed_before = self._elapsed_recorded = float(state.get("elapsed_s", 0.0))
        self.run.truncate_history(self.step)
        self.run.warn_of_history_gap(self.step, self.config.log_every)

    def checkpoint_bytes(self) -> int:
        """About how large one checkpoint of this run is: every saved network and both optimizers, float32."""
        arch = self.architecture
        networks = [arch.generator, arch.discriminator, *arch.checkpoint_parts().get("extra_models", {}).values()]
        optimizer_values = sum(int(np.prod(v.shape)) for v in [*arch.g_optimizer.variables, *arch.d_optimizer.variables])
        return 4 * (sum(network.count_params() for network in networks) + optimizer_values)

    def warn_if_disk_is_low(self) -> None:
        """Say so up front when the run folder's disk holds fewer than two checkpoints."""
        needed, free = self.checkpoint_bytes(), free_bytes(self.run_dir)
        if free < 2 * needed:
            print(f"warning: {self.run_dir} has {free / 2**20:.1f} MiB free, but each checkpoint needs about "
                  f"{needed / 2**20:.1f} MiB (and the next one is written before the oldest is removed); "
                  "free some space or the run will stop at its next checkpoint", file=sys.stderr)

    # --- the networks

    @property
    def generator(self):
        return self.architecture.generator

    @property
    def discriminator(self):
        return self.architecture.discriminator

    @property
    def sampling_generator(self):
        """The generator that samples and evaluation use: StyleGAN's EMA, else the generator itself."""
        return self.architecture.sampling_generator

    # --- start, steps, stop

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    @property
    def done(self) -> bool:
        """All steps taken, or the config's time budget (``minutes``) spent (on the chief's clock)."""
        out_of_time = self._agreed_out_of_time if self.cluster.multi else self._out_of_time()
        return self.step >= self.total_steps or out_of_time

    def _out_of_time(self) -> bool:
        """The time budget is judged on the clock the run's records show, so they agree that it was spent.

        That is the newest history row's ``elapsed_s`` (a run stops at the
        first row past its budget: at most ``log_every`` steps over). On the
        live clock a run could stop after the bookkeeping that follows a row,
        with every record short of the budget; a resume would then take
        another step, and compare_archs.py would think the run unfinished.
        """
        return self.config.minutes is not None and self._elapsed_recorded >= 60.0 * self.config.minutes

    def should_stop(self) -> bool:
        """Whether to stop before the next step: all steps taken, the time budget spent, or a signal.

        Several processes agree on it (one small collective per step): a
        signal to any of them, or the chief running out of time, stops them
        all at the same step.  A signal that arrives after the agreement
        counts at the next step, so no process leaves while the others step.
        """
        if not self.cluster.multi:
            return self.done or self.stop_signal is not None
        requested = self.stop_signal
        out_of_time, signal_number = self.engine.agree_max(
            [float(self.cluster.is_chief and self._out_of_time()), float(requested or 0)])
        self._agreed_out_of_time = bool(out_of_time)
        if signal_number and requested is None:
            self.stop_signal = int(signal_number)
            print(f"process {self.cluster.process_id}: another process of the run got "
                  f"{signal.Signals(self.stop_signal).name}; stopping after this step", file=sys.stderr, flush=True)
        return self.done or bool(signal_number)

    @property
    def elapsed(self) -> float:
        """Seconds spent training this run, over every session (idle time between sessions not counted)."""
        running = 0.0 if self._session_start is None else time.perf_counter() - self._session_start
        return self._elapsed_before + running

    def start(self) -> None:
        """Begin a training session: the clock runs from here until ``stop``."""
        self.run.acquire_lock()
        self.stop_signal = None
        if self.cluster.multi:
            self._check_processes_agree()
        self._session_start = self._log_start = time.perf_counter()

    def _check_processes_agree(self) -> None:
        """Every process of a run must start from the same step of the same data, or none trains."""
        step, minus_step, count, minus_count = self.engine.agree_max(
            [self.step, -self.step, len(self.images), -len(self.images)])
        if step != -minus_step or count != -minus_count:
            self.run.release_lock()
            raise ClusterError(
                f"the processes of this run disagree: they start from steps {-minus_step:.0f} to {step:.0f} and "
                f"hold {-minus_count:.0f} to {count:.0f} training images. {self.run_dir} must be on a file system "
                "every process shares, and every process must be given the same data and flags")

    def train_one_step(self) -> dict | None:
        """Run one update and its bookkeeping; returns the history row when one is logged."""
        if self._session_start is None:
            self.start()
        if self._device_images is None:
            real_images = self.sampler.real_batch(self.step)
        else:
            indices, flips = self.sampler.batch_plan(self.step)
            real_images = self._gather(self._device_images, indices, flips)
        latent_vectors = self.sampler.latent_batch(self.step)
        self._pending.append(self.architecture.train_step(self.step, real_images, latent_vectors))
        self.step += 1
        row = None
        if self.step % self.config.log_every == 0 or self.done:
            row = self._log()
        if self.step % self.config.sample_every == 0 or self.done:
            self.save_samples()
        if self.step % self.config.checkpoint_every == 0 or self.done:
            self.save_checkpoint()
        return row

    def stop(self, status: str = "done") -> str:
        """End the session: the last history row, a checkpoint, samples.png and losses.png; returns ``status``.

        ``status`` is "done" or "interrupted" (Ctrl-C, a signal); either way
        the run can be resumed from this step.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self._log()
        self.save_checkpoint()
        self._end_session()
        self.run.save_final_figures(self.sample())
        return status

    def _end_session(self) -> None:
        """Stop the clock and give up the run folder's lock."""
        if self._session_start is not None:
            self._elapsed_before += time.perf_counter() - self._session_start
            self._session_start = None
        self.run.release_lock()

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

    def fit(self, progress: bool = True, callback=None) -> str:
        """Train until ``total_steps``; returns "done" or "interrupted".

        Ctrl-C or SIGTERM stops the run after the current step, saves a
        checkpoint of it and returns "interrupted" (``stop_signal`` says
        which signal); ``callback(trainer, row)`` is called on every logged
        row.
        """
        from tqdm.auto import tqdm

        with self.stop_on_signals():
            return self._fit(progress, callback, tqdm)

    def _fit(self, progress: bool, callback, tqdm) -> str:
        self.start()
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", disable=not progress,
                   desc=f"{self.config.arch} {self.config.image_size}px")
        try:
            while not self.should_stop():
                row = self.train_one_step()  # TrainingDiverged ends the session itself
                bar.update(1)
                if row is not None:
                    bar.set_postfix(g=f"{row['g_loss']:.3f}", d=f"{row['d_loss']:.3f}", epoch=row["epoch"])
                    if callback is not None:
                        callback(self, row)
        except KeyboardInterrupt:  # raised by a callback, or outside the main thread
            bar.close()
            return self.stop("interrupted")
        except (WriteError, checkpoints.CheckpointWriteError):  # a full disk: nothing more can be saved
            bar.close()
            self._end_session()
            raise
        bar.close()
        return self.stop("done" if self.done else "interrupted")

    # --- bookkeeping

    def _log(self) -> dict | None:
        """Write the history row of the steps since the last one (losses averaged over them)."""
        if not self._pending:
            return None
        now = time.perf_counter()
        keys = dict.fromkeys(key for step_metrics in self._pending for key in step_metrics)  # r1_penalty: some steps
        values = {key: float(np.mean([float(m[key]) for m in self._pending if key in m])) for key in keys}
        if not all(math.isfinite(value) for value in values.values()):
            raise self._diverged(values)
        if max(abs(values["g_loss"]), abs(values["d_loss"])) > LOSS_LIMIT:
            raise self._diverged(values, f"the losses passed {LOSS_LIMIT:g}, so one network has won outright")
        row = {"step": self.step, "epoch": self.epoch, **values,
               "images_per_s": len(self._pending) * self.config.batch_size / max(now - self._log_start, 1e-9),
               "elapsed_s": self.elapsed, **self.architecture.history_extras()}
        if self._ssim_due(len(self._pending)):
            row["nn_ssim"] = self.measure_ssim()
        self.run.append_history(row)
        self._elapsed_recorded = row["elapsed_s"]
        self._pending.clear()
        self._log_start = now
        return row

    def _diverged(self, values: dict, why: str = "losses or weights are not finite") -> TrainingDiverged:
        """End the session on divergence: the final figures from the last finite samples; the error to raise."""
        self._pending.clear()
        self._end_session()
        self.run.save_final_figures(self.sample())
        kept = self.run.latest_checkpoint()
        advice = ("resume it from there" if kept else
                  "resuming starts it again from step 0 with its config (change the rates with --g-lr/--d-lr)")
        return TrainingDiverged(
            f"training diverged at step {self.step} ({why}): {values}. The last good checkpoint "
            f"({kept if kept else 'none yet'}) is kept; lower the learning rates (--g-lr/--d-lr) and "
            f"{advice}, or start again."
        )

    def _ssim_due(self, steps_since_last_row: int) -> bool:
        """True on the first logged row at or after each multiple of ssim_every, and at the end."""
        every = self.config.ssim_every
        if not every:
            return False
        return self.done or self.step // every > (self.step - steps_since_last_row) // every

    def measure_ssim(self) -> float:
        """Median over the fixed sample grid of each image's best SSIM against the reference subset.

        The fast kernel's maxima (within ~1e-7 of skimage); evaluate.py does
        the full exact search.
        """
        scores = metrics.pairwise_ssim(self.sample(), self.ssim_references)
        return float(np.median(scores.max(axis=1)))

    def sample(self, latent_vectors=None) -> np.ndarray:
        """Generated images for the fixed latent grid (or the given latents)."""
        if latent_vectors is not None:
            return sampling.generate_images(self.sampling_generator, latent_vectors)
        if self._samples is None or self._samples[0] != self.step:
            self._samples = (self.step, sampling.generate_images(self.sampling_generator, self.fixed_latents))
        return self._samples[1]

    def save_samples(self) -> Path:
        return self.run.save_sample_grid(self.step, self.sample())

    def save_checkpoint(self) -> Path | None:
        """Checkpoint the current step, unless it is saved already or not finite."""
        if self.step == self.last_checkpoint_step:
            return None
        pending = [float(m["g_loss"]) + float(m["d_loss"]) for m in self._pending]
        weights_finite = all(
            bool(np.isfinite(keras.ops.convert_to_numpy(v)).all()) for v in self.generator.trainable_variables
        )
        if not weights_finite or not all(math.isfinite(value) for value in pending):
            raise self._diverged({"weights_finite": weights_finite})
        arch = self.architecture
        meta = {**self._model_meta(), "backend": keras.backend.backend(), "elapsed_s": self.elapsed, **arch.state(),
                "config": self.config.to_dict()}  # so a run whose config.json is lost can still resume
        with contextlib.ExitStack() as scratch:
            if self.cluster.is_chief:
                folder, keep = self.run_dir, self.config.keep_checkpoints
            else:
                # The chief writes the checkpoint every process resumes from.  The others make the same
                # reads into a scratch folder they delete: under TensorFlow's multi-worker strategy reading
                # a variable (batch-norm statistics) can be a collective, which every worker must join.
                folder, keep = scratch.enter_context(tempfile.TemporaryDirectory(prefix="follower-ckpt-")), 1
            path = checkpoints.save_checkpoint(
                folder, self.step, self.epoch, arch.generator, arch.discriminator, arch.g_optimizer,
                arch.d_optimizer, meta, keep=keep, size_hint=self.checkpoint_bytes(), **arch.checkpoint_parts(),
            )
        self.last_checkpoint_step = self.step
        return path if self.cluster.is_chief else None

    def _model_meta(self) -> dict:
        """What a checkpoint records about the model, checked again on resume."""
        return {name: getattr(self.config, name) for name in MODEL_FIELDS}

    def describe_networks(self) -> list[str]:
        """One line per network: its input and output shapes (from the models) and parameter count."""
        import modelscript

        lines = []
        for model in (self.generator, self.discriminator):
            inputs, outputs = modelscript.io_shapes(model)
            lines.append(f"{model.name}: input {inputs} -> output {outputs}, {model.count_params():,} parameters")
        return lines + self.architecture.describe()
