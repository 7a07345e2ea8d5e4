#!/usr/bin/env bash
# The GPU suite: every GPU figure of lyaptune in one command, one JSON per part plus summary.md.
#
#   bash benchmarks/gpu_suite.sh [--toy] [--out DIR]
#
#   --toy     every part at toy size, on whatever device there is (a CPU in CI: about 3 minutes)
#   --out     where the JSON files and summary.md go (default: runs/gpu_suite)
#
# Parts (benchmarks/gpu/, README.md there), each under its own time budget (seconds; full / toy):
#   a_optimizer_step 40 / 120   b_study_throughput 180 / 300   c_khat 25 / 120   d_paper003 140 / 300
#   e_device_checks 45 / 120    -- 430 s in all on a GPU, inside the 8 minutes with install and start-up;
#   the toy budgets are caps for a loaded CI machine (the toy suite takes about 75 s on 2 idle cores).
# A part that runs past its budget is cut (SIGTERM, then SIGKILL 10 s later) and its JSON says so;
# the next part starts on time.
#
# Install: if lyaptune's dependencies are not importable and .whl/ is there (benchmarks/gpu/wheels.sh),
# the wheels whose distributions are missing are installed into /tmp/site or $LYAPTUNE_SITE (the line of
# ../shared/tools/device-wheels.sh). Data: mini-MNIST's files under $LYAPTUNE_SUITE_DATA, else
# data/MNIST/raw (ignored), else ../shared/data, else data/mnist.tar.xz unpacked to /tmp.
# benchmarks/gpu/prepare.sh builds .whl/ and data/mnist.tar.xz where pip works.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
SITE=${LYAPTUNE_SITE:-/tmp/site}
TOY=0
OUT=runs/gpu_suite
while [ $# -gt 0 ]; do
  case "$1" in
    --toy) TOY=1 ;;
    --out) OUT=${2:?--out needs a folder}; shift ;;
    --out=*) OUT=${1#--out=} ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument '$1'; valid: --toy, --out DIR" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
t_start=$(date +%s)
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# -- install: what the machine lacks, from .whl/
if ! "$PY" -c 'import ray, optuna, pydantic, pytorch_optimizer, yaml, scipy, sklearn, matplotlib, jinja2' 2>/dev/null; then
  if [ ! -d .whl ]; then
    echo "gpu_suite.sh: lyaptune's dependencies are not importable and there is no .whl/:" \
         "run 'bash benchmarks/gpu/wheels.sh' where pip works and carry .whl" >&2
    exit 1
  fi
  mapfile -t need < <("$PY" -m benchmarks.gpu.install .whl)
  echo "install: ${#need[@]} wheels into $SITE"
  if [ "${#need[@]}" -gt 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${need[@]}" || exit 1
  fi
  export PYTHONPATH="$SITE:$PYTHONPATH"
  "$PY" -c 'import lyaptune.cli, ray, optuna' || { echo "gpu_suite.sh: install incomplete" >&2; exit 1; }
fi
echo "install: $(( $(date +%s) - t_start )) s"

# -- data: $LYAPTUNE_SUITE_DATA, data/MNIST/raw, ../shared/data, else data/mnist.tar.xz (prepare.sh)
# unpacked outside the tree (so that data/ stays small enough to travel)
if [ -z "${LYAPTUNE_SUITE_DATA:-}" ]; then
  for d in "$ROOT/data" "$ROOT/../shared/data"; do
    if [ -d "$d/MNIST/raw" ]; then LYAPTUNE_SUITE_DATA=$(cd "$d" && pwd); break; fi
  done
fi
if [ -z "${LYAPTUNE_SUITE_DATA:-}" ] && [ -f data/mnist.tar.xz ]; then
  LYAPTUNE_SUITE_DATA=${TMPDIR:-/tmp}/lyaptune_suite_data
  mkdir -p "$LYAPTUNE_SUITE_DATA" && tar -C "$LYAPTUNE_SUITE_DATA" -xJf data/mnist.tar.xz || exit 1
fi
export LYAPTUNE_SUITE_DATA=${LYAPTUNE_SUITE_DATA:-$ROOT/data}
echo "data: $LYAPTUNE_SUITE_DATA"

# -- parts
if [ "$TOY" = 1 ]; then
  # toy budgets are caps for a loaded CI machine (about 75 s in all on 2 idle cores), not targets
  parts=("a_optimizer_step 120" "b_study_throughput 300" "c_khat 120" "d_paper003 300" "e_device_checks 120")
  toy=(--toy)
else
  parts=("a_optimizer_step 40" "b_study_throughput 180" "c_khat 25" "d_paper003 140" "e_device_checks 45")
  toy=()
fi
for entry in "${parts[@]}"; do
  read -r part budget <<<"$entry"
  echo "== $part (budget ${budget} s)"
  timeout -k 10 $(( budget + 15 )) "$PY" -m "benchmarks.gpu.$part" --out "$OUT" --budget "$budget" "${toy[@]}" \
    2>&1 | tee "$OUT/$part.log"
  rc=${PIPESTATUS[0]}
  "$PY" -m benchmarks.gpu.common --out "$OUT" --part "$part" --rc "$rc" --budget "$budget"
done
"$PY" -m benchmarks.gpu.summary --out "$OUT" --wall "$(( $(date +%s) - t_start ))" >/dev/null
echo "suite: $(( $(date +%s) - t_start )) s; $OUT/summary.md"
cat "$OUT/summary.md"
