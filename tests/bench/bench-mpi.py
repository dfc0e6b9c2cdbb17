#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Strong scaling of kdlens under mpirun on one machine (docs/mpi.md).

    nice -n 10 /usr/bin/python3 tests/bench/bench-mpi.py BUILD_DIR [--n 200000] [--repeat 3]
        [--commands kl,cka,dims]

Generates a kdl-synth pair of N samples in /work/bench-mpi (once), then for
each command runs: one process with 2 BLAS threads; mpirun -np 1 and -np 2
with one BLAS thread per rank.  Prints the median wall time and CPU time
(every process of the run) of --repeat runs, the load average before and
after each command, and the bytes each rank moved (KDL_MPI_BYTES=1: kdlens
prints them at exit).  A command that does not run under MPI is reported
with its one-line refusal.
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import time

ap = argparse.ArgumentParser()
ap.add_argument("build")
ap.add_argument("--n", type=int, default=200000)
ap.add_argument("--repeat", type=int, default=3)
ap.add_argument("--dir", default="/work/bench-mpi")
ap.add_argument("--commands", default="kl,cka,dims")
a = ap.parse_args()
kdlens = os.path.join(a.build, "analysis", "kdlens")
synth = os.path.join(a.build, "datasets", "kdl-synth")
os.makedirs(a.dir, exist_ok=True)
t, s = os.path.join(a.dir, f"t{a.n}.h5"), os.path.join(a.dir, f"s{a.n}.h5")
if not os.path.exists(s):
    subprocess.run([synth, "--n", str(a.n), "--checkpoints", "1", t, s], check=True)


def cpu():
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def timed(cmd, env):
    """Median wall time, median CPU time of the processes (all ranks and
    mpirun: on a busy machine the wall time is mostly waiting for a core),
    and the bytes each rank moved."""
    times, cpus, moved = [], [], []
    for _ in range(a.repeat):
        t0, c0 = time.perf_counter(), cpu()
        r = subprocess.run(cmd, env=dict(os.environ, **env), capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        cpus.append(cpu() - c0)
        if r.returncode != 0:
            return None, None, r.stderr.strip().splitlines()[:1]
        moved = [int(x) for x in re.findall(r"moved (\d+) bytes", r.stderr)]
    return statistics.median(times), statistics.median(cpus), moved


MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np"]
ARGS = {"kl": ["-t", t, "-s", s], "cka": [t, s], "dims": ["-t", t, "-s", s]}
print(f"N = {a.n}; load average before: {os.getloadavg()}")
for verb in a.commands.split(","):
    base = [kdlens, verb, *ARGS[verb], "--format", "json"]
    runs = [("1 process, 2 BLAS threads", base, {"OPENBLAS_NUM_THREADS": "2"})]
    for p in (1, 2):
        runs.append((f"mpirun -np {p}, 1 BLAS thread", MPI + [str(p)] + base,
                     {"OPENBLAS_NUM_THREADS": "1", "KDL_MPI_BYTES": "1"}))
    for name, cmd, env in runs:
        sec, cpus, moved = timed(cmd, env)
        if sec is None:
            print(f"{verb:4} {name:30} not run: {moved}")
        else:
            print(f"{verb:4} {name:30} median {sec:7.2f} s, CPU {cpus:7.2f} s  "
                  f"bytes moved per rank {moved}")
    print(f"load average after {verb}: {os.getloadavg()}")
