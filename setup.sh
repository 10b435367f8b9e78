#!/usr/bin/env bash
# Sets stackaudit up on Debian 12 and runs it.
#
#   ./setup.sh demo    install what is missing, build, run `stackaudit demo`
#   ./setup.sh test    install what is missing, build with ASan+UBSan, run every test
#   ./setup.sh build   install what is missing, build build/stackaudit
#
# Installing needs root (apt-get); with everything present it installs nothing
# and says nothing about packages.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  build-essential cmake pkg-config
  libunwind-dev libdw-dev libelf-dev          # unwinding, symbols
  libspdlog-dev prometheus-cpp-dev libcivetweb-dev  # logging, metrics, HTTP
  nlohmann-json3-dev libcli11-dev             # JSON, command line
  libgtest-dev libgmock-dev                   # tests
  python3.11 util-linux                       # Python fixture; setpriv for permission tests
  libc6-dbg binutils xz-utils                 # debug-info tests: libc by build-id, stripped fixtures
  prometheus python3-yaml                      # promtool and the server; YAML for the dashboards tests
  elfutils gdb austin time                    # eu-stack, gdb, austin and GNU time (peak RSS), for the benchmarks
  clang libclang-rt-14-dev llvm               # libFuzzer, its runtime, llvm-symbolizer: fuzz/ smoke test
  debootstrap                                 # the Debian unstable rootfs: CPython 3.13-3.15, container tests
  gunicorn python3-flask                      # a forked-worker service: tests/test_workers.cpp, bench
  libcurl4-openssl-dev openssl                # the agent's latency probe (HTTP/HTTPS); throw-away TLS certificates in tests
  libtomlplusplus-dev                         # the gate's thresholds file (TOML)
  python3-aiohttp                             # examples/migration: the asyncio service
  python3-uvloop                              # an asyncio fixture on uvloop's loop, said unsupported
  chromium python3-pil                        # the agent's page in a real browser (headless), its screenshot checked
  openjdk-17-jdk-headless                     # a real JVM fixture: JIT code, its perf map, its waits (tests/test_jvm.cpp)
)

# Debian unstable's interpreters, in a rootfs of their own: the newer CPythons
# to test on, and the fixture for targets in a container. Made once with
# debootstrap from Debian's mirror (about a minute, 370 MB), kept outside the
# build folder, re-used after. STACKAUDIT_SID_ROOTFS moves it.
SID_ROOTFS="${STACKAUDIT_SID_ROOTFS:-/var/cache/stackaudit/sid-rootfs}"
SID_PYTHONS=(python3.13 python3.14 python3.15)

make_sid_rootfs() {
  local have=1
  for p in "${SID_PYTHONS[@]}"; do [ -x "$SID_ROOTFS/usr/bin/$p" ] || have=0; done
  [ "$have" -eq 1 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: no Debian unstable rootfs at $SID_ROOTFS; run as root to make it" >&2
    return 0
  fi
  echo "setup.sh: making the Debian unstable rootfs at $SID_ROOTFS (debootstrap, about a minute)"
  local tmp="$SID_ROOTFS.partial"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$SID_ROOTFS")"
  local include
  include=$(IFS=,; echo "${SID_PYTHONS[*]}")
  if ! debootstrap --variant=minbase --include="$include" sid "$tmp" http://deb.debian.org/debian \
      >"$SID_ROOTFS.log" 2>&1; then
    echo "setup.sh: debootstrap failed (see $SID_ROOTFS.log); the tests that need it will say so" >&2
    rm -rf "$tmp"
    return 0
  fi
  rm -rf "$SID_ROOTFS"
  mv "$tmp" "$SID_ROOTFS"
}

install_missing() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: missing Debian packages: ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

jobs=$(nproc 2>/dev/null || echo 2)

build_release() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTACKAUDIT_TESTS=OFF >/dev/null
  cmake --build build -j "$jobs" >/dev/null
}

case "${1:-}" in
  demo)
    install_missing
    build_release
    exec ./build/stackaudit demo
    ;;
  build)
    install_missing
    build_release
    echo "built build/stackaudit"
    ;;
  test)
    install_missing
    make_sid_rootfs
    export STACKAUDIT_SID_ROOTFS="$SID_ROOTFS"
    cmake -S . -B build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTACKAUDIT_SANITIZE=ON -DSTACKAUDIT_TEST_HOOKS=ON >/dev/null
    cmake --build build-test -j "$jobs" >/dev/null
    exec ctest --test-dir build-test --output-on-failure -j "$jobs"
    ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
