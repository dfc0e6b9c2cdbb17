#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Benchmark (not a test): the marginal cost of samples in `kdlens report` against
the GEMM bound of the products it must form.

The pair is the mid-size one of issue 23: C = 100 classes, teacher layers of width
512, 1,024 and 2,048, student layers of 256 and 512, two student checkpoints,
float16, written by kdl-synth at a small and a large N (5,000 and 40,000 by default).
The report runs at both N; the difference of the two times over the difference of
the two N is the marginal time per sample, which the fixed costs (figures, class
matrices, subsamples of fixed size) cancel out of.

The bound: the flops of the products the report must form, counted from the widths,
at the DGEMM rate measured in the same run (numpy's dgemm, which is OpenBLAS here as for
kdlens, 2048 x 2048, best of 4, with the same threads).  Per sample:

  * CKA, teacher x teacher, once per student and teacher checkpoint: the Gram block
    of each teacher source (layers, logits, the one-hot labels) with itself
    (N D^2, as DSYRK) and of each layer with the logits and the labels (2 N D_i D_j);
  * CKA, teacher x student, per student checkpoint: every teacher source against
    every student source (layers, logits);
  * CKA, student x student, per student checkpoint: each student source with itself;
  * dims covariances: per teacher checkpoint each layer's X^T X and X^T Y (Y: the
    teacher's logits) and the logits' own; per student checkpoint the same for its
    layers and logits;
  * kl's feature projector, per student checkpoint: its fit (S^T S and S^T T of the
    head inputs, widths d_s and d_t) and, in the second pass, S P, E W_t^T and E Q
    (rank W_t = min(C, d_t) columns);
  * layers' class spectra: per class the Gram of m = min(500, N / C) rows of each
    teacher layer (C m^2 D in all, not linear in N: the two N are counted exactly).

Issue 23 counted the CKA and dims products only; that bound and its ratio are printed
too.  Outside the bound (formed, but not needed): layers' CKA of the teacher against
its logits and labels, the teacher x teacher blocks a second time.

    bench-report.py DIR KDLENS [KDLENS ...] [--repeat R] [--n N_SMALL N_LARGE]
                    [--synth KDL_SYNTH] [--threads T]

DIR receives the dumps (generated once, about 0.9 GB at N = 40,000) and the
reports.  Several binaries (e.g. before and after a change) run alternately,
R times each (default 3), and the medians are compared.  Wall time is what a user
waits; on a shared machine the CPU time (user + system, every thread) is the
steadier measure, so both are printed, each against the DGEMM rate measured the
same way.  --threads T sets OPENBLAS_NUM_THREADS for kdlens and the DGEMM timing
alike (default: OpenBLAS's own, one per core); with 1, no BLAS thread waits for work
and the CPU time is the work done.  Everything runs under nice -n 10.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

np = h5py = None  # imported in main(), after --threads has set OPENBLAS_NUM_THREADS

C, TEACHER, STUDENT, CHECKPOINTS = 100, "512,1024,2048", "256,512", 2


def paths(d, n):
    return os.path.join(d, f"teacher-{n}.h5"), os.path.join(d, f"student-{n}.h5")


def generate(d, synth, n):
    t, s = paths(d, n)
    if os.path.exists(t) and os.path.exists(s):
        return
    print(f"generating N = {n} in {d} ...", flush=True)
    subprocess.run([synth, "--n", str(n), "--classes", str(C),
                    "--teacher-widths", TEACHER, "--student-widths", STUDENT,
                    "--checkpoints", str(CHECKPOINTS), "--dtype", "float16", t + ".tmp",
                    s + ".tmp"], check=True)
    os.replace(t + ".tmp", t)
    os.replace(s + ".tmp", s)


def widths(path):
    """Per checkpoint (in file order): the feature widths, the logits' width and the
    head input's width (the last layer's when the dump does not name it)."""
    out = []
    with h5py.File(path, "r") as f:
        for name, g in f["checkpoints"].items():
            names = list(g["features"])
            feats = [int(np.prod(g["features"][k].shape[1:])) for k in names]
            head = g["head"].attrs.get("input", names[-1]) if "head" in g else names[-1]
            if isinstance(head, bytes):
                head = head.decode()
            out.append((name, feats, int(g["logits"].shape[1]), feats[names.index(head)]))
    return out


def flops(teacher, student, n0, n1):
    """The bound's flops for the samples from @n0 to @n1, by kind; and layers' CKA."""
    _, tw, c, d_t = teacher[-1]  # every student checkpoint is compared with the last
    tsrc = tw + [c, c]           # layers, logits, one-hot labels
    tt = sum(d * d for d in tsrc) + sum(2 * d * c * 2 for d in tw) + 2 * c * c
    ts = st = kl = 0
    for _, sw, sc, d_s in student:
        ssrc = sw + [sc]
        ts += sum(2 * a * b for a in tsrc for b in ssrc)
        st += sum(d * d for d in ssrc)
        kl += d_s * d_s + 2 * d_s * d_t + 2 * d_s * d_t + 2 * d_t * c + 2 * d_t * min(c, d_t)
    dims = 0
    for _, w, cl, _ in teacher:
        dims += sum(d * d + 2 * d * cl for d in w) + cl * cl
    for _, w, cl, _ in student:
        dims += sum(d * d + 2 * d * c for d in w) + cl * cl
    dn = n1 - n0
    spectra = sum(c * min(500, n // c) ** 2 * sum(tw) * (1 if n == n1 else -1) for n in (n0, n1))
    return {"CKA teacher x teacher (once)": tt * dn, "CKA teacher x student": ts * dn,
            "CKA student x student": st * dn, "dims covariances": dims * dn,
            "kl feature projector": kl * dn, "layers class spectra": spectra}, tt * dn


def dgemm_rate(n=2048):
    """GFLOP/s of numpy's dgemm, per wall second and per CPU second, best of 4."""
    a = np.random.default_rng(1).standard_normal((n, n))
    b = np.random.default_rng(2).standard_normal((n, n))
    best_wall = best_cpu = 0.0
    for _ in range(4):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        a @ b
        t, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
        best_wall = max(best_wall, 2 * n ** 3 / t / 1e9)
        best_cpu = max(best_cpu, 2 * n ** 3 / max(cpu, 1e-9) / 1e9)
    return best_wall, best_cpu


def run_report(kdlens, d, n, tag):
    """Wall and CPU seconds (the process, its threads and the gnuplot it waits for)."""
    t, s = paths(d, n)
    out = os.path.join(d, f"report-{tag}-{n}")
    t0 = time.perf_counter()
    p = subprocess.Popen([kdlens, "report", "-t", t, "-s", s, "-o", out,
                          "--force", "--quiet"])
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        sys.exit(f"bench-report: {kdlens} report failed at N = {n}")
    sections = open(os.path.join(out, "index.md")).read().count("\n## ")
    return wall, ru.ru_utime + ru.ru_stime, sections


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("kdlens", nargs="+")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n", type=int, nargs=2, default=[5000, 40000])
    ap.add_argument("--synth")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args()
    global np, h5py
    if a.threads:
        os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
    import h5py
    import numpy as np
    os.nice(10)  # this process (the DGEMM timing) and every child
    n0, n1 = a.n
    synth = a.synth or os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(a.kdlens[0]))), "datasets", "kdl-synth")
    os.makedirs(a.dir, exist_ok=True)
    for n in (n0, n1):
        generate(a.dir, synth, n)
    teacher, student = widths(paths(a.dir, n1)[0]), widths(paths(a.dir, n1)[1])
    kinds, layers_cka = flops(teacher, student, n0, n1)
    issue = sum(f for k, f in kinds.items() if k.startswith(("CKA", "dims")))
    bound_flops = sum(kinds.values())

    times = {k: {n0: [], n1: []} for k in range(len(a.kdlens))}
    rates = []
    sections = set()
    for rep in range(a.repeat):
        for k, exe in enumerate(a.kdlens):
            for n in (n0, n1):
                wall, cpu, nsec = run_report(exe, a.dir, n, k)
                times[k][n].append((wall, cpu))
                sections.add(nsec)
                print(f"  run {rep + 1}, binary {k + 1}, N = {n}: {wall:.1f} s wall, "
                      f"{cpu:.1f} s CPU", flush=True)
        rates.append(dgemm_rate())
    wall_rate = statistics.median(r[0] for r in rates)
    cpu_rate = statistics.median(r[1] for r in rates)

    print(f"\nBLAS threads: {a.threads or 'OpenBLAS default'}; "
          f"pair: C = {C}, teacher widths {TEACHER}, student {STUDENT}, "
          f"{len(student)} student checkpoints, float16; N = {n0:,} and {n1:,}; "
          f"{a.repeat} runs each, medians; sections per report: {sorted(sections)}")
    print(f"DGEMM (numpy/OpenBLAS, this run): {wall_rate:.1f} GFLOP/s per wall second, "
          f"{cpu_rate:.1f} per CPU second")
    dn = n1 - n0
    print(f"products the report must form for the {dn:,} extra samples (the bound):")
    for kind, f in kinds.items():
        print(f"  {kind:30s} {f / 1e9:7.1f} GFLOP  ({f / dn / 1e6:6.2f} MFLOP per sample)")
    print(f"  {'total':30s} {bound_flops / 1e9:7.1f} GFLOP  "
          f"({bound_flops / dn / 1e6:6.2f} MFLOP per sample); CKA and dims alone, as issue "
          f"23 counted: {issue / 1e9:.1f} GFLOP")
    print(f"outside the bound: layers' CKA forms the teacher x teacher blocks again, "
          f"{layers_cka / 1e9:.1f} GFLOP")
    for k, exe in enumerate(a.kdlens):
        print(f"\n{exe}:")
        for j, (what, rate) in enumerate((("wall", wall_rate), ("CPU", cpu_rate))):
            t0 = statistics.median(t[j] for t in times[k][n0])
            t1 = statistics.median(t[j] for t in times[k][n1])
            bound = bound_flops / (rate * 1e9)
            print(f"  {what:4s}: {t0:7.1f} s at N = {n0:,}, {t1:7.1f} s at N = {n1:,}: "
                  f"marginal {1e6 * (t1 - t0) / dn:6.1f} us per sample, {t1 - t0:6.1f} s; "
                  f"bound {bound:6.1f} s; marginal / bound {(t1 - t0) / bound:5.2f} "
                  f"(CKA and dims only: {(t1 - t0) * rate * 1e9 / issue:5.2f})")


if __name__ == "__main__":
    main()
