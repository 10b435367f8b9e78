#!/usr/bin/env bash
# The fuzzers' smoke run, as the test suite runs it (docs/fuzzing.md):
#
#   fuzz/smoke.sh BUILD_DIR [SECONDS_PER_FUZZER]
#
# Builds fuzz/ with clang++ into BUILD_DIR, then runs each fuzzer for a few
# seconds (default 4) over its committed corpus, which it reads but never
# writes. Exit 0: no crash, sanitizer report, broken invariant or hang; 1: one
# of those (the input is kept under BUILD_DIR/artifacts), or the build failed;
# 77: skipped, because clang++ or libFuzzer's runtime is missing (ctest's
# SKIP_RETURN_CODE). libFuzzer's own exit code for a crash is 77 too, hence the
# explicit mapping below: a crash must never read as a skip.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: fuzz/smoke.sh BUILD_DIR [SECONDS_PER_FUZZER]}
seconds=${2:-4}
cxx=${STACKAUDIT_FUZZ_CXX:-clang++}

skip() {
  echo "SKIPPED: $*"
  exit 77
}

command -v "$cxx" >/dev/null || skip "$cxx not found (Debian package clang; ./setup.sh installs it)"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  >"$probe/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/probe.cpp" -o "$probe/probe" 2>"$probe/err"; then
  sed -n '1,5p' "$probe/err"
  runtime=$("$cxx" -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)
  [ -f "$runtime" ] || skip "libFuzzer's runtime libclang_rt.fuzzer-x86_64.a is missing" \
    "(Debian package libclang-rt-14-dev; ./setup.sh installs it)"
  skip "$cxx cannot link a libFuzzer binary with ASan and UBSan (error above)"
fi

mkdir -p "$build"
if ! { cmake -S "$here" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" &&
  cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)"; } >"$build/build.log" 2>&1; then
  tail -n 40 "$build/build.log"
  echo "FAIL: building the fuzzers (log: $build/build.log)"
  exit 1
fi
if grep -q 'warning:' "$build/build.log"; then
  grep -A3 'warning:' "$build/build.log"
  echo "FAIL: the fuzzers build with warnings"
  exit 1
fi

# Readable stack traces in a report, when LLVM's symbolizer is there.
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ]; then
  for s in "$(command -v llvm-symbolizer)" /usr/lib/llvm-*/bin/llvm-symbolizer; do
    if [ -x "$s" ]; then
      export ASAN_SYMBOLIZER_PATH=$s
      break
    fi
  done
fi
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

failed=0
mkdir -p "$build/artifacts"
while read -r name; do
  [ -n "$name" ] || continue
  corpus=$here/corpus/$name
  if [ ! -d "$corpus" ]; then
    echo "FAIL: fuzz_$name has no corpus ($corpus)"
    failed=1
    continue
  fi
  # New inputs go to a scratch directory (libFuzzer writes to the first one).
  scratch=$build/smoke/$name
  rm -rf "$scratch"
  mkdir -p "$scratch"
  log=$build/smoke/$name.log
  "$build/fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$name-" "$scratch" "$corpus" \
    >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  if [ $rc -ne 0 ]; then
    tail -n 60 "$log"
    echo "FAIL: fuzz_$name exited with $rc (log: $log; input: $build/artifacts/$name-*)"
    failed=1
  else
    echo "ok   fuzz_$name: ${runs:-?} inputs in ${seconds}s"
  fi
done <"$build/fuzzers.txt"

for dir in "$here"/corpus/*/; do
  name=$(basename "$dir")
  grep -qx "$name" "$build/fuzzers.txt" || {
    echo "FAIL: corpus/$name has no fuzzer"
    failed=1
  }
done
exit $failed
