"""The benchmarks' bookkeeping: which run folder and table compare_archs.py uses and when it reuses one; what
suite_time.py reads."""

import argparse
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare_archs  # noqa: E402
import suite_time  # noqa: E402

from oasis_gan.architectures import table  # noqa: E402
from oasis_gan.demo_cohort import COHORT_VERSION  # noqa: E402


def arguments(**changes) -> argparse.Namespace:
    values = dict(data=None, demo_root="data/demo", demo_subjects=compare_archs.DEMO_SUBJECTS, demo_seed=0, seed=0,
                  held_out="test", precision="float32", parallel=False, budgets=["images", "minutes"], steps=700,
                  minutes=5.0, size=64, batch_size=16)
    return argparse.Namespace(**{**values, **changes})


def test_names_carry_the_cohort_version_and_precision_and_a_lone_budget():
    assert compare_archs.table_tag(arguments()) == f"-cohort{COHORT_VERSION}-float32"
    assert compare_archs.table_tag(arguments(budgets=["minutes"], seed=1, demo_subjects=64)) == \
        f"-seed1-cohort{COHORT_VERSION}-subjects64-float32-5min"
    assert compare_archs.table_tag(arguments(demo_seed=3)) == f"-cohort{COHORT_VERSION}-cohortseed3-float32"
    # real data: no cohort in the name
    assert compare_archs.table_tag(arguments(data="/oasis", budgets=["images"], parallel=True)) == \
        "-float32-parallel-700steps"


def test_a_run_made_with_other_architecture_defaults_is_refused_by_name_not_reused(tmp_path):
    run = tmp_path / "dcgan-ada-64px-5min-cohort2-float32-batch16"
    run.mkdir()
    defaults = {**table.BY_NAME["dcgan-ada"].defaults, "flip_axis": "rows"}
    (run / "config.json").write_text(json.dumps({**defaults, "arch": "dcgan-ada", "d_learning_rate": 1e-4}))
    now = f"{defaults['d_learning_rate']:g}"
    with pytest.raises(SystemExit, match=rf"{run.name}: made with d_learning_rate 0.0001 \(now {now}\); move"):
        compare_archs.train_command("dcgan-ada", run, ["--steps", "10"], arguments())
    assert (run / "config.json").is_file()  # nothing removed
    # with today's defaults an unfinished run is resumed
    (run / "config.json").write_text(json.dumps({**defaults, "arch": "dcgan-ada"}))
    assert compare_archs.train_command("dcgan-ada", run, ["--steps", "10"], arguments()) == \
        ["train.py", "--out", str(run), "--resume", "--quiet"]
    # a run from before flips mirrored the rows (its config.json has no flip_axis) flipped front and back
    before = {name: value for name, value in defaults.items() if name != "flip_axis"}
    (run / "config.json").write_text(json.dumps({**before, "arch": "dcgan-ada"}))
    with pytest.raises(SystemExit, match=r"made with flip_axis columns \(now rows\); move"):
        compare_archs.train_command("dcgan-ada", run, ["--steps", "10"], arguments())
    # an ablation variant that sets the rate itself is its own choice: resumed, not refused
    (run / "config.json").write_text(json.dumps({**defaults, "arch": "dcgan-ada", "d_learning_rate": 1e-4}))
    assert compare_archs.train_command("dcgan-ada", run, ["--steps", "10"], arguments(), ("--d-lr", "1e-4")) == \
        ["train.py", "--out", str(run), "--resume", "--quiet"]


def test_suite_time_reads_busy_cpu_time_and_pytests_last_line(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 20 30 5000 70 4 6 0 0 0\ncpu0 50 10 15 2500 35 2 3 0 0 0\n")
    monkeypatch.setattr(suite_time.os, "sysconf", lambda name: 100)  # clock ticks per second
    assert suite_time.busy_cpu_seconds(str(stat)) == pytest.approx((100 + 20 + 30 + 4 + 6) / 100)  # not idle, iowait
    output = "....\n===== slowest 12 durations =====\n1.0s call x\n====== 1 failed, 320 passed in 536.36s (0:08:56) ======\n"
    assert suite_time.summary_line(output) == "1 failed, 320 passed in 536.36s (0:08:56)"
    assert suite_time.summary_line("Traceback: pip failed") == "no pytest summary (see the log)"


def test_suite_time_names_a_bad_commit_or_logs_folder_before_any_run(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr(suite_time, "time_commit", lambda *args: started.append(args))
    with pytest.raises(SystemExit) as stopped:
        suite_time.main(["HEAD", "no-such-commit-0000", "--logs", str(tmp_path)])
    assert stopped.value.code == 2 and "'no-such-commit-0000' is not a commit" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit):
        suite_time.main(["HEAD", "--logs", str(tmp_path / "a-file" / "logs")])
    assert "--logs: cannot make the folder" in capsys.readouterr().err
    assert started == []  # nothing ran

    def timed(commit, venv, logs):
        started.append(logs)
        return {"commit": commit, "status": 0, "summary": "1 passed in 1.00s", "wall": 1.0, "cpu": 2.0,
                "log": logs / "x.log"}

    monkeypatch.setattr(suite_time, "time_commit", timed)
    assert suite_time.main(["HEAD", "--logs", str(tmp_path / "new" / "logs")]) == 0
    assert started == [tmp_path / "new" / "logs"] and started[0].is_dir()  # made, with its parents
    assert "| HEAD | 1 passed in 1.00s | 1 s | 2 |" in capsys.readouterr().out
