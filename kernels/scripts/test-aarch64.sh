#!/usr/bin/env bash
# Runs the CPU tests for aarch64 (the NEON backend) under qemu user-mode emulation.
# Correctness only: emulated timings mean nothing. Needs the nightly toolchain with rust-src
# and the Debian packages qemu-user, gcc-aarch64-linux-gnu and libc6-dev-arm64-cross.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/aarch64-qemu"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo +nightly test -p oxccl-kernels -Z build-std --target aarch64-unknown-linux-gnu \
    --test cpu --test api --test props "$@"
