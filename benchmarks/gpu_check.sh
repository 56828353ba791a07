#!/usr/bin/env bash
# Every GPU measurement the benchmarks promise, in one call and one table (issue 13):
#   train   training images/s and peak GPU memory per variant (full, baseline, ncls1, said,
#           said_moae, said_hdw), ViT-B/16 256x128, batch 64 (P=8, K=8), bf16, random init,
#           and the full / baseline step-time ratio      (benchmarks/train_throughput.py)
#   compile full Uni-AT's step with train.compile against eager, and the compilation time
#   loader  images/s of one DataLoader worker, atreid's and the authors' way  (benchmarks/loader.py)
#   moae    the MoAE layer against the naive per-expert loop  (benchmarks/moae.py)
#   eval    the AT-USTC evaluation against the per-query oracle  (benchmarks/eval_speed.py)
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine; at most about 8.5 min
#   bash benchmarks/gpu_check.sh --smoke         # tiny sizes on CPU (the test runs this)
#   bash benchmarks/gpu_check.sh --budget 300    # the whole script's budget in seconds (default 480)
#   bash benchmarks/gpu_check.sh --fetch-wheels  # here, before the device call: jsonschema & co. into .whl/
#
# The table goes to stdout and to $OUT/gpu_check.md when OUT is set (else
# benchmarks/gpu_check_last.md), with the parts' output in gpu_check.log and the rows in
# gpu_check.json beside it. Python: $ATREID_PYTHON, else .venv/bin/python, else a python3
# that already has torch and timm (the GPU machine's, which cannot download anything;
# jsonschema and its needs are installed from .whl/*.whl if carried), else `make install`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
START=$SECONDS

SMOKE=0
FETCH=0
BUDGET=""
usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --smoke) SMOKE=1 ;;
        --fetch-wheels) FETCH=1 ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
        --budget=*) BUDGET=${1#--budget=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# The GPU machine's python3 has torch, timm, pandas, ... but not jsonschema (atreid's params
# check) and cannot download: fetch the wheels here, then carry .whl (ignored by git).
if ((FETCH)); then
    FETCH_PY=.venv/bin/python
    [[ -x $FETCH_PY ]] || FETCH_PY=python3
    read -r -a PINS < <("$FETCH_PY" -c 'import importlib.metadata as m
print(" ".join(f"{n}=={m.version(n)}" for n in ("jsonschema", "jsonschema-specifications", "referencing", "rpds-py")))')
    "$FETCH_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${PINS[@]}"
    echo "gpu_check: wheels in .whl/ (${PINS[*]}); on the device: carry [\".whl\"], command \"bash benchmarks/gpu_check.sh\""
    exit 0
fi

# Seconds: the whole script's budget (the GPU default keeps the call under 8 minutes,
# the hard limit below included); each part's own limit is in gpu_check.py (SIZES).
if ((SMOKE)); then
    BUDGET=${BUDGET:-240}
    SMOKE_FLAG=(--smoke)
else
    BUDGET=${BUDGET:-480}
    SMOKE_FLAG=()
fi
if ! [[ $BUDGET =~ ^[0-9]+$ ]]; then
    echo "gpu_check: --budget takes whole seconds, not '$BUDGET'" >&2
    exit 2
fi

if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    DEST=$OUT/gpu_check
else
    DEST=$REPO/benchmarks/gpu_check_last
fi
MD=$DEST.md
LOG=$DEST.log
: >"$LOG"

# ---- the Python -----------------------------------------------------------------------
has_deps() { "$1" -c 'import torch, timm, pandas, yaml, PIL, numpy' 2>/dev/null; }
if [[ -n "${ATREID_PYTHON:-}" ]]; then
    PY=$ATREID_PYTHON
elif [[ -x .venv/bin/python ]] && has_deps .venv/bin/python; then
    PY=.venv/bin/python
elif command -v python3 >/dev/null && has_deps python3; then
    # The GPU machine: its python3 holds torch and timm, and nothing can be downloaded
    # there, so `make install` would fail. Run the repo from its source tree.
    PY=python3
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    if ! python3 -c 'import jsonschema' 2>/dev/null; then
        if compgen -G ".whl/*.whl" >/dev/null; then
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target /tmp/atreid-site .whl/*.whl >&2
            export PYTHONPATH="$PYTHONPATH:/tmp/atreid-site"
        fi
        if ! python3 -c 'import jsonschema' 2>/dev/null; then
            echo "gpu_check: python3 has torch but not jsonschema; carry its wheels in .whl/ (see benchmarks/README.md, GPU check)" >&2
            exit 2
        fi
    fi
else
    echo "gpu_check: no .venv/bin/python with torch; creating it with make install" >&2
    make install >&2
    PY=.venv/bin/python
fi
export ATREID_QUIET=1 PYTHONUNBUFFERED=1

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ---- the run: machine, then the parts, in one process under a hard limit ---------------
{
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi -L 2>&1 || true
        nvidia-smi --query-gpu=driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | paste -sd ' ' || true
    else
        echo "nvidia-smi: not found"
    fi
} >"$WORK/machine.txt"
RESERVE=5                             # for the table
PARTS_BUDGET=$((BUDGET - (SECONDS - START) - RESERVE))
((PARTS_BUDGET < 0)) && PARTS_BUDGET=0
HARD=$((PARTS_BUDGET + 30))           # the parts stop themselves in time; this catches a hung one
command=("$PY" benchmarks/gpu_check.py run --results "$WORK" --budget "$PARTS_BUDGET" "${SMOKE_FLAG[@]}")
if command -v timeout >/dev/null; then
    command=(timeout --kill-after=10 "$HARD" "${command[@]}")
fi
set +e
"${command[@]}" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
set -e
if ((rc == 3)); then   # refused: no CUDA and no --smoke (the line is printed above)
    exit 3
fi
for part in train compile loader moae eval; do
    if [[ ! -f $WORK/$part.status ]]; then
        if ((rc == 124 || rc == 137)); then
            echo "not finished: the run was killed at the hard limit (${HARD} s)" >"$WORK/$part.status"
        else
            echo "not finished: the run ended with exit ${rc}" >"$WORK/$part.status"
        fi
    fi
done

# ---- the table (written even when the run was cut short) -------------------------------
echo "budget: ${BUDGET} s for the whole script, ${PARTS_BUDGET} s of it for the parts; ${SECONDS} s spent before the table" >>"$WORK/machine.txt"
echo | tee -a "$LOG"
"$PY" benchmarks/gpu_check.py table --results "$WORK" --machine "$WORK/machine.txt" --out "$MD" \
    --json "$DEST.json" | tee -a "$LOG"
echo "gpu_check: ${SECONDS} s in all; table in $MD, output in $LOG" | tee -a "$LOG"
exit "$rc"
