"""Do the tests notice when a core formula is wrong?  A small mutation check.

    python tools/mutation_check.py                       # every target below, about 20 minutes on 2 cores
    python tools/mutation_check.py --only metrics        # targets whose module or function contains "metrics"
    python tools/mutation_check.py --tests-from 493f837  # the same mutants, judged by that commit's tests/

Each mutant changes one thing in one function of the core modules (an
operator, a comparison, a number, min for max, median for mean, a branch
dropped), and the tests that cover that function run against it in a scratch
copy of the repository.  A mutant is killed when they fail (or hang); one
that survives is a change to a formula that no test would notice.  The table
at the end lists each function's mutants, kills, and the survivors' lines.

By default every mutant runs in this one process: the module is imported
once, each mutated version is executed into it, the tests run through
``pytest.main``, and the original is put back (about a second a mutant).
``--isolated`` runs each in a fresh process in a scratch copy instead
(about 30 s a mutant: the imports dominate) with a time limit, for mutants
that could hang or leave state behind.

Some survivors are equivalent (``x >= 0.5`` and ``x > 0.5`` agree on every
input a test can give) and are read, not counted away.  This is a tool, not
part of ``python -m pytest``: it runs the selected tests once per mutant.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FORMULA_TESTS = ["tests/test_formulas.py"]
# (module file, functions, tests that judge them)
TARGETS = [
    ("oasis_gan/engines/objectives.py", ["discriminator_loss", "generator_loss", "verdict_metrics", "ema_beta", "moving_average"],
     FORMULA_TESTS + ["tests/test_training.py::test_losses_follow_the_label_convention"]),
    ("metrics.py", ["summarize", "level_histogram", "total_variation", "level_distance"], FORMULA_TESTS),
    ("evaluate.py", ["compare_with_real", "band_lines", "history_checks"], FORMULA_TESTS),
    ("oasis_gan/runs/checkpoints.py", ["verify_checkpoint"], FORMULA_TESTS),
]

SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
         ast.FloorDiv: ast.Mult, ast.Lt: ast.GtE, ast.LtE: ast.Gt, ast.Gt: ast.LtE, ast.GtE: ast.Lt,
         ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.And: ast.Or, ast.Or: ast.And, ast.In: ast.NotIn,
         ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
NAME_SWAPS = {"min": "max", "max": "min", "median": "mean", "mean": "median", "minimum": "maximum",
              "maximum": "minimum", "ones_like": "zeros_like", "zeros_like": "ones_like", "any": "all", "all": "any"}


@dataclass
class Mutant:
    module: str
    function: str
    line: int
    change: str
    tree: ast.Module


def mutation_points(function: ast.AST):
    """(node, field, replacement, description) for every single change to make inside ``function``."""
    for node in ast.walk(function):
        if isinstance(node, (ast.BinOp, ast.BoolOp, ast.UnaryOp)) and type(node.op) in SWAPS:
            yield node, "op", SWAPS[type(node.op)](), f"{type(node.op).__name__} -> {SWAPS[type(node.op)].__name__}"
        if isinstance(node, ast.Compare):
            for index, operator in enumerate(node.ops):
                if type(operator) in SWAPS:
                    yield node, ("ops", index), SWAPS[type(operator)](), (
                        f"{type(operator).__name__} -> {SWAPS[type(operator)].__name__}")
        if isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
            changed = node.value + 1 if node.value in (0, 1) or isinstance(node.value, int) else node.value * 2
            yield node, "value", changed, f"{node.value!r} -> {changed!r}"
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield node, "value", not node.value, f"{node.value} -> {not node.value}"
        if isinstance(node, ast.Name) and node.id in NAME_SWAPS:
            yield node, "id", NAME_SWAPS[node.id], f"{node.id} -> {NAME_SWAPS[node.id]}"
        if isinstance(node, ast.Attribute) and node.attr in NAME_SWAPS:
            yield node, "attr", NAME_SWAPS[node.attr], f".{node.attr} -> .{NAME_SWAPS[node.attr]}"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
            yield node, "drop", None, f"{type(node.op).__name__} dropped"
        if isinstance(node, ast.If):
            yield node, "test", ast.Constant(False), "if-branch never taken"


def mutants_of(module: str, functions: list[str]):
    source = (ROOT / module).read_text()
    tree = ast.parse(source)
    for function in functions:
        found = [node for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function]
        if not found:
            raise SystemExit(f"{module} has no function {function!r}")
        # Skip the docstring: its text is no formula.
        points = list(mutation_points(found[0]))
        for number in range(len(points)):
            mutated = copy.deepcopy(tree)
            target = [node for node in ast.walk(mutated)
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function][0]
            node, field, replacement, change = list(mutation_points(target))[number]
            if field == "drop":  # -x -> x, not x -> x: replace the UnaryOp by its operand in its parent
                for parent in ast.walk(target):
                    for name, value in ast.iter_fields(parent):
                        if value is node:
                            setattr(parent, name, node.operand)
                        elif isinstance(value, list) and any(item is node for item in value):
                            setattr(parent, name, [node.operand if item is node else item for item in value])
            elif isinstance(field, tuple):
                getattr(node, field[0])[field[1]] = replacement
            else:
                setattr(node, field, replacement)
            ast.fix_missing_locations(mutated)
            yield Mutant(module, function, getattr(node, "lineno", found[0].lineno), change, mutated)


def run_tests(workdir: Path, tests: list[str], timeout: float) -> str:
    """'killed' when the tests fail or hang, 'survived' when they pass."""
    present = [test for test in tests if (workdir / test.split("::")[0]).exists()]
    if not present:
        return "no tests"
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider", "-p", "no:nbval",
               "-o", "addopts=", *present]
    try:
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    except subprocess.TimeoutExpired:
        return "killed"
    if result.returncode in (0,):
        return "survived"
    if result.returncode in (1,):
        return "killed"
    return "killed" if "error" in result.stdout.lower() else f"pytest exit {result.returncode}"


def run_in_process(mutant: Mutant, tests: list[str]) -> str:
    """Run ``tests`` in this process with ``mutant``'s version of its module; then put the original back."""
    import importlib

    import pytest

    module = importlib.import_module(mutant.module.removesuffix(".py").replace("/", "."))
    original = dict(module.__dict__)
    try:
        exec(compile(mutant.tree, module.__file__, "exec"), module.__dict__)
        code = pytest.main(["-x", "-q", "-n", "0", "-p", "no:cacheprovider", "-p", "no:nbval", "-o", "addopts=",
                            "--no-header", "--no-summary", "-qq", *tests])
    finally:
        module.__dict__.clear()
        module.__dict__.update(original)
    return {0: "survived", 1: "killed"}.get(int(code), f"pytest exit {int(code)}")


def scratch_copy(tests_from: str | None) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="mutation-")) / "repo"
    everywhere = shutil.ignore_patterns(".git", "__pycache__", ".whl", ".gl")

    def ignore(folder, names):  # the data and run folders at the top, not oasis_gan/runs/ (the code)
        return set(everywhere(folder, names)) | ({"data", "runs"} & set(names) if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, workdir, ignore=ignore)
    if tests_from:
        shutil.rmtree(workdir / "tests")
        archive = subprocess.run(["git", "archive", tests_from, "tests"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive.stdout, check=True)
    return workdir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="targets whose module or function name contains this")
    parser.add_argument("--tests-from", metavar="REV", help="judge with the tests/ of this git revision")
    parser.add_argument("--tests", nargs="+", metavar="TEST",
                        help="judge every mutant with these tests (pytest ids) instead of each target's own")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a mutant's tests count as hung")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--isolated", action="store_true",
                        help="each mutant in a fresh process in a scratch copy, with --timeout (slow)")
    args = parser.parse_args(argv)
    selected = [(module, [f for f in functions if not args.only or args.only in module or args.only in f], tests)
                for module, functions, tests in TARGETS]
    mutants = [(mutant, args.tests or tests) for module, functions, tests in selected if functions
               for mutant in mutants_of(module, functions)]
    if args.list:
        for mutant, _ in mutants:
            print(f"{mutant.module}:{mutant.line} {mutant.function}: {mutant.change}")
        print(f"{len(mutants)} mutants")
        return 0
    started, results = time.perf_counter(), []
    workdir = scratch_copy(args.tests_from)
    if not args.isolated:  # import the scratch copy's modules into this process
        os.chdir(workdir)
        sys.path[:0] = [str(workdir), str(workdir / "tests")]
    try:
        every_test = sorted({test for _, tests in mutants for test in tests})
        if not args.isolated:
            import pytest

            baseline = "survived" if pytest.main(["-q", "-n", "0", "-p", "no:cacheprovider", "-p", "no:nbval", "-o",
                                                  "addopts=", "-qq", "--no-summary", *every_test]) == 0 else "failed"
        else:
            baseline = run_tests(workdir, every_test, args.timeout * 3)
        if baseline != "survived":
            raise SystemExit(f"the tests fail before any mutation ({baseline}): fix them first")
        for number, (mutant, tests) in enumerate(mutants, 1):
            if not args.isolated:
                outcome = run_in_process(mutant, tests)
            else:
                original = (workdir / mutant.module).read_text()
                (workdir / mutant.module).write_text(ast.unparse(mutant.tree) + "\n")
                try:
                    outcome = run_tests(workdir, tests, args.timeout)
                finally:
                    (workdir / mutant.module).write_text(original)
            results.append((mutant, outcome))
            print(f"[{number}/{len(mutants)}] {mutant.module}:{mutant.line} {mutant.function}: {mutant.change}: "
                  f"{outcome}", flush=True)
    finally:
        os.chdir(ROOT)
        shutil.rmtree(workdir.parent, ignore_errors=True)
    print(f"\n| function | mutants | killed | kill rate | survivors |\n|---|---|---|---|---|")
    for module, functions, _ in selected:
        for function in functions:
            mine = [(m, outcome) for m, outcome in results if m.module == module and m.function == function]
            killed = sum(outcome == "killed" for _, outcome in mine)
            survivors = "; ".join(f"{m.line}: {m.change}" for m, outcome in mine if outcome != "killed")
            print(f"| {module.removesuffix('.py')}.{function} | {len(mine)} | {killed} | "
                  f"{100 * killed / max(len(mine), 1):.0f} % | {survivors} |")
    killed = sum(outcome == "killed" for _, outcome in results)
    print(f"\n{killed} of {len(results)} mutants killed ({100 * killed / max(len(results), 1):.0f} %) "
          f"in {time.perf_counter() - started:.0f} s; tests from {args.tests_from or 'the working tree'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
