#!/usr/bin/env bash
# The bugs that issue 27's review planted, one at a time, each in a copy of the repository's tracked files,
# and the tests that must now catch it: a line per bug, naming the tests that failed (none failing = not caught).
#     bash tools/planted_bugs.sh        # about 2 minutes on 2 CPU cores
# The notebook's planted bugs (a generator trained towards "fake", realism and recall upside down) are caught
# by `pytest --nbval driver.ipynb` (cells 9 and 13); tools/mutation_check.py tries many more changes.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
COPY="$(mktemp -d)"
trap 'rm -rf "$COPY"' EXIT
export TF_CPP_MIN_LOG_LEVEL=3
plant() {  # name, file, python replacement (old -> new), tests
  name=$1; file=$2; old=$3; new=$4; shift 4
  rm -rf "$COPY/repo" && mkdir "$COPY/repo" && (cd "$ROOT" && git ls-files | tar cf - -T - | tar xf - -C "$COPY/repo")
  cd "$COPY/repo"
  python - "$file" "$old" "$new" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
assert text.count(old) == 1, (path, old)
open(path, "w").write(text.replace(old, new))
PY
  output=$(python -m pytest -q -n 0 -p no:cacheprovider -p no:nbval -o addopts="" "$@" 2>&1)
  result=$(grep -E "^(FAILED|[0-9]+ (passed|failed))" <<<"$output" | sed -E 's/ - .*//' | tr '\n' ';')
  if [ -z "$result" ]; then  # pytest did not run the tests (another python, a missing package): say so
    result="pytest did not run ($(command -v python)): $(tail -n 3 <<<"$output" | tr '\n' ' ')"
  fi
  echo "$name => $result"
}
plant "EMA weights swapped" oasis_gan/engines/objectives.py "return current + (average - current) * beta" "return average + (current - average) * beta" tests/test_formulas.py tests/test_regularisers.py
plant "SHA-256 check off" oasis_gan/runs/checkpoints.py "if _sha256(path) != expected[\"sha256\"]:" "if False:" tests/test_faults.py -k "bytes_changed or verify"
plant "SHA-256 check off (formulas)" oasis_gan/runs/checkpoints.py "if _sha256(path) != expected[\"sha256\"]:" "if False:" tests/test_formulas.py -k verify
plant "noise floor resampling removed" evaluate.py "resampled = matched[rng.integers(0, len(matched), n)] if len(matched) < n else matched" "resampled = matched" tests/test_formulas.py tests/test_measures.py
plant "realism over the yardstick's p90" evaluate.py "report[\"realism\"] = report[\"nn_ssim_median\"] / report[\"real_test_nn_ssim_median\"]" "report[\"realism\"] = report[\"nn_ssim_median\"] / report[\"real_test_nn_ssim_p90\"]" tests/test_formulas.py
plant "recall over the whole training set" evaluate.py "among_real = metrics.nearest_neighbour_scores(real_queries, real_subset)" "among_real = metrics.nearest_neighbour_scores(real_queries, train)" tests/test_formulas.py
