#!/bin/sh
# SPDX-License-Identifier: MIT
# Run the libFuzzer targets of a -Dfuzz=enabled build (HACKING.md, "Fuzzing").
#
# usage: tests/fuzz/run-fuzz.sh BUILD_DIR [SECONDS [TARGET...]]
#
# Each target (catalog, read, join; all by default) runs for SECONDS (300)
# in libFuzzer's fork mode, which records a crash, leak, timeout or
# out-of-memory and goes on (libhdf5's own leaks on damaged files are
# suppressed: lsan.supp).  Seeds are made once by mkseeds.py; the
# corpus grows in BUILD_DIR/fuzz-campaign/TARGET/corpus, the finds land in
# .../TARGET/artifacts, the log in .../TARGET/log.  The inputs are written
# to a directory in /dev/shm, removed at the end.
set -eu
build=${1:?usage: run-fuzz.sh BUILD_DIR [SECONDS [TARGET...]]}
secs=${2:-300}
shift
[ $# -gt 0 ] && shift
targets=${*:-catalog read join}
here=$(cd "$(dirname "$0")" && pwd)
work=$build/fuzz-campaign
mkdir -p "$work"
if [ ! -d "$work/seeds/catalog" ]; then
        /usr/bin/python3 "$here/mkseeds.py" --synth "$build/datasets/kdl-synth" "$work/seeds"
fi
KDL_FUZZ_DIR=$(mktemp -d /dev/shm/kdl-fuzz.XXXXXX 2>/dev/null || mktemp -d)
export KDL_FUZZ_DIR
trap 'rm -rf "$KDL_FUZZ_DIR"' EXIT
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$here/lsan.supp}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
for t in $targets; do
        mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
        "$build/tests/fuzz/fuzz-$t" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
                -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
                -dict="$here/hdf5.dict" -artifact_prefix="$work/$t/artifacts/" \
                "$work/$t/corpus" "$work/seeds/$t" >"$work/$t/log" 2>&1 || true
        printf '%s: %s\n' "$t" "$(grep -E '^#[0-9]+: cov' "$work/$t/log" | tail -n 1)"
        printf '%s: artifacts: %s\n' "$t" "$(ls "$work/$t/artifacts" | sed 's/-.*//' | sort |
                uniq -c | tr -s ' \n' ' ')"
done
