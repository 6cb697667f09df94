#!/usr/bin/env bash
# Assembles kernels/ptx/oxccl_kernels.ptx with ptxas for sm_70 and sm_90 and prints, per
# kernel, registers, stack and spill bytes. Uses $PTXAS, else `ptxas` on PATH, else unpacks
# ptxas from Debian's nvidia-cuda-toolkit .deb (non-free; about 84 MB downloaded, nothing
# installed) into ${OXCCL_PTXAS_DIR:-/tmp/oxccl-ptxas}. Not part of CI.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ptxas="${PTXAS:-$(command -v ptxas || true)}"
if [ -z "$ptxas" ]; then
    dir="${OXCCL_PTXAS_DIR:-/tmp/oxccl-ptxas}"
    if [ ! -x "$dir/x/usr/bin/ptxas" ]; then
        mkdir -p "$dir"
        if ! apt-cache show nvidia-cuda-toolkit >/dev/null 2>&1; then
            echo "nvidia-cuda-toolkit is not in the apt sources: add Debian's non-free component and run apt-get update" >&2
            exit 1
        fi
        (cd "$dir" && apt-get download nvidia-cuda-toolkit && dpkg -x nvidia-cuda-toolkit_*.deb x)
    fi
    ptxas="$dir/x/usr/bin/ptxas"
fi
"$ptxas" --version | tail -1
for arch in sm_70 sm_90; do
    log="$(mktemp)"
    "$ptxas" -arch="$arch" -v -o /dev/null "$here/ptx/oxccl_kernels.ptx" 2>"$log"
    echo "== $arch"
    awk '/Compiling entry function/ { gsub(/\x27/, "", $7); name = $7 }
         /stack frame/ { stack = $1; spill_st = $5; spill_ld = $9 }
         /Used [0-9]+ registers/ { printf "%-26s %3d registers, %s B stack, %s B spill stores, %s B spill loads\n", name, $5, stack, spill_st, spill_ld }' "$log" | sort
    rm -f "$log"
done
