"""How the code hangs together: no import cycles, one declaration per setting, a fast --help,
and a checkpoint layout that stays readable by older and newer versions."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


PACKAGE = "oasis_gan"
TOP_LEVEL = {"modelscript", "data_utils", "metrics", "train", "generate", "evaluate", "conftest"}


def module_files() -> dict[str, Path]:
    """Module -> its file: the top-level modules by name, the package's by their dotted path inside it
    ("training", "engines" for engines/__init__.py, "engines.jax_engine", "runs.run_folder")."""
    modules = {path.stem: path for path in ROOT.glob("*.py")}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT / PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts) or PACKAGE] = path
    return modules


def project_imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source (function-level imports too)."""
    modules = module_files()
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.removeprefix(PACKAGE + ".") for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                inside = node.module.removeprefix(PACKAGE).removeprefix(".")
                for alias in node.names:  # a submodule by name, else a name of the module itself
                    submodule = f"{inside}.{alias.name}".lstrip(".")
                    found.add(submodule if submodule in modules else inside or PACKAGE)
        graph[name] = {module for module in found if module in modules and module not in (name, PACKAGE)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state = {}  # module -> "open" while on the path, "done" after

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return path[path.index(imported):] + [imported] if imported in path else [module, imported, module]
            if imported not in state:
                cycle = visit(imported, path + [imported])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_cycle_through_several_modules():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_imports_one_that_imports_it_back():
    graph = project_imports()
    assert {"training", "engines.tensorflow_engine", "engines.jax_engine", "engines.objectives", "data_utils",
            "demo_cohort", "runs.run_folder", "architectures.gan"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_engines_depend_on_the_objectives_and_never_the_reverse():
    graph = project_imports()
    for engine in ("engines.tensorflow_engine", "engines.jax_engine"):
        assert "engines.objectives" in graph[engine] and "training" not in graph[engine]
    assert not graph["engines.objectives"] & {"engines.tensorflow_engine", "engines.jax_engine", "engines", "training",
                                              "architectures.gan"}
    assert graph["config"] <= {"architectures.table", "machine"}, "config.py must stay free of the heavier modules"
    assert not graph["architectures.table"], "the architecture table imports nothing of the project"


def test_train_help_and_flag_errors_import_neither_tensorflow_nor_keras(tmp_path):
    code = ("import sys, runpy; sys.argv = ['train.py'] + sys.argv[1:]\n"
            "try:\n    runpy.run_path('train.py', run_name='__main__')\n"
            "except SystemExit as exit:\n"
            "    heavy = sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules)\n"
            "    print('HEAVY', heavy, 'CODE', exit.code)\n")
    for args in (["--help"], ["--demo", "--batch-size", "0"], ["--demo", "--arch", "vae"], ["--steps", "3"]):
        result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
        assert "HEAVY [] CODE" in result.stdout, (args, result.stdout[-500:], result.stderr[-500:])


def test_every_flag_is_declared_once_on_the_config(tmp_path):
    import argparse

    from oasis_gan import config
    import train

    parser = train.build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    declared = {item.metadata["flag"] for item in config.declarations() if item.metadata["flag"]}
    assert declared <= flags
    run_own = {"-h", "--help", "--out", "--resume", "--checkpoint", "--quiet"}
    several_processes = {"--coordinator", "--num-processes", "--process-id", "--cluster-timeout"}  # not the run's:
    assert flags - declared == run_own | several_processes  # a run may resume on another number of processes
    for item in config.declarations():
        assert item.metadata["help"], f"{item.name} has no help text"
    args = parser.parse_args(["--demo", "--g-lr", "0.001", "--no-flip", "--splits", "train", "--devices", "all"])
    assert config.explicit_settings(args) == {"demo": True, "data_dir": None, "g_learning_rate": 0.001,
                                               "flip": False, "splits": ["train"], "devices": -1}
    assert isinstance(parser, argparse.ArgumentParser)


def test_validate_changes_nothing_and_resolved_fills_the_architecture_defaults():
    from oasis_gan.config import TrainConfig

    config = TrainConfig(demo=True, steps=2, arch="stylegan")
    before = config.to_dict()
    assert config.validate() is config and config.to_dict() == before
    resolved = config.resolved()
    assert config.to_dict() == before and resolved is not config
    assert (resolved.latent_dim, resolved.g_learning_rate, resolved.r1_gamma) == (512, 2e-3, 0.0002 * 64**2 / 32)
    assert resolved.resolved() == resolved


def test_checkpoint_layout_is_pinned(tmp_path, tiny_images):
    """The files and keys of a checkpoint: run folders written by other versions must keep resuming.

    (Checkpoints from before manifest.json existed load unverified: tests/test_faults.py.)"""
    from oasis_gan import training
    from oasis_gan.config import TrainConfig

    # seed 000's dcgan: no regularisers (dcgan-plus adds generator_ema.weights.h5 and the augmentation RNG)
    config = TrainConfig(data_dir="unused", arch="dcgan", image_size=32, batch_size=8, steps=2, checkpoint_every=2,
                         sample_grid=4, ssim_every=0)
    training.Trainer.new(config, tmp_path / "run", images=tiny_images, progress=False).fit(progress=False)
    folder = tmp_path / "run" / "checkpoints" / "ckpt-00000002"
    assert sorted(path.name for path in folder.iterdir()) == [
        "discriminator.weights.h5", "generator.weights.h5", "manifest.json", "state.json", "training_state.npz"]
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    assert sorted(manifest) == ["discriminator.weights.h5", "generator.weights.h5", "state.json",
                                "training_state.npz"]
    assert all(set(entry) == {"bytes", "sha256"} for entry in manifest.values())
    state = json.loads((folder / "state.json").read_text())
    assert set(state) == {"arch", "image_size", "latent_dim", "backend", "elapsed_s", "augment_p", "augment_signs",
                          "augment_rt", "step", "epoch", "saved_at", "g_optimizer_variables",
                          "d_optimizer_variables", "config"}  # config: added 2026-12, checkpoints without it load
    assert state["config"] == json.loads((tmp_path / "run" / "config.json").read_text())
    with np.load(folder / "training_state.npz") as stored:
        prefixes = {key.split("/")[0] for key in stored.files}
    assert prefixes == {"g_optimizer", "d_optimizer", "d_seed"}  # dcgan's D has dropout: its RNG state
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == [
        "checkpoints", "config.json", "environment.json", "fixed_latents.npy", "history.csv", "losses.png",
        "real_samples.png", "samples", "samples.png"]


def test_no_class_is_over_250_lines_and_the_trainer_is_composed_of_its_parts():
    """The Trainer trains; its clock, history log, checkpointer and sample grid are objects of their own."""
    too_long = []
    for path in sorted(module_files().values()):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250:
                too_long.append(f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not too_long, too_long
    trainer = next(node for node in ast.parse((ROOT / PACKAGE / "training.py").read_text()).body
                   if isinstance(node, ast.ClassDef) and node.name == "Trainer")
    assigned = {target.attr for node in ast.walk(trainer) if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Attribute)}
    assert {"clock", "history", "checkpointer", "grid"} <= assigned
    assert "bookkeeping" in project_imports()["training"] and "training" not in project_imports()["bookkeeping"]


def test_the_readme_front_page_stays_at_most_250_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail to docs/"


def test_the_three_tools_share_one_cli_module_for_their_common_flags_and_checks():
    graph = project_imports()
    for tool in ("train", "generate", "evaluate"):
        assert "cli" in graph[tool], tool
    assert graph["cli"] <= {"config", "data_utils", "runs.run_folder"}, "cli.py must stay light (no Keras)"
    sources = "".join((ROOT / f"{tool}.py").read_text() for tool in ("train", "generate", "evaluate"))
    assert "ckpt-00000400" not in sources  # the --checkpoint help is written once, in cli.py


def test_both_engines_define_every_function_of_the_declared_interface_with_its_parameters():
    """engines.Engine declares what the rest of the code calls on an engine; each engine module defines it all."""
    def functions(tree) -> dict[str, list[str]]:
        return {node.name: [arg.arg for arg in node.args.args if arg.arg != "self"]
                for node in tree.body if isinstance(node, ast.FunctionDef)}

    package = ast.parse((ROOT / PACKAGE / "engines" / "__init__.py").read_text())
    interface = functions(next(node for node in package.body if isinstance(node, ast.ClassDef)
                               and node.name == "Engine"))
    assert {"compile_step", "input_gradient", "start_cluster", "accelerators"} <= set(interface)
    for engine in ("tensorflow_engine", "jax_engine"):
        defined = functions(ast.parse((ROOT / PACKAGE / "engines" / f"{engine}.py").read_text()))
        for name, parameters in interface.items():
            assert name in defined, f"{engine} lacks {name}"
            assert defined[name][:len(parameters)] == parameters, (engine, name, defined[name], parameters)


def test_an_architecture_is_one_table_entry_and_no_module_names_one():
    """Adding an architecture is an entry in architectures/table.py plus its networks: nothing else names one."""
    from oasis_gan import config
    from oasis_gan.architectures import table

    assert config.ARCHITECTURES == table.NAMES and config.TrainConfig().arch == table.TABLE[0].name
    for entry in table.TABLE:
        for reference in (entry.generator, entry.discriminator):
            module, function = reference.split(":")
            path = ROOT / (module.replace(".", "/") + ".py")
            assert f"def {function}(" in path.read_text(), reference
    named = []
    for name, path in module_files().items():
        if name in ("architectures.table", "conftest"):
            continue
        tree = ast.parse(path.read_text())
        defaults = {id(default) for node in ast.walk(tree) if isinstance(node, ast.arguments)
                    for default in node.defaults}  # modelscript's arch="dcgan": the course's signature
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in table.NAMES and id(node) not in defaults:
                named.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not named, named
