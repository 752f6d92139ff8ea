"""The step engines: TensorFlow (default) and JAX, mixed precision, several devices.

The backend and the device count are fixed when a framework starts, so the
JAX and multi-device cases run in a fresh Python process each (as a user's
``KERAS_BACKEND=jax python train.py ...`` does); mixed precision on the
TensorFlow engine runs in this process.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import script_runner
from oasis_gan import batches, engines, machine, training
from oasis_gan.architectures import gan
from oasis_gan.config import ConfigError, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(image_size=32, batch_size=8, log_every=2, sample_every=4, checkpoint_every=2, ssim_every=0,
             sample_grid=4)


def run_python(code: str, tmp_path: Path, **env) -> dict:
    """Run ``code`` in a process of its own (cwd tmp_path); it prints one JSON line last, returned here.

    The process is forked from one that has imported the project for these start-up variables (``env``'s
    KERAS_BACKEND and XLA_FLAGS, say), as a script's run is: tests/script_runner.py.
    """
    script = tmp_path / "snippet.py"
    script.write_text(textwrap.dedent(code))
    result = script_runner.run(script, cwd=tmp_path, env=env, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


TRAIN_SNIPPET = """
    import json, sys
    import keras
    import numpy as np
    from oasis_gan import training
    from oasis_gan.config import TrainConfig

    images = np.random.default_rng(0).uniform(-1, 1, (32, 32, 32, 1)).astype(np.float32)
    np.save("images.npy", images)  # for a run resumed in the test's own process

    def train(run, **settings):
        # float32 unless a case asks: XLA compiles a bfloat16 step on the CPU about twice as slowly
        config = TrainConfig(demo=True, steps=4, **{**{QUICK}, "precision": "float32", **settings})
        trainer = training.Trainer.new(config, run, images=images, progress=False)
        before = [np.array(v) for v in trainer.generator.trainable_variables]
        trainer.fit(progress=False)
        after = [np.array(v) for v in trainer.generator.trainable_variables]
        return trainer, any(not np.array_equal(a, b) for a, b in zip(before, after))
""".replace("{QUICK}", repr(QUICK))


def test_jax_engine_trains_without_tensorflow_and_its_checkpoint_resumes_on_tensorflow(tmp_path):
    report = run_python(TRAIN_SNIPPET + """
    # dcgan-plus's EMA and augmentation (their state crosses to TensorFlow below); R1 off here, one compiled
    # variant fewer: StyleGAN's step below has it
    trainer, changed = train("run", r1_gamma=0.0)
    rows = open("run/history.csv").read().splitlines()
    # StyleGAN's first step has both lazy penalties: R1's input gradient through D, path length's through G;
    # in bfloat16, as GPU runs train (emulated where the CPU lacks it).
    style = training.Trainer.new(TrainConfig(demo=True, steps=1, arch="stylegan", latent_dim=16,
                                             precision="mixed_bfloat16", **{**{QUICK}, "log_every": 1}),
                                 "style", images=images, progress=False)
    style.fit(progress=False)
    style_row = open("style/history.csv").read().splitlines()
    print(json.dumps({"backend": keras.backend.backend(), "changed": changed, "rows": len(rows) - 1,
                      "tensorflow_imported": "tensorflow" in sys.modules,
                      "environment": json.load(open("run/environment.json")),
                      "style": dict(zip(style_row[0].split(","), style_row[1].split(","))),
                      "pl_mean": style.architecture.pl_mean}))
    """.replace("{QUICK}", repr(QUICK)), tmp_path, KERAS_BACKEND="jax")
    assert report["backend"] == "jax" and report["changed"] and report["rows"] == 2  # steps 2 and 4
    assert not report["tensorflow_imported"], "the JAX path must not need TensorFlow"
    assert float(report["style"]["pl_penalty"]) > 0 and float(report["style"]["r1_penalty"]) > 0
    assert report["pl_mean"] > 0
    assert report["environment"]["backend"] == "jax" and "jax" in report["environment"]

    # The same run folder goes on under TensorFlow (this process): checkpoints are backend-neutral.  The run
    # trained on the snippet's images, not on a demo cohort: given none, resuming would build one (36 s).
    trainer = training.Trainer.resume(tmp_path / "run", images=np.load(tmp_path / "images.npy"), progress=False,
                                      steps=6)
    assert trainer.step == 4
    trainer.fit(progress=False)
    assert trainer.step == 6 and np.isfinite(trainer.sample()).all()


def test_jax_data_parallel_step_matches_one_device(tmp_path):
    # dcgan-classic has no dropout, and batch norm over the sharded batch is still over the whole batch,
    # so two devices must compute what one does, up to float rounding.
    report = run_python(TRAIN_SNIPPET + """
    import jax
    one, _ = train("one", arch="dcgan-classic")  # float32 (train's default): equal up to its rounding
    two, changed = train("two", arch="dcgan-classic", devices=2)
    difference = max(float(np.max(np.abs(np.array(a) - np.array(b))))
                     for a, b in zip(one.generator.trainable_variables, two.generator.trainable_variables))
    print(json.dumps({"devices": len(jax.devices()), "replicas": [one.replicas, two.replicas],
                      "changed": changed, "difference": difference,
                      "sharding": str(two.generator.trainable_variables[0].value.sharding)}))
    """, tmp_path, KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert report["devices"] == 2 and report["replicas"] == [1, 2] and report["changed"]
    assert report["difference"] < 1e-4
    assert "batch" in report["sharding"]  # the weights live on the 2-device mesh


def test_tensorflow_mirrored_strategy_on_two_logical_cpus(tmp_path):
    report = run_python("""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    """ + TRAIN_SNIPPET + """
    trainer, changed = train("run", devices=2)
    rows = open("run/history.csv").read().splitlines()[1:]
    values = [float(x) for row in rows for x in row.split(",")[2:6]]
    from oasis_gan import config as config_module
    try:
        train("xla", devices=2, jit_compile=True, augment="off")  # augmented, XLA is refused for another reason
        xla_error = ""
    except config_module.ConfigError as error:
        xla_error = str(error)
    print(json.dumps({"replicas": trainer.replicas, "changed": changed, "rows": len(rows), "values": len(values),
                      "finite": bool(np.isfinite(values).all()),
                      "strategy": type(trainer.distribution).__name__, "xla_error": xla_error}))
    """, tmp_path)
    assert report["replicas"] == 2 and report["strategy"] == "MirroredStrategy"
    assert report["rows"] == 2 and report["values"] == 8  # steps 2 and 4: losses and accuracies
    assert report["changed"] and report["finite"]
    assert report["xla_error"].startswith("jit_compile:")


def test_mixed_bfloat16_trains_with_float32_weights_and_outputs(tmp_path, tiny_images):
    config = TrainConfig(demo=True, steps=2, precision="mixed_bfloat16", **QUICK).validate()
    trainer = training.Trainer.new(config, tmp_path / "run", images=tiny_images, progress=False)
    trainer.fit(progress=False)
    assert trainer.generator.dtype_policy.compute_dtype == "bfloat16"
    assert all(variable.dtype == "float32" for variable in trainer.generator.trainable_variables)
    samples = trainer.sample()
    assert samples.dtype == np.float32 and np.isfinite(samples).all() and np.abs(samples).max() <= 1.0
    # Later models in this process are unaffected by the run's policy.
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_resume_may_switch_to_bfloat16_but_not_to_float16(tmp_path, tiny_images):
    config = TrainConfig(demo=True, steps=2, **QUICK).validate()
    training.Trainer.new(config, tmp_path / "run", images=tiny_images, progress=False).fit(progress=False)
    with pytest.raises(ConfigError, match="^precision: .*cannot switch to or from mixed_float16"):
        training.Trainer.resume(tmp_path / "run", images=tiny_images, progress=False, precision="mixed_float16",
                                steps=3)
    resumed = training.Trainer.resume(tmp_path / "run", images=tiny_images, progress=False,
                                      precision="mixed_bfloat16", steps=3)
    assert resumed.step == 2 and resumed.config.precision == "mixed_bfloat16"


@pytest.mark.parametrize("flags, native", [("fpu sse2 avx512f avx512_bf16 avx512_vnni", True),
                                           ("fpu avx512f amx_bf16 amx_tile", True), ("fpu sse2 avx2 fma", False)])
def test_bfloat16_support_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert engines.cpu_has_bfloat16(str(cpuinfo)) is native
    assert engines.cpu_has_bfloat16(str(tmp_path / "missing")) is False  # not Linux: float32


@pytest.mark.parametrize("native, resolved", [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_precision_is_bfloat16_only_where_the_device_computes_it_natively(monkeypatch, tmp_path, tiny_images,
                                                                              native, resolved):
    monkeypatch.setattr(engines, "native_bfloat16", lambda: native)
    assert machine.Machine.detect() == machine.Machine(accelerator=False, native_bfloat16=native)
    assert machine.precision_for("auto", machine.Machine.detect()) == resolved
    for given in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert machine.precision_for(given, machine.Machine.detect()) == given  # a precision asked for is kept
    config = TrainConfig(demo=True, steps=1, **QUICK).validate()
    assert config.precision == "auto"  # the default
    trainer = training.Trainer.new(config, tmp_path / "run", images=tiny_images, progress=False)
    assert trainer.config.precision == resolved  # the run records what it computed in
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == resolved
    assert trainer.generator.dtype_policy.compute_dtype == ("bfloat16" if native else "float32")
    # Resumed with "auto" (the notebook's default) elsewhere, the run keeps its own precision.
    monkeypatch.setattr(engines, "native_bfloat16", lambda: not native)
    trainer.fit(progress=False)
    resumed = training.Trainer.resume(tmp_path / "run", images=tiny_images, progress=False, precision="auto",
                                      steps=2)
    assert resumed.config.precision == resolved


def test_the_machine_decides_image_size_precision_and_length_once_for_what_is_left_unset():
    cpu, bf16_cpu = machine.Machine(False, False), machine.Machine(False, True)
    gpu = machine.Machine(accelerator=True, native_bfloat16=True)
    demo = machine.resolve({"demo": True}, cpu)
    assert (demo.image_size, demo.precision, demo.steps, demo.epochs, demo.batch_size) == (64, "float32", 1600, None, 16)
    demo = machine.resolve({"demo": True, "precision": "auto"}, bf16_cpu)  # more steps fit 10 minutes in bfloat16
    assert (demo.precision, demo.steps, demo.batch_size) == ("mixed_bfloat16", 2000, 16)
    assert machine.resolve({"demo": True, "precision": "float32"}, bf16_cpu).steps == 1600  # follows the precision
    on_gpu = machine.resolve({"demo": True}, gpu)  # an accelerator: the task's size, epochs at the usual batch
    assert (on_gpu.image_size, on_gpu.precision, on_gpu.epochs, on_gpu.steps, on_gpu.batch_size) == \
        (256, "mixed_bfloat16", 50, None, 32)
    data = machine.resolve({"data_dir": "x"}, bf16_cpu)
    assert (data.epochs, data.steps, data.batch_size, data.image_size) == (50, None, 32, 64)
    given = machine.resolve({"demo": True, "steps": 7, "image_size": 32, "batch_size": 8, "epochs": None,
                             "precision": "mixed_float16", "latent_dim": None}, gpu)  # None: unset
    assert (given.steps, given.image_size, given.batch_size, given.precision, given.latent_dim) == \
        (7, 32, 8, "mixed_float16", 256)  # resolved: dcgan-ada's latent size
    with pytest.raises(ConfigError, match="batch_size"):
        machine.resolve({"demo": True, "batch_size": 0}, cpu)


def test_mixed_float16_scales_the_loss():
    config = TrainConfig(demo=True, steps=1, precision="mixed_float16").validate().resolved()
    g_optimizer, d_optimizer = gan.make_optimizers(config)
    assert isinstance(g_optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(d_optimizer, keras.optimizers.LossScaleOptimizer)
    plain = gan.make_optimizers(TrainConfig(demo=True, steps=1).validate().resolved())[0]
    assert not isinstance(plain, keras.optimizers.LossScaleOptimizer)


@pytest.mark.parametrize("flip_axis", ["rows", "columns"])
def test_gather_on_the_device_matches_the_host_batch(tiny_images, flip_axis):
    sampler = batches.BatchSampler(tiny_images.copy(), batch_size=8, latent_dim=4, seed=3, flip=True,
                                   flip_axis=flip_axis)
    gather = engines.current().compile_gather(sampler.mirror_axis)
    device_images = engines.current().to_device(tiny_images)
    for step in (0, 1, 9):
        indices, flips = sampler.batch_plan(step)
        assert flips.any() and not flips.all()
        on_device = np.asarray(gather(device_images, indices, flips))
        np.testing.assert_array_equal(on_device, sampler.real_batch(step))


@pytest.mark.parametrize("field, value", [("precision", "float8"), ("devices", 0), ("devices", -2),
                                          ("devices", True)])
def test_bad_speed_settings_name_their_field(field, value):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        TrainConfig(demo=True, steps=1, **{field: value}).validate()


def test_more_devices_than_exist_names_the_field(tmp_path, tiny_images):
    config = TrainConfig(demo=True, steps=1, devices=64, **QUICK).validate()
    with pytest.raises(ConfigError, match="^devices: 64 asked for"):
        training.Trainer.new(config, tmp_path / "run", images=tiny_images, progress=False)
    assert not (tmp_path / "run").exists()


def test_cli_rejects_bad_device_count(capsys):
    import train

    parser = train.build_parser()
    assert parser.parse_args(["--devices", "all"]).devices == -1
    assert parser.parse_args(["--devices", "2"]).devices == 2
    for bad in ("none", "0", "-1"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--demo", "--devices", bad])
        assert "--devices" in capsys.readouterr().err


def test_deterministic_under_jax_sets_the_xla_flag_before_the_devices_start_or_refuses(tmp_path):
    report = run_python("""
    import json, os
    import jax
    from oasis_gan.engines import jax_engine
    from oasis_gan.config import ConfigError
    jax_engine.enable_determinism()  # before any device is asked for: the flag is set
    flag_set = jax_engine.DETERMINISM_FLAG in os.environ.get("XLA_FLAGS", "")
    print(json.dumps({"flag_set": flag_set}))
    """, tmp_path, KERAS_BACKEND="jax", XLA_FLAGS="")
    assert report["flag_set"]
    report = run_python("""
    import json
    import jax
    from oasis_gan.engines import jax_engine
    from oasis_gan.config import ConfigError
    jax.devices()  # the backends start without the flag
    try:
        jax_engine.enable_determinism()
        error = ""
    except ConfigError as exc:
        error = str(exc)
    print(json.dumps({"error": error}))
    """, tmp_path, KERAS_BACKEND="jax", XLA_FLAGS="")
    assert report["error"].startswith("deterministic: JAX has already started its devices")


def test_the_jax_engine_keeps_compiled_steps_in_the_project_cache(tmp_path):
    # A resumed or repeated run then skips XLA's compile (minutes for StyleGAN at 256x256 on a GPU).
    environment = {name: value for name, value in os.environ.items() if name != "JAX_COMPILATION_CACHE_DIR"}
    environment.update(PYTHONPATH=str(ROOT), KERAS_BACKEND="jax", OASIS_GAN_CACHE=str(tmp_path / "cache"),
                       JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    code = ("import jax; from oasis_gan.engines import jax_engine; jax.jit(lambda x: x * 2 + 1)(jax.numpy.arange(3.0)).block_until_ready(); "
            "print(jax.config.jax_compilation_cache_dir)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "cache" / "jax")
    assert any((tmp_path / "cache" / "jax").iterdir())
    # A folder the user names wins.
    environment["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "mine")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "mine") and any((tmp_path / "mine").iterdir())
