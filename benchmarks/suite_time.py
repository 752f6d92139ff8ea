"""How long the test suite takes, commit against commit, as CI runs it: one table.

    python benchmarks/suite_time.py 2671d3c HEAD          # two commits back to back (about 20 minutes)
    python benchmarks/suite_time.py HEAD --venv /tmp/ci-venv   # reuse a virtual environment's packages

For each commit, in the order given: a clean clone of this repository at that
commit in a temporary folder, then ``bash .ci/run`` there (a new virtual
environment from requirements.txt, then the README's test command), as CI does.
Around each run it reads the machine's busy CPU time from /proc/stat, so the
table shows the suite's work as well as its wall time.  Wall time moves by 15 %
or more between hours on a shared machine; the CPU seconds move less, and
commits compared in one call share the same hour.  Nothing else should run on
the machine meanwhile.  Linux only (/proc/stat).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def busy_cpu_seconds(stat: str = "/proc/stat") -> float:
    """CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq) since boot."""
    with open(stat) as handle:
        fields = handle.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def summary_line(output: str) -> str:
    """pytest's last line ("321 passed in 536.36s (0:08:56)"), or what went wrong."""
    found = re.findall(r"=+ (.*(?:passed|failed|error).*) =+", output)
    return found[-1] if found else "no pytest summary (see the log)"


def time_commit(commit: str, venv: str | None, logs: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="suite-time-") as folder:
        clone = Path(folder) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit], check=True)
        revision = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], check=True,
                                  capture_output=True, text=True).stdout.strip()
        environment = dict(os.environ, **({"CI_VENV": venv} if venv else {}))
        cpu, started = busy_cpu_seconds(), time.monotonic()
        result = subprocess.run(["bash", ".ci/run"], cwd=clone, env=environment, capture_output=True, text=True)
        wall, cpu = time.monotonic() - started, busy_cpu_seconds() - cpu
    log = logs / f"suite-time-{revision}.log"
    log.write_text(result.stdout + result.stderr)
    return {"commit": revision, "status": result.returncode, "summary": summary_line(result.stdout), "wall": wall,
            "cpu": cpu, "log": log}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commits", nargs="+", metavar="COMMIT", help="commits to time, in this order")
    parser.add_argument("--venv", metavar="DIR", help="the virtual environment .ci/run installs into (CI_VENV; "
                                                     "default: a new one per commit, downloading every package)")
    parser.add_argument("--logs", metavar="DIR", default=tempfile.gettempdir(),
                        help="where each run's output is kept (default: the temporary folder)")
    args = parser.parse_args(argv)
    if not Path("/proc/stat").is_file():
        parser.error("needs Linux's /proc/stat to read the machine's CPU time")
    # Bad input is named before the first ten-minute run, not after it.
    for commit in args.commits:
        if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                          capture_output=True).returncode != 0:
            parser.error(f"COMMIT: {commit!r} is not a commit of {ROOT}")
    logs = Path(args.logs)
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"--logs: cannot make the folder {logs}: {error.strerror}")
    rows = [time_commit(commit, args.venv, logs) for commit in args.commits]
    print(f"\n`bash .ci/run` on clean clones, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}:\n")
    print("| commit | pytest | wall (with the install) | busy CPU seconds | log |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['commit']} | {row['summary']} | {row['wall']:.0f} s | {row['cpu']:.0f} | {row['log']} |")
    return max(row["status"] for row in rows)


if __name__ == "__main__":
    sys.exit(main())
