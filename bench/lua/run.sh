#!/bin/sh
# The Lua benchmarks side by side (make bench-lua).  Numbers, never a test.
#   BENCH_N=...   iterations per case;  ROUNDS=... wrk rounds
set -e
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
export BUTTRESS_LIB="${BUTTRESS_LIB:-$PWD/$BUILD/libbuttress.so}"
P="$PWD/lua/?.lua;$PWD/bench/lua/?.lua;;"

echo "## micro (best of 3 runs, ns per iteration)"
echo
echo "| case | interpreter (path) | ns/op |"
echo "|---|---|---:|"
LUA_PATH_5_4="$P" LUA_CPATH_5_4="$PWD/$BUILD/lua/?.so;;" lua5.4 bench/lua/bench.lua
LUA_PATH="$P" luajit bench/lua/bench.lua
echo
if command -v wrk >/dev/null 2>&1; then
  echo "## nginx + wrk"
  echo
  python3 bench/lua/wrk.py "${WRK_SECONDS:-3}"
else
  echo "(wrk not found: nginx throughput skipped)"
fi
