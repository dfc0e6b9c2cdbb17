#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install what is missing (Debian, as root or with sudo), build, then run:
#   ./bootstrap.sh demo   the main job on the bundled example
#   ./bootstrap.sh test   every test, in a warnings-as-errors ASan+UBSan build, and a
#                         60 s libFuzzer run per fuzz target (clang)
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-demo}
case $mode in demo|test|build) ;; *) echo "usage: ./bootstrap.sh [demo|test|build]" >&2; exit 2;; esac

pkgs=(gcc pkg-config meson ninja-build libhdf5-dev hdf5-tools libopenblas-dev liblapacke-dev
      libdeflate-dev libcmocka-dev gnuplot-nox fonts-liberation python3-numpy python3-h5py
      python3-pandas python3-pip python3-setuptools python3-wheel)
if [ "$mode" = test ]; then
        pkgs+=(python3-torch dataset-fashion-mnist chromium poppler-utils valgrind
               libopenmpi-dev openmpi-bin clang libclang-rt-dev llvm)
fi
missing=()
for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
        echo "bootstrap: installing ${missing[*]}" >&2
        sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -q
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The Python package in place (python/README.md): /usr/bin/python3 imports this checkout's
# python/kdlens, which finds build/analysis/.  Into /usr/local as root, else the user's site.
here=$(/usr/bin/python3 -c 'import kdlens; print(kdlens.__file__)' 2>/dev/null || true)
if [ "$here" != "$PWD/python/kdlens/__init__.py" ]; then
        user=--user; [ "$(id -u)" -eq 0 ] && user=
        PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore /usr/bin/python3 -m pip install -q \
                --no-index --no-deps --no-build-isolation $user -e ./python
fi

if [ "$mode" = test ]; then
        dir=build-ci
        [ -f $dir/build.ninja ] || meson setup $dir -Dwerror=true -Db_sanitize=address,undefined \
                -Db_lundef=false -Dtests=enabled -Dmpi=disabled
        ninja -C $dir
        meson test -C $dir --print-errorlogs --num-processes 2
        # MPI (docs/mpi.md): a plain build, since Open MPI's own allocations upset LeakSanitizer.
        [ -f build-ci-mpi/build.ninja ] || meson setup build-ci-mpi -Dwerror=true -Dtests=enabled \
                -Dmpi=enabled
        ninja -C build-ci-mpi
        meson test -C build-ci-mpi --print-errorlogs --num-processes 1 --suite mpi
        # Fuzzing (HACKING.md, "Fuzzing"): clang's libFuzzer build; the committed finds
        # replayed through their targets, then each target for 60 s from fresh seeds.
        # -Wno-double-promotion: clang, unlike gcc, warns on NAN and INFINITY (floats).
        [ -f build-ci-fuzz/build.ninja ] || CC=clang meson setup build-ci-fuzz -Dwerror=true \
                -Dfuzz=enabled -Dtests=enabled -Dmpi=disabled -Db_sanitize=address,undefined \
                -Db_lundef=false -Dc_args="-fsanitize=fuzzer-no-link -Wno-double-promotion"
        ninja -C build-ci-fuzz analysis/kdlens tests/fuzz/fuzz-catalog tests/fuzz/fuzz-read \
                tests/fuzz/fuzz-join
        meson test -C build-ci-fuzz --no-rebuild --print-errorlogs --num-processes 1 --suite fuzz
        /usr/bin/python3 tests/fuzz/run-fuzz.py build-ci-fuzz --ci --seconds 60
        exit 0
fi

dir=build
[ -f $dir/build.ninja ] || meson setup $dir
ninja -C $dir
[ "$mode" = build ] && exit 0
exec ./$dir/analysis/kdlens demo -o kdlens-demo
