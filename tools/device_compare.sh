#!/usr/bin/env bash
# benchmarks/compare_archs.py on a GPU machine that has JAX but no TensorFlow, in one call.
#
#   bash tools/device_compare.sh --archs dcgan-ada dcgan-plus stylegan --size 256 --budgets minutes \
#       --minutes 5 --batch-size 32 --precision mixed_bfloat16 --parallel
#
# Arguments go to compare_archs.py as words (none may hold a space).  Comparisons with different settings
# (another seed, cohort or budget) share the GPU when separated by "::"; they run at once, each logging to
# runs/device-logs/compare-<i>.log:
#
#   bash tools/device_compare.sh --archs stylegan --size 256 --minutes 6.5 ... :: --archs dcgan-ada --seed 1 \
#       --demo-subjects 64 --demo-root data/demo64 ...
#
# (give each cohort size its own --demo-root).  Before they run:
#   * wheels in .whl/ (keras, namex, optree, nilearn, nibabel for that machine's Python) are installed into
#     /tmp/site, for a machine that cannot reach a package registry; fetch them where pip works with
#     `pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl keras namex optree nilearn nibabel`
#   * KERAS_BACKEND=jax.
# COMPARE_BUDGET_S (default 540) bounds compare_archs.py's wall time (SIGINT: the runs save a checkpoint and stop).
# Whatever happened, each run's small files (config, history, logs, final sample grid, evaluation report and
# figures; no checkpoints) go into $OUT/<run>.tgz, and the logs and the tables this call wrote into
# $OUT/logs-and-tables.tgz: one file each, since a device call sends back at most 8 files (so at most 7 runs a
# call; OUT defaults to runs/device-out).
set -u
OUT=${OUT:-runs/device-out}
LOGS=runs/device-logs
mkdir -p "$OUT" "$LOGS"
rm -f "$LOGS"/compare*.log  # a warm machine keeps an earlier call's
touch "$LOGS/.started"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv 2>&1 | tee "$LOGS/compare.log"
python3 -c "import jax, keras, numpy, numba; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__, \
'numpy', numpy.__version__, 'numba', numba.__version__)" 2>&1 | tee -a "$LOGS/compare.log"
compare() {  # one compare_archs.py run under the budget: compare <log file> <arguments...>
    local log=$1
    shift
    local begun=$(date +%s)
    timeout --signal=INT --kill-after=30 "${COMPARE_BUDGET_S:-540}" python3 benchmarks/compare_archs.py "$@" 2>&1 \
        | grep --line-buffered -v -E "^(I0000|W0000|WARNING: All log messages)" >> "$log"
    echo "compare_archs.py $*: $(( $(date +%s) - begun )) s wall" >> "$log"
}
groups=()
current=()
for argument in "$@"; do
    if [ "$argument" = "::" ]; then
        groups+=("${current[*]}")
        current=()
    else
        current+=("$argument")
    fi
done
groups+=("${current[*]}")
if [ ${#groups[@]} -gt 1 ]; then
    # Shared: each process takes GPU memory as it needs it (not 75 % each), and the cores are shared out.
    share=$(( $(nproc) / ${#groups[@]} ))
    export XLA_PYTHON_CLIENT_PREALLOCATE=false NUMBA_NUM_THREADS=$(( share > 0 ? share : 1 ))
fi
index=0
for group in "${groups[@]}"; do
    index=$((index + 1))
    # shellcheck disable=SC2086  # each group's words are compare_archs.py's arguments
    compare "$LOGS/compare-$index.log" $group &
done
wait
tail -n 60 "$LOGS"/compare-*.log
for run in runs/compare/*/; do  # one archive per run: each file that comes back from a device is size-limited
    name=$(basename "$run")
    tar czf "$OUT/$name.tgz" --exclude=checkpoints --exclude=samples --exclude=real_samples.png "$run" \
        runs/compare/"$name".*.log 2>/dev/null
done
tar czf "$OUT/logs-and-tables.tgz" "$LOGS"/compare*.log $(find Resources -name 'compare-*.md' -newer "$LOGS/.started")
ls -la "$OUT"
