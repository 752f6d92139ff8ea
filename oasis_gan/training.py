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

* architectures/gan.py: the models, optimizers and compiled step of each
  architecture (the step's engine comes from engines/: TensorFlow or JAX);
* batches.py: each step's real images, flips and latents, a pure function
  of (seed, step), so a resumed run continues exactly;
* run_folder.py: config.json, history.csv, sample grids, figures, and the
  checkpoints (checkpoints.py).

The trainer decides when the bookkeeping happens: a history row every
``log_every`` steps (with the best-match SSIM of the sample grid every
``ssim_every``), a sample grid every ``sample_every``, a checkpoint every
``checkpoint_every``, and a stop when losses or weights stop being finite.
Its parts do it (bookkeeping.py): the session clock (time, budget, signals,
several processes), the history log, the checkpointer and the sample grid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np

import data_utils
from oasis_gan import engines, machine
from oasis_gan.architectures import gan
from oasis_gan.batches import BatchSampler, float_images, latent_grid, real_batches
from oasis_gan.bookkeeping import Checkpointer, Divergence, HistoryLog, SampleGrid, SessionClock
from oasis_gan.cluster import ClusterError, joined as joined_cluster
from oasis_gan.config import ConfigError, TrainConfig
from oasis_gan.runs import checkpoints
from oasis_gan.runs.run_folder import FollowerRunFolder, RunFolder, WriteError

MODEL_FIELDS = ("arch", "image_size", "latent_dim")  # fixed for the life of a run
DEVICE_SET_BYTES = 8 * 2**30  # the largest training set copied whole to one accelerator (OASIS at 256x256: 0.7 GiB)
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
                           ("augment", lambda config: config.augment == "ada", "augmentation state"),
                           ("d_dropout", lambda config: bool(config.d_dropout), "the discriminator's dropout RNG")):
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

    Make one with ``Trainer.new`` or ``Trainer.resume``.  The bookkeeping is
    three parts (bookkeeping.py): ``clock`` (training time, the budget,
    signals, agreement between processes), ``history`` (the rows and the
    divergence check) and ``checkpointer``.
    """

    def __init__(self, config: TrainConfig, run: RunFolder, images: np.ndarray | None, progress: bool):
        self.config = config
        self.run = run
        self.run_dir = run.path
        self.engine = engine = engines.current()
        if config.deterministic:
            engine.enable_determinism()
        engine.set_random_seed(config.seed)

        self.images = training_set(config, images, progress)
        self.steps_per_epoch = config.steps_per_epoch(len(self.images))
        self.total_steps = config.total_steps(len(self.images))
        self.cluster = joined_cluster()  # one process, or this one's place in a run of several
        _check_batch_split(config.batch_size, self.cluster)
        self.sampler = BatchSampler(self.images, config.batch_size, config.latent_dim, config.seed, config.flip,
                                    process=(self.cluster.process_id, self.cluster.num_processes),
                                    flip_axis=config.flip_axis)

        self.distribution = engine.make_distribution(config.devices)
        self.replicas = engine.replica_count(self.distribution)
        _check_batch_split(config.batch_size, self.cluster, self.replicas)
        self.architecture = gan.for_config(config)
        self.architecture.build(engine, self.distribution, self.total_steps)
        self.real_batch = real_batches(self.sampler, engine, self.distribution, DEVICE_SET_BYTES)  # step -> batch

        self.step = 0
        self.grid = SampleGrid(lambda: self.architecture.sampling_generator,
                               latent_grid(config.seed, config.sample_grid, config.latent_dim),
                               ssim_reference_subset(self.images, config.ssim_references, config.seed))
        self.clock = SessionClock(config.minutes, self.cluster, engine)
        self.history = HistoryLog(run, config.batch_size, config.ssim_every)
        self.checkpointer = Checkpointer(run, self.architecture, config, self.cluster, MODEL_FIELDS)

    # --- the two ways in

    @classmethod
    def new(cls, config: TrainConfig, run_dir, images: np.ndarray | None = None, progress: bool = True) -> "Trainer":
        """Start a new run in ``run_dir`` (which must not hold one) from ``config``."""
        config = with_absolute_paths(config.validate())
        config = machine.resolve(config.to_dict(), machine.Machine.detect())  # precision "auto" made concrete
        run = folder_for(run_dir)
        run.check_fresh()  # before the data load and model build, so nothing is wasted or changed
        with _locked_while_starting(run, remove_on_failure=True):  # no half-made folder is left behind
            trainer = cls(config, run, images, progress)
            run.create(config, engines.describe_environment(), trainer.grid.latents,
                       float_images(trainer.images[: config.sample_grid]))
        trainer.checkpointer.warn_if_disk_is_low()
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
        with _locked_while_starting(run):
            trainer = cls(config, run, images, progress)
            _restore_or_restart(trainer, checkpoint, lengthened="steps" in changes or "epochs" in changes)
        trainer.checkpointer.warn_if_disk_is_low()
        return trainer

    def continue_from(self, state: dict) -> None:
        """Take up a checkpoint's state (restored into the networks already): step, clock, history."""
        self.architecture.load_state(state)
        self.step = self.checkpointer.last_step = int(state["step"])
        self.clock.resume_at(float(state.get("elapsed_s", 0.0)))
        self.run.truncate_history(self.step)
        self.run.warn_of_history_gap(self.step, self.config.log_every)

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
        return self.step >= self.total_steps or self.clock.spent()

    def should_stop(self) -> bool:
        """Whether to stop before the next step: done, or a signal (several processes agree: SessionClock)."""
        return self.clock.should_stop(lambda: self.done)

    @property
    def stop_signal(self) -> int | None:
        """The signal (SIGINT, SIGTERM) that asked the loop to stop, if one did."""
        return self.clock.stop_signal

    @property
    def elapsed(self) -> float:
        """Seconds spent training this run, over every session (idle time between sessions not counted)."""
        return self.clock.elapsed

    def start(self) -> None:
        """Begin a training session: the clock runs from here until ``stop``."""
        self.run.acquire_lock()
        if self.cluster.multi:
            try:
                self.clock.check_processes_agree(self.step, len(self.images), self.run_dir)
            except ClusterError:
                self.run.release_lock()
                raise
        self.clock.start()
        self.history.restart()

    def train_one_step(self) -> dict | None:
        """Run one update and its bookkeeping; returns the history row when one is logged."""
        if self.clock.session_start is None:
            self.start()
        self.history.add(self.architecture.train_step(self.step, self.real_batch(self.step),
                                                      self.sampler.latent_batch(self.step)))
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
        self.end_session()
        self.run.save_final_figures(self.sample())
        return status

    def end_session(self) -> None:
        """Stop the clock and give up the run folder's lock."""
        self.clock.end()
        self.run.release_lock()

    def stop_on_signals(self):
        """While inside, SIGINT and SIGTERM only ask the loop to stop between steps (SessionClock.stop_on_signals)."""
        return self.clock.stop_on_signals()

    def fit(self, progress: bool = True, callback=None) -> str:
        """Train until ``total_steps`` (the loop ``fit`` below); returns "done" or "interrupted"."""
        return fit(self, progress, callback)

    # --- bookkeeping

    def _log(self) -> dict | None:
        """Write the history row of the steps since the last one (losses averaged over them)."""
        try:
            row = self.history.write(self.step, self.epoch, self.elapsed, self.done,
                                     self.architecture.history_extras(), self.measure_ssim)
        except Divergence as divergence:
            raise _end_diverged(self, divergence) from None
        if row is not None:
            self.clock.recorded = row["elapsed_s"]
        return row

    def sample(self, latent_vectors=None) -> np.ndarray:
        """Generated images for the fixed latent grid (or the given latents)."""
        return self.grid.images(self.step, latent_vectors)

    def measure_ssim(self) -> float:
        return self.grid.best_match_ssim(self.step)

    def save_samples(self) -> Path:
        return self.run.save_sample_grid(self.step, self.sample())

    def save_checkpoint(self) -> Path | None:
        """Checkpoint the current step, unless it is saved already or not finite."""
        try:
            return self.checkpointer.save(self.step, self.epoch, self.elapsed, self.history.pending)
        except Divergence as divergence:
            raise _end_diverged(self, divergence) from None

    def describe_networks(self) -> list[str]:
        """One line per network: its input and output shapes (from the models) and parameter count."""
        return describe_networks(self.architecture)


def _end_diverged(trainer: Trainer, divergence: Divergence) -> TrainingDiverged:
    """End the session on divergence: the final figures from the last finite samples; the error to raise."""
    trainer.history.pending.clear()
    trainer.end_session()
    trainer.run.save_final_figures(trainer.sample())
    kept = trainer.run.latest_checkpoint()
    advice = ("resume it from there" if kept else
              "resuming starts it again from step 0 with its config (change the rates with --g-lr/--d-lr)")
    return TrainingDiverged(
        f"training diverged at step {trainer.step} ({divergence.why}): {divergence.values}. The last good "
        f"checkpoint ({kept if kept else 'none yet'}) is kept; lower the learning rates (--g-lr/--d-lr) and "
        f"{advice}, or start again."
    )


def fit(trainer: Trainer, progress: bool = True, callback=None) -> str:
    """``start``, ``train_one_step`` until done, ``stop``, with a progress bar; returns "done" or "interrupted".

    Ctrl-C or SIGTERM stops the run after the current step, saves a
    checkpoint of it and returns "interrupted" (``stop_signal`` says which
    signal); ``callback(trainer, row)`` is called on every logged row.
    """
    from tqdm.auto import tqdm

    with trainer.stop_on_signals():
        trainer.start()
        bar = tqdm(total=trainer.total_steps, initial=trainer.step, unit="step", disable=not progress,
                   desc=f"{trainer.config.arch} {trainer.config.image_size}px")
        try:
            while not trainer.should_stop():
                row = trainer.train_one_step()  # TrainingDiverged ends the session itself
                bar.update(1)
                if row is not None:
                    bar.set_postfix(g=f"{row['g_loss']:.3f}", d=f"{row['d_loss']:.3f}", epoch=row["epoch"])
                    if callback is not None:
                        callback(trainer, row)
        except KeyboardInterrupt:  # raised by a callback, or outside the main thread
            bar.close()
            return trainer.stop("interrupted")
        except (WriteError, checkpoints.CheckpointWriteError):  # a full disk: nothing more can be saved
            bar.close()
            trainer.end_session()
            raise
        bar.close()
        return trainer.stop("done" if trainer.done else "interrupted")


def _restore_or_restart(trainer: Trainer, checkpoint, lengthened: bool) -> None:
    """Continue ``trainer`` from its newest good checkpoint (or ``checkpoint``), or from step 0 when the run
    stopped before its first one; refuse a new length that is already behind it; save the updated config."""
    run, config = trainer.run, trainer.config
    if run.checkpoints() or checkpoint:
        _, state = run.restore(trainer.checkpointer.restore, checkpoint)
        run.set_aside_checkpoints_after(int(state["step"]))
        trainer.continue_from(state)
    else:
        print(f"{run.path} holds no checkpoint yet (it stopped before its first one): starting again "
              "from step 0 with its own config", file=sys.stderr)
        run.truncate_history(0)
    if lengthened and trainer.total_steps < trainer.step:
        asked = f"{config.steps} steps" if config.steps is not None else f"{config.epochs} epochs"
        raise ConfigError("steps" if config.steps is not None else "epochs",
                          f"{run.path} is already at step {trainer.step}, past the {asked} asked for; "
                          f"ask for more than {trainer.step} steps to train longer")
    run.write_config(config)  # with any settings changed for this resume


def describe_networks(architecture) -> list[str]:
    """One line per network of ``architecture``, then what else it trains (an EMA, augmentation)."""
    import modelscript

    lines = []
    for model in (architecture.generator, architecture.discriminator):
        inputs, outputs = modelscript.io_shapes(model)
        lines.append(f"{model.name}: input {inputs} -> output {outputs}, {model.count_params():,} parameters")
    return lines + architecture.describe()


def training_set(config: TrainConfig, images: np.ndarray | None, progress: bool) -> np.ndarray:
    """uint8 pixels memory-mapped from the data cache, or the caller's float32 (or uint8) images, checked."""
    images = load_training_pixels(config, progress) if images is None else images
    if images.dtype not in (np.uint8, np.float32):
        raise ConfigError("images", f"images must be float32 in [-1, 1] or uint8 pixels, got {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (config.image_size, config.image_size, 1):
        raise ConfigError("image_size", f"images have shape {images.shape[1:]}, expected "
                                        f"({config.image_size}, {config.image_size}, 1)")
    return images


def _check_batch_split(batch_size: int, cluster, replicas: int | None = None) -> None:
    """The global batch must split evenly over the processes (and, given ``replicas``, over all devices)."""
    if replicas is None and batch_size % cluster.num_processes:
        raise ConfigError("batch_size", f"{batch_size} does not split evenly over {cluster.num_processes} "
                                        "processes; use a multiple of the count")
    if replicas is not None and batch_size % replicas:
        over = f" of {cluster.num_processes} processes" if cluster.multi else ""
        raise ConfigError("batch_size", f"{batch_size} does not split evenly over {replicas} devices{over}; "
                                        "use a multiple of the device count")


@contextlib.contextmanager
def _locked_while_starting(run: RunFolder, remove_on_failure: bool = False):
    """Hold the run folder's lock while a Trainer starts; if it fails, release it (and, with
    ``remove_on_failure``, remove the folders this start made)."""
    created = run.path.absolute()
    while not created.parent.exists():
        created = created.parent  # the outermost folder a new run makes
    created = None if created.exists() or not remove_on_failure else created
    run.acquire_lock()
    try:
        yield
    except BaseException:
        run.release_lock()
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
