#!/bin/sh
# Install the Debian packages that the build and every test suite need.
# Idempotent: prints nothing and changes nothing when all are present.
# Python packages are installed by the Python test target, not here.
set -eu

# luajit2 (OpenResty's branch), not plain luajit: plain luajit conflicts
# with libnginx-mod-http-lua.  libclang-rt-dev: libFuzzer and clang's
# sanitizer runtimes, which clang only recommends.  luarocks: tests/lua
# builds the rock (test_rockspec.lua); wrk: make bench-lua.
PACKAGES="gcc libc6-dev make pkg-config clang libclang-rt-dev valgrind
libcmocka-dev lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev luarocks
nginx libnginx-mod-http-lua wrk
python3 python3-dev python3-venv"

installed() {
    # Status is "install ok installed" (or "hold ok installed") when present.
    case "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" in
        *" installed") return 0 ;;
        *) return 1 ;;
    esac
}

missing=""
for pkg in $PACKAGES; do
    installed "$pkg" || missing="$missing $pkg"
done

# The Python targets need `python3 -m pip`; it may come from somewhere other
# than Debian (pyenv, a venv), so ask Python rather than dpkg.
if ! python3 -m pip --version >/dev/null 2>&1 && ! installed python3-pip; then
    missing="$missing python3-pip"
fi

[ -z "$missing" ] && exit 0

missing=${missing# }
cmd="apt-get install -y $missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing Debian packages: $missing" >&2
    echo "deps.sh: as root, run: apt-get update && DEBIAN_FRONTEND=noninteractive $cmd" >&2
    exit 1
fi

echo "deps.sh: installing: $missing"
export DEBIAN_FRONTEND=noninteractive

# Keep package scripts from starting services (nginx would start a daemon on
# port 80); the nginx tests run their own nginx.  Only when the machine has
# no policy of its own.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
fi

apt-get update -q
# shellcheck disable=SC2086  # word splitting of the package list is wanted
apt-get install -y -q $missing

echo "deps.sh: installed: $missing"
