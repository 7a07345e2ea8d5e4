#!/usr/bin/env bash
# Builds .whl/ in the repo root: wheels of what lyaptune needs on the GPU machine (Python 3.12, x86-64,
# no package registry), under 64 MiB with the data (Ray's Java jars, dashboard front end, RLlib, Serve and
# LLM folders are stripped). This is ../shared/tools/device-wheels.sh with its list checked against
# pyproject.toml (`pip install --dry-run --report` of lyaptune in a venv holding only torch, torchvision,
# timm, pandas and pyarrow): it lacked pytorch-optimizer, which the GPU image does not have either.
#
#   bash benchmarks/gpu/wheels.sh          # what the GPU image lacks (ray, optuna, pydantic, pytorch-optimizer, ...)
#   bash benchmarks/gpu/wheels.sh --all    # also what a venv of only torch, torchvision, timm, pandas and
#                                          # pyarrow lacks (scipy, scikit-learn, matplotlib, requests, ...):
#                                          # the install rehearsal; too large to travel with the data
#   PYVER=3.11 bash benchmarks/gpu/wheels.sh --all   # the same list for another Python (a local rehearsal)
# On the GPU machine, benchmarks/gpu_suite.sh installs from .whl/ with the line below, leaving out every
# wheel whose distribution is already installed there (benchmarks/gpu/install.py):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site <wheels> \
#     && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
RAY=${RAY_VERSION:-2.60.0}
OPTUNA=${OPTUNA_VERSION:-5.0.0}
PYVER=${PYVER:-3.12}
ALL=0
[ "${1:-}" = "--all" ] && ALL=1
root=$(git rev-parse --show-toplevel)
cd "$root"
mkdir -p .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# what the GPU image lacks (its package list: /work/.library/device/KINDS.md)
lacks=("ray==$RAY" "optuna==$OPTUNA" jsonschema referencing rpds-py jsonschema-specifications tensorboardX
       pydantic annotated-types typing-inspection alembic mako colorlog sqlalchemy greenlet pyyaml
       "pytorch-optimizer>=3.0")
# what the image has but a venv of only torch, torchvision, timm, pandas and pyarrow does not
extra=(scipy scikit-learn joblib threadpoolctl matplotlib contourpy cycler fonttools kiwisolver pyparsing
       narwhals msgpack protobuf cloudpickle attrs requests certifi charset-normalizer urllib3 idna jinja2 markupsafe)
pkgs=("${lacks[@]}")
[ "$ALL" = 1 ] && pkgs+=("${extra[@]}")
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
         "${plat[@]}" -d "$tmp" "$@"; }
dl "${pkgs[@]}"
# pydantic pins pydantic-core exactly: fetch the matching one
pc=$(unzip -p "$tmp"/pydantic-[0-9]*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([^ ;]*\).*/\1/p')
dl "pydantic-core==$pc"
python3 - "$tmp" <<'PY'
import glob, os, sys, zipfile
src = glob.glob(os.path.join(sys.argv[1], "ray-*.whl"))[0]
dst = src + ".slim"
# not used by Ray Tune with the dashboard off (lyaptune's ray.init(include_dashboard=False)); rllib is
# imported by tune only inside a try (registry._has_rllib_trainable)
drop = ("ray/jars/", "ray/dashboard/client/", "ray/rllib/", "ray/serve/", "ray/llm/")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        if info.filename.startswith(drop):
            continue
        data = zin.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):
            data = "".join(l + "\n" for l in data.decode().splitlines() if not l.startswith(drop)).encode()
        zout.writestr(info, data)
os.replace(dst, src)
PY
rm -f .whl/*.whl
cp "$tmp"/*.whl .whl/
du -sh .whl
