#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Read one dataset whole with h5py, the way a numpy user would, and report
time and memory: the baseline that bench-read compares kdlens's block reader
with.  Not a test.

usage: /usr/bin/python3 bench_read_numpy.py FILE DATASET [f32|f64]

  f32  a = f[DATASET][...]                       (numpy float32, as stored)
  f64  a = f[DATASET][...].astype(np.float64)    (what float64 numerics need)

Prints one line: "seconds peak_rss_kib base_rss_kib checksum", where the
time covers opening the file, reading and (f64) converting; peak is the
process's VmHWM afterwards; base is VmRSS after importing numpy and h5py;
checksum is the float64 sum of all values (to check that both readers saw
the same data).
"""
import sys
import time

import h5py
import numpy as np


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def main():
    if len(sys.argv) not in (3, 4) or (len(sys.argv) == 4 and sys.argv[3] not in ("f32", "f64")):
        print("usage: bench_read_numpy.py FILE DATASET [f32|f64]", file=sys.stderr)
        return 2
    path, name = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) == 4 else "f32"
    base = status_kib("VmRSS")
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        a = f[name][...]
        if mode == "f64":
            a = a.astype(np.float64)
    seconds = time.perf_counter() - t0
    peak = status_kib("VmHWM")
    checksum = float(a.sum(dtype=np.float64))
    print("%.6f %d %d %.17g" % (seconds, peak, base, checksum))
    return 0


if __name__ == "__main__":
    sys.exit(main())
