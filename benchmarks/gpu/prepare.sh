#!/usr/bin/env bash
# Prepares what the GPU suite carries to a machine without a registry: .whl/ (benchmarks/gpu/wheels.sh)
# and data/mnist.tar.xz (MNIST's four raw files, from ../shared/data or $1), both ignored by git, and
# prints what will travel against the device tool's 64 MiB limit.
#
#   bash benchmarks/gpu/prepare.sh [MNIST_PARENT]
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
src=${1:-$root/../shared/data}
[ -d "$src/MNIST/raw" ] || { echo "prepare.sh: no MNIST/raw under $src" >&2; exit 1; }
bash benchmarks/gpu/wheels.sh
mkdir -p data
tar -C "$src" -cf - MNIST/raw/train-images-idx3-ubyte MNIST/raw/train-labels-idx1-ubyte \
  MNIST/raw/t10k-images-idx3-ubyte MNIST/raw/t10k-labels-idx1-ubyte | xz -9 -T2 > data/mnist.tar.xz
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
whl=$(du -cb .whl/*.whl | tail -1 | cut -f1)
dat=$(du -cb data/mnist.tar.xz | tail -1 | cut -f1)
total=$((tree + whl + dat))
awk -v t="$tree" -v w="$whl" -v d="$dat" 'BEGIN { printf "travels: working tree %.1f MB + .whl %.1f MB + data/mnist.tar.xz %.1f MB = %.1f MiB of 64\n", t/1e6, w/1e6, d/1e6, (t+w+d)/1048576 }'
[ "$total" -lt $((64 * 1048576)) ] || { echo "prepare.sh: over 64 MiB" >&2; exit 1; }
echo "carry: [\".whl\", \"data\"]  (data/ holds only mnist.tar.xz: do not run the suite here with data/MNIST unpacked)"
