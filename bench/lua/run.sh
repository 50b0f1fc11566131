#!/bin/sh
# The Lua benchmarks side by side (make bench-lua).  Numbers, never a test.
#   BENCH_N=... BENCH_ROUNDS=...   iterations per case and round, rounds
#   BENCH_CPU=1                    the CPU the micro-benchmarks are pinned to
#   WRK_SECONDS=3 ROUNDS=5         wrk: seconds per run, rounds
set -e
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
export BUTTRESS_LIB="${BUTTRESS_LIB:-$PWD/$BUILD/libbuttress.so}"
P="$PWD/lua/?.lua;$PWD/bench/lua/?.lua;;"

# Pinned to one CPU when there are two or more: no migrations mid-run.
PIN=""
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  PIN="taskset -c ${BENCH_CPU:-1}"
fi

echo "## micro (ns per iteration: median and best of ${BENCH_ROUNDS:-7} interleaved rounds)"
echo
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)${PIN:+; pinned: $PIN}"
echo
echo "| case | interpreter (path) | median ns/op | best |"
echo "|---|---|---:|---:|"
LUA_PATH_5_4="$P" LUA_CPATH_5_4="$PWD/$BUILD/lua/?.so;;" $PIN lua5.4 bench/lua/bench.lua
LUA_PATH="$P" $PIN luajit bench/lua/bench.lua
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
if command -v wrk >/dev/null 2>&1; then
  echo "## nginx + wrk"
  echo
  python3 bench/lua/wrk.py "${WRK_SECONDS:-3}"
else
  echo "(wrk not found: nginx throughput skipped)"
fi
