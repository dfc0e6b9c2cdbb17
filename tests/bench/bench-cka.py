#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Benchmark (not a test): exact linear and debiased CKA of a 4 x 4 grid of
teacher x student layers of width 2,048 at N = 50,000, by kdlens (streaming,
feature space) beside numpy's Gram-space computation at N = 10,000 from the
same files.

    bench-cka.py generate DIR          write DIR/teacher.h5, DIR/student.h5 (3.3 GB)
    bench-cka.py run DIR BENCH_EXE     run both and print the comparison

BENCH_EXE is the built tests/bench/bench-cka (C): it measures the machine's
DGEMM rate and runs kdlens's CKA state on the first N rows of the files.
"""
import json
import os
import resource
import subprocess
import sys
import time

import h5py
import numpy as np

N, WIDTH, LAYERS, C, CHUNK = 50000, 2048, 4, 10, 5000
N_NUMPY = 10000


def generate(d):
    """Correlated layers: a shared 64-d latent through random maps and ReLUs."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(2024)
    labels = rng.integers(0, C, N)
    maps = {role: [rng.standard_normal((64, WIDTH)) / 8 for _ in range(LAYERS)]
            for role in ("teacher", "student")}
    heads = {role: rng.standard_normal((WIDTH, C)) / 45 for role in ("teacher", "student")}
    files = {role: h5py.File(os.path.join(d, role + ".tmp.h5"), "w")
             for role in ("teacher", "student")}
    for role, f in files.items():
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = role
        f.attrs["model"] = role + "-bench"
        f.create_dataset("labels", data=labels)
        g = f.create_group("checkpoints/final")
        g.attrs["step"] = np.int64(1)
        for k in range(LAYERS):
            ds = g.create_dataset(f"features/layer{k}", (N, WIDTH), dtype="float32",
                                  chunks=(1000, WIDTH))
            ds.attrs["depth"] = k
        g.create_dataset("logits", (N, C), dtype="float32")
    for r0 in range(0, N, CHUNK):
        z = rng.standard_normal((CHUNK, 64)) + np.eye(C, 64)[labels[r0:r0 + CHUNK]] * 3
        for role, f in files.items():
            h = z
            for k in range(LAYERS):
                h = np.maximum(h @ maps[role][k] + 0.3 * rng.standard_normal((CHUNK, WIDTH)), 0)
                f[f"checkpoints/final/features/layer{k}"][r0:r0 + CHUNK] = h
                h = h[:, :64] + z
            f["checkpoints/final/logits"][r0:r0 + CHUNK] = \
                f[f"checkpoints/final/features/layer{LAYERS - 1}"][r0:r0 + CHUNK] @ heads[role]
    for role, f in files.items():
        f.close()
        os.replace(os.path.join(d, role + ".tmp.h5"), os.path.join(d, role + ".h5"))


def center_gram(g, unbiased):
    """Kornblith et al.'s center_gram, in place."""
    n = g.shape[0]
    if unbiased:
        np.fill_diagonal(g, 0)
        means = np.sum(g, 0) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
    else:
        means = np.mean(g, 0)
        means -= np.mean(means) / 2
    g -= means[:, None]
    g -= means[None, :]
    if unbiased:
        np.fill_diagonal(g, 0)
    return g


def numpy_gram(d, n):
    """The 4 x 4 grid, biased and debiased, in Gram space: the student's four
    centred Grams are kept, the teacher's made one at a time."""
    def load(role, k):
        with h5py.File(os.path.join(d, role + ".h5"), "r") as f:
            return f[f"checkpoints/final/features/layer{k}"][:n].astype(np.float64)

    out = {}
    t0 = time.perf_counter()
    for unbiased in (False, True):
        sg = [center_gram((lambda x: x @ x.T)(load("student", k)), unbiased)
              for k in range(LAYERS)]
        snorm = [np.sqrt(np.vdot(g, g)) for g in sg]
        m = np.zeros((LAYERS, LAYERS))
        for i in range(LAYERS):
            x = load("teacher", i)
            tg = center_gram(x @ x.T, unbiased)
            del x
            tn = np.sqrt(np.vdot(tg, tg))
            for j in range(LAYERS):
                m[i, j] = np.vdot(tg, sg[j]) / (tn * snorm[j])
            del tg
        del sg
        out["debiased" if unbiased else "biased"] = m.tolist()
    out["seconds"] = time.perf_counter() - t0
    out["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def run_c(exe, d, n):
    p = subprocess.run([exe, os.path.join(d, "teacher.h5"), os.path.join(d, "student.h5"),
                        str(n)], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "generate":
        generate(sys.argv[2])
        return
    if len(sys.argv) != 4 or sys.argv[1] != "run":
        sys.exit(__doc__)
    d, exe = sys.argv[2], sys.argv[3]
    k50 = run_c(exe, d, N)
    k10 = run_c(exe, d, N_NUMPY)
    # numpy last, in a child so its peak memory is its own.
    p = subprocess.run([sys.executable, __file__, "numpy", d], capture_output=True, text=True,
                       check=True)
    npr = json.loads(p.stdout)
    gib = 1024.0 ** 3
    print(f"machine: OpenBLAS with {k50['threads']} threads; each run measures DGEMM "
          f"(n = 4096) right after its CKA (a shared machine's rate varies)")
    for k in (k50, k10):
        print(f"kdlens  N = {k['n']:6d}: {k['seconds']:7.1f} s, peak {k['peak_bytes'] / gib:5.2f} "
              f"GiB (state {k['state_bytes'] / gib:.2f} GiB), {k['gflops']:.1f} GFLOP/s "
              f"outside reading = {100 * k['gflops'] / k['dgemm_gflops']:.0f} % of DGEMM "
              f"{k['dgemm_gflops']:.1f} GFLOP/s, {k['read_seconds']:.1f} s reading")
    print(f"numpy   N = {N_NUMPY:6d}: {npr['seconds']:7.1f} s, peak "
          f"{npr['peak_bytes'] / gib:5.2f} GiB (Gram space, biased + debiased)")
    need = npr["peak_bytes"] * (N / N_NUMPY) ** 2
    print(f"numpy   N = {N:6d}: would need ~{need / gib:.0f} GiB as run "
          f"(at least {2 * 8 * N * N / gib:.0f} GiB: two n x n Grams) and ~"
          f"{npr['seconds'] * (N / N_NUMPY) ** 2:.0f} s (Gram cost grows as N^2)")
    print(f"speed-up at N = {N_NUMPY}: {npr['seconds'] / k10['seconds']:.1f}x; "
          f"kdlens at N = {N} vs numpy's N^2 extrapolation: "
          f"{npr['seconds'] * (N / N_NUMPY) ** 2 / k50['seconds']:.1f}x")
    diff = max(abs(a - b) for key in ("biased", "debiased")
               for ra, rb in zip(k10[key], npr[key]) for a, b in zip(ra, rb))
    print(f"max |kdlens - numpy| at N = {N_NUMPY}: {diff:.2e}")
    print("linear CKA, N = 50,000 (rows teacher, columns student):")
    for row in k50["biased"]:
        print("   " + "  ".join(f"{v:.4f}" for v in row))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "numpy":
        print(json.dumps(numpy_gram(sys.argv[2], N_NUMPY)))
    else:
        main()
