#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Benchmark (not a test): `kdlens kl` beside the same computation in numpy.

    bench-kl.py [--n 100000] [--classes 100] [--width 512] [--student-width W]
                [--temperatures 1,2,4,8] [--runs 3] [--data DIR]

Writes a teacher and a student dump (float32, N x C logits, N x d head-input
features, the teacher's feature and logit gradients, the student's logit
gradients, heads) once into DIR, then runs, --runs times each, alternating:
  * kdlens kl -t T -s S -T ... --format json
  * a numpy script that reads the same files whole and computes the same
    table (every value of docs/kl.md, mean, ratio, Pearson, Spearman on the
    same documented subsample, relative error; the projector by lstsq when
    the widths differ).
Each run is a child process; its wall time, CPU time (user + system) and
peak resident memory (the child's own rusage, via wait4) are measured.  Prints the medians, and the largest
relative difference between the two tables.  Both run with one BLAS thread.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

KDLENS = os.environ.get("KDLENS", "kdlens")
SEED = 1  # of the Spearman subsample, given to kdlens explicitly
NAMES = ["kl", "logit_fisher", "logit_centered_l2", "logit_l2", "prob_l2", "feature_l2",
         "feature_head", "gradient_fisher", "gradient_empirical", "gradient_logit_l2"]


def generate(path_t, path_s, n, c, d_t, d_s, seed=2024, block=10000):
    import h5py

    rng = np.random.default_rng(seed)
    w_t = rng.standard_normal((c, d_t)) / np.sqrt(d_t) * 3
    b_t = rng.standard_normal(c) * 0.2
    w_s = rng.standard_normal((c, d_s)) / np.sqrt(d_s) * 3
    b_s = rng.standard_normal(c) * 0.2
    mix = rng.standard_normal((d_t, d_s)) / np.sqrt(d_t)
    labels = rng.integers(0, c, n)
    with h5py.File(path_t, "w") as ft, h5py.File(path_s, "w") as fs:
        for f, role, w, b, d in ((ft, "teacher", w_t, b_t, d_t), (fs, "student", w_s, b_s, d_s)):
            f.attrs["kdlens_format"] = 1
            f.attrs["role"] = role
            f.attrs["model"] = f"bench-{role}"
            f["labels"] = labels.astype(np.int32)
            g = f.create_group("checkpoints/final")
            g.attrs["step"] = np.int64(1)
            g.create_dataset("logits", (n, c), "f4", chunks=(min(n, 4096), c))
            x = g.create_dataset("features/pen", (n, d), "f4", chunks=(min(n, 1024), d))
            x.attrs["depth"] = 1
            g.create_dataset("gradients/logits", (n, c), "f4", chunks=(min(n, 4096), c))
            g["head/weight"] = w
            g["head/bias"] = b
            g["head"].attrs["input"] = "pen"
        ft.create_dataset("checkpoints/final/gradients/features/pen", (n, d_t), "f4",
                          chunks=(min(n, 1024), d_t))
        for r0 in range(0, n, block):
            r1 = min(n, r0 + block)
            m = r1 - r0
            y = labels[r0:r1]
            ht = np.maximum(rng.standard_normal((m, d_t)) + 0.3, 0)
            hs = ht @ mix + 0.5 * rng.standard_normal((m, d_s))
            for f, h, w, b in ((ft, ht, w_t, b_t), (fs, hs, w_s, b_s)):
                z = h @ w.T + b
                p = np.exp(z - z.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                gz = p - np.eye(c)[y]
                g = f["checkpoints/final"]
                g["logits"][r0:r1] = z
                g["features/pen"][r0:r1] = h
                g["gradients/logits"][r0:r1] = gz
                if f is ft:
                    g["gradients/features/pen"][r0:r1] = gz @ w


# ---- the numpy side (run as a child: --numpy T S TAUS OUT) ------------------------

def log_softmax(x):
    m = x.max(1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(1, keepdims=True))


def ranks(x):
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)  # continuous data: no ties
    return r


def subsample(n, cap, seed):
    """kdlens's documented Spearman subsample, vectorised with wrapping uint64."""
    if n <= cap:
        return np.arange(n)
    with np.errstate(over="ignore"):
        def mix(z):
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
            return z ^ (z >> np.uint64(31))
        i = np.arange(n, dtype=np.uint64)
        key = mix(mix(i + np.uint64(0x9e3779b97f4a7c15)) ^ np.uint64(seed))
    order = np.lexsort((i, key))
    return np.sort(order[:cap])


def numpy_table(path_t, path_s, taus, out):
    import h5py

    with h5py.File(path_t, "r") as ft, h5py.File(path_s, "r") as fs:
        gt, gs = ft["checkpoints/final"], fs["checkpoints/final"]
        zt = gt["logits"][...].astype(np.float64)
        zs = gs["logits"][...].astype(np.float64)
        ht = gt["features/pen"][...].astype(np.float64)
        hs = gs["features/pen"][...].astype(np.float64)
        w = gt["head/weight"][...]
        ght = gt["gradients/features/pen"][...].astype(np.float64)
        gzt = gt["gradients/logits"][...].astype(np.float64)
        gzs = gs["gradients/logits"][...].astype(np.float64)
    n, c = zt.shape
    d_t = ht.shape[1]
    if hs.shape[1] != d_t:
        coef, *_ = np.linalg.lstsq(np.c_[hs, np.ones(n)], ht, rcond=None)
        e = hs @ coef[:-1] + coef[-1] - ht
    else:
        e = hs - ht
    del hs
    u = e @ w.T
    d = zs - zt
    fixed = {"logit_centered_l2": ((d - d.mean(1, keepdims=True)) ** 2).sum(1) / (2 * c),
             "logit_l2": (d ** 2).sum(1) / (2 * c),
             "feature_l2": (e ** 2).sum(1) / (2 * d_t),
             "feature_head": (u ** 2).sum(1) / (2 * c),
             "gradient_empirical": 0.5 * (ght * e).sum(1) ** 2,
             "gradient_logit_l2": 0.5 * ((gzs - gzt) ** 2).sum(1)}
    sub = subsample(n, 1 << 16, SEED)
    rows = []
    for tau in taus:
        lpt, lps = log_softmax(zt / tau), log_softmax(zs / tau)
        pt, ps = np.exp(lpt), np.exp(lps)
        v = dict(fixed)
        v["kl"] = tau ** 2 * (pt * (lpt - lps)).sum(1)
        mu = (pt * d).sum(1, keepdims=True)
        v["logit_fisher"] = 0.5 * (pt * (d - mu) ** 2).sum(1)
        v["prob_l2"] = tau ** 2 * ((ps - pt) ** 2).sum(1) / 2
        um = (pt * u).sum(1, keepdims=True)
        v["gradient_fisher"] = 0.5 * (pt * (u - um) ** 2).sum(1)
        k = v["kl"]
        rk = ranks(k[sub])
        for name in NAMES:
            a = v[name]
            rows.append({"tau": tau, "approximation": name, "mean": a.mean(),
                         "ratio": a.mean() / k.mean(), "pearson": np.corrcoef(a, k)[0, 1],
                         "spearman": np.corrcoef(ranks(a[sub]), rk)[0, 1],
                         "relerr": np.abs(a - k).mean() / k.mean()})
    with open(out, "w") as f:
        json.dump(rows, f)


# ---- orchestration -------------------------------------------------------------

def run_child(cmd, env):
    """Fork/exec with os.wait4 so the peak RSS and CPU time are this child's
    alone; returns (wall s, user+system CPU s, peak RSS MiB, stdout)."""
    r, wfd = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(wfd, 1)
        try:
            os.execvpe(cmd[0], cmd, env)
        finally:
            os._exit(127)
    os.close(wfd)
    chunks = []
    while True:
        b = os.read(r, 1 << 20)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed with status {os.waitstatus_to_exitcode(status)}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, b"".join(chunks)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--student-width", type=int, default=None)
    ap.add_argument("--temperatures", default="1,2,4,8")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "kdl-bench-data"))
    ap.add_argument("--numpy", nargs=4, metavar=("T", "S", "TAUS", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.numpy:
        numpy_table(a.numpy[0], a.numpy[1], [float(x) for x in a.numpy[2].split(",")],
                    a.numpy[3])
        return

    d_s = a.student_width or a.width
    os.makedirs(a.data, exist_ok=True)
    tag = f"n{a.n}-c{a.classes}-d{a.width}-s{d_s}"
    pt, ps = (os.path.join(a.data, f"{r}-{tag}.h5") for r in ("teacher", "student"))
    if not (os.path.exists(pt) and os.path.exists(ps)):
        t0 = time.perf_counter()
        generate(pt, ps, a.n, a.classes, a.width, d_s)
        print(f"generated {pt}, {ps} in {time.perf_counter() - t0:.1f} s")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    out_np = os.path.join(a.data, f"numpy-{tag}.json")
    kd_cmd = [KDLENS, "kl", "-t", pt, "-s", ps, "-T", a.temperatures, "--seed", str(SEED),
              "--format", "json"]
    np_cmd = [sys.executable, os.path.abspath(__file__), "--numpy", pt, ps, a.temperatures,
              out_np]
    res = {"kdlens": [], "numpy": []}
    doc = None
    for _ in range(a.runs):
        wall, cpu, rss, out = run_child(kd_cmd, env)
        res["kdlens"].append((wall, cpu, rss))
        doc = json.loads(out)
        wall, cpu, rss, _ = run_child(np_cmd, env)
        res["numpy"].append((wall, cpu, rss))

    ref = json.load(open(out_np))
    rows = [r for r in doc["results"] if r["table"] == "kl"]
    worst = 0.0
    for r, q in zip(rows, ref):
        assert (r["tau"], r["approximation"]) == (q["tau"], q["approximation"])
        for key in ("mean", "ratio", "pearson", "spearman", "relerr"):
            worst = max(worst, abs(r[key] - q[key]) / max(abs(q[key]), 1e-300))

    size = sum(os.path.getsize(p) for p in (pt, ps)) / 2 ** 20
    print(f"kdlens kl, N={a.n}, C={a.classes}, d_t={a.width}, d_s={d_s}, "
          f"tau={a.temperatures}, float32 dumps {size:.0f} MiB, 1 BLAS thread, "
          f"median of {a.runs}")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(wall time includes waiting for a CPU; CPU time does not)")
    print(f"{'':8s} {'wall (s)':>9s} {'CPU (s)':>9s} {'peak RSS (MiB)':>15s}   wall of each run (s)")
    for k, v in res.items():
        print(f"{k:8s} {statistics.median(t for t, _, _ in v):9.2f} "
              f"{statistics.median(c for _, c, _ in v):9.2f} "
              f"{statistics.median(m for _, _, m in v):15.0f}   "
              + " ".join(f"{t:.2f}" for t, _, _ in v))
    print(f"largest relative difference kdlens vs numpy over {len(rows)} rows x 5 "
          f"statistics: {worst:.2e}")
    if worst > 1e-9:
        sys.exit("kdlens and numpy disagree")


if __name__ == "__main__":
    main()
