#!/usr/bin/env bash
# The C side of the C API's tests (run by .ci/run after `cargo test`): builds liboxccl, compiles
# the example and the NCCL-pattern test with cc/mpicc against oxccl.h (flags from oxccl.pc, and
# once statically against liboxccl.a), and runs them under mpirun -np 3 and -np 4 and with
# OXCCL_* launcher variables. Usage: capi/tests/c/run.sh [debug|release] (default debug, the
# profile `cargo test` already built).
set -euo pipefail
cd "$(dirname "$0")/../../.."
profile=${1:-debug}
cargo build -p oxccl-capi $([ "$profile" = release ] && echo --release)
lib=$PWD/target/$profile
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# The header alone, as strict C99 and as C++11 (cbindgen's cpp_compat).
printf '#include "oxccl.h"\nint main(void) { oxcclConfig_t c = OXCCL_CONFIG_INITIALIZER; return c.blocking - 1; }\n' > "$out/header.c"
cc -std=c99 -Wall -Wextra -pedantic -Werror -fsyntax-only -I capi/include "$out/header.c"
c++ -std=c++11 -Wall -Wextra -pedantic -Werror -fsyntax-only -I capi/include -x c++ "$out/header.c"

# Every function the header declares is exported by liboxccl.so, and nothing else is.
declared=$(grep -oE '\boxccl[A-Za-z]+\(' capi/include/oxccl.h | tr -d '(' | sort -u)
exported=$(nm -D --defined-only "$lib/liboxccl.so" | awk '{print $3}' | sort -u)
if [ "$declared" != "$exported" ]; then
  diff <(echo "$declared") <(echo "$exported") || true
  echo "oxccl.h and liboxccl.so disagree (left: declared, right: exported)" >&2
  exit 1
fi

pc() { PKG_CONFIG_PATH=$PWD/capi pkg-config --define-variable=libdir="$lib" "$@" oxccl; }
cc -std=c11 -Wall -Wextra -Werror -o "$out/allreduce" capi/examples/allreduce.c $(pc --cflags --libs)
cc -std=c11 -Wall -Wextra -Werror -o "$out/allreduce_static" capi/examples/allreduce.c \
  $(pc --cflags) "$lib/liboxccl.a" $(pc --libs-only-l --static | sed 's/-loxccl//')
mpicc -std=c11 -Wall -Wextra -Werror -o "$out/nccl_pattern" capi/tests/c/nccl_pattern.c $(pc --cflags --libs)

mpi=(mpirun --allow-run-as-root --oversubscribe)
export OXCCL_TIMEOUT=120
timeout 300 "${mpi[@]}" -np 3 "$out/nccl_pattern"
timeout 300 "${mpi[@]}" -np 4 "$out/nccl_pattern"
timeout 300 "${mpi[@]}" -np 3 -x OXCCL_TRANSPORT=tcp "$out/nccl_pattern" 16
timeout 120 "${mpi[@]}" -np 3 "$out/allreduce"

# By hand, with oxccl's own launcher variables (the static build this time).
port=$((20000 + RANDOM % 20000))
pids=()
for r in 0 1 2; do
  OXCCL_RANK=$r OXCCL_SIZE=3 OXCCL_STORE_ADDR=127.0.0.1:$port OXCCL_SECRET=capi-$port \
    timeout 120 "$out/allreduce_static" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
echo "capi C tests: OK"
