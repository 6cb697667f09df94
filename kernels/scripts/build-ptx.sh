#!/usr/bin/env bash
# Regenerates kernels/ptx/oxccl_kernels.ptx from the Rust device crate kernels/device/.
# Needs the nightly toolchain with rust-src: `rustup toolchain install nightly` and
# `rustup +nightly component add rust-src`. Usage: kernels/scripts/build-ptx.sh [OUT.ptx]
# (default: kernels/ptx/oxccl_kernels.ptx). Also records the nightly version beside it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/ptx/oxccl_kernels.ptx}"
target_dir="${OXCCL_PTX_TARGET_DIR:-$here/../target/ptx-device}"
mkdir -p "$(dirname "$out")"
cd "$here/device"
CARGO_TARGET_DIR="$target_dir" cargo +nightly rustc --quiet --release \
    --target nvptx64-nvidia-cuda -Z build-std=core -- \
    -C target-cpu=sm_70 -C llvm-args=-unroll-threshold=1000 --emit="asm=$out"
if grep -q '^\.extern' "$out"; then
    echo "error: $out references external functions (a panic path was not optimised away)" >&2
    grep '^\.extern' "$out" >&2
    exit 1
fi
if [ -z "${1:-}" ]; then
    rustc +nightly --version > "$here/ptx/TOOLCHAIN"
fi
echo "wrote $out ($(grep -c '^\.visible \.entry' "$out") kernels)"
