#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Benchmark (not a test): exact linear and debiased CKA of a 4 x 4 grid of
teacher x student layers of width 2,048 by kdlens (streaming, feature space,
double and mixed precision) at N = 10,000 and N = 50,000, beside two numpy
Gram-space baselines at N = 10,000 from the same files:

  * numpy, careful: each of the 8 layers' Gram computed once and centred both
    ways (biased and U-centred); both estimators use it.
  * numpy, Kornblith et al.'s reference usage as published (the demo
    notebook's cka(gram_linear(x), gram_linear(y), debiased=...) per pair and
    estimator, which recomputes both Grams every call): all 32 calls of the
    grid (16 pairs x 2 estimators), timed.

It also prints each path's flop count: kdlens's products in feature space
(2 N D_i D_j a cross block, N D_i^2 a diagonal one, as DSYRK), and the Gram
path's N^2 D a Gram (numpy's x @ x.T is a SYRK), so that the best any exact
method could gain over a baseline at equal GEMM rate can be read off.

    bench-cka.py generate DIR                        write DIR/teacher.h5, DIR/student.h5 (3.3 GB)
    bench-cka.py run DIR BENCH_EXE [N_LARGE N_SMALL] run everything, print the comparison

N_LARGE and N_SMALL default to 50,000 and 10,000; smaller values only check
the script (numpy runs at N_SMALL).  BENCH_EXE is the built
tests/bench/bench-cka (C): it runs kdlens's CKA state on the first N rows of
the files, then measures the machine's DGEMM and SGEMM rates the same way.
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
    """Kornblith et al.'s center_gram without its symmetry check and copy, in place."""
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


# Kornblith et al.'s functions as published (google-research,
# representation_similarity/Demo.ipynb): the symmetry check and the copy in
# center_gram are part of the reference's cost.
def demo_gram_linear(x):
    return x.dot(x.T)


def demo_center_gram(gram, unbiased=False):
    if not np.allclose(gram, gram.T):
        raise ValueError("Input must be a symmetric matrix.")
    gram = gram.copy()
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0)
        means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = np.mean(gram, 0, dtype=np.float64)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def demo_cka(gram_x, gram_y, debiased=False):
    gram_x = demo_center_gram(gram_x, unbiased=debiased)
    gram_y = demo_center_gram(gram_y, unbiased=debiased)
    scaled_hsic = gram_x.ravel().dot(gram_y.ravel())
    return scaled_hsic / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y))


def load(d, role, k, n):
    with h5py.File(os.path.join(d, role + ".h5"), "r") as f:
        return f[f"checkpoints/final/features/layer{k}"][:n].astype(np.float64)


def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def numpy_careful(d, n):
    """The 4 x 4 grid, biased and debiased, in Gram space: each layer's Gram
    once, centred both ways; the student's eight centred Grams are kept, the
    teacher's made one layer at a time.  Timed including reading."""
    def centred(x):
        g = x @ x.T
        b = center_gram(g.copy(), False)
        return b, center_gram(g, True)

    t0 = time.perf_counter()
    student = []
    for k in range(LAYERS):
        b, u = centred(load(d, "student", k, n))
        student.append((b, np.linalg.norm(b), u, np.linalg.norm(u)))
    mb, mu = np.zeros((LAYERS, LAYERS)), np.zeros((LAYERS, LAYERS))
    for i in range(LAYERS):
        tb, tu = centred(load(d, "teacher", i, n))
        nb, nu = np.linalg.norm(tb), np.linalg.norm(tu)
        for j, (sb, snb, su, snu) in enumerate(student):
            mb[i, j] = np.vdot(tb, sb) / (nb * snb)
            mu[i, j] = np.vdot(tu, su) / (nu * snu)
        del tb, tu
    return {"biased": mb.tolist(), "debiased": mu.tolist(),
            "seconds": time.perf_counter() - t0, "grams": 2 * LAYERS, "peak_bytes": peak()}


def numpy_reference(d, n):
    """Kornblith et al.'s usage on the 4 x 4 grid, both estimators: 32 calls of
    cka(gram_linear(x), gram_linear(y), debiased), each computing both Grams.
    Timed without reading (done first)."""
    t0 = time.perf_counter()
    xs = [load(d, "teacher", k, n) for k in range(LAYERS)]
    ys = [load(d, "student", k, n) for k in range(LAYERS)]
    t_read = time.perf_counter() - t0
    out = {}
    t0 = time.perf_counter()
    for debiased in (False, True):
        out["debiased" if debiased else "biased"] = [[
            float(demo_cka(demo_gram_linear(x), demo_gram_linear(y), debiased=debiased))
            for y in ys] for x in xs]
    out["seconds"] = time.perf_counter() - t0
    out["calls"] = 2 * LAYERS * LAYERS
    out["read_seconds"] = t_read
    out["peak_bytes"] = peak()
    return out


def run_c(exe, d, n, precision):
    p = subprocess.run([exe, os.path.join(d, "teacher.h5"), os.path.join(d, "student.h5"),
                        str(n), "0", precision], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def run_numpy(which, d, n):
    """In a child, so its peak memory is its own."""
    p = subprocess.run([sys.executable, __file__, which, d, str(n)], capture_output=True,
                       text=True, check=True)
    return json.loads(p.stdout)


def grid_diff(a, b, keys=("biased", "debiased")):
    """max |a - b| over the grids @keys (rows beyond the shorter grid ignored)."""
    return max(abs(x - y) for key in keys for ra, rb in zip(a[key], b[key])
               for x, y in zip(ra, rb))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "generate":
        generate(sys.argv[2])
        return
    if len(sys.argv) not in (4, 6) or sys.argv[1] != "run":
        sys.exit(__doc__)
    d, exe = sys.argv[2], sys.argv[3]
    n_large, n_small = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) == 6 \
        else (N, N_NUMPY)
    k = {(n, p): run_c(exe, d, n, p) for n in (n_large, n_small) for p in ("double", "mixed")}
    # numpy last.
    careful = run_numpy("numpy-careful", d, n_small)
    ref = run_numpy("numpy-reference", d, n_small)
    gib = 1024.0 ** 3
    any_run = k[(n_large, "double")]

    print(f"machine: OpenBLAS with {any_run['threads']} threads; each kdlens run measures DGEMM "
          f"and SGEMM (n = 4096, best of 3 after a warm-up) right after its CKA (a shared "
          f"machine's rate varies)")
    print("kdlens: streaming feature-space CKA, 4 x 4 grid, biased + debiased in one pass, "
          "default block rows; GFLOP/s outside reading, over the same flop count in both "
          "precisions")
    for n in (n_large, n_small):
        for p in ("double", "mixed"):
            r = k[(n, p)]
            ref_rate, ref_name = (r["sgemm_gflops"], "SGEMM") if p == "mixed" \
                else (r["dgemm_gflops"], "DGEMM")
            print(f"  kdlens {p:6s} N = {n:6d}: {r['seconds']:7.1f} s "
                  f"({r['read_seconds']:.1f} s reading), peak {r['peak_bytes'] / gib:5.2f} GiB "
                  f"(state {r['state_bytes'] / gib:.2f} GiB), {r['gflops']:.1f} GFLOP/s = "
                  f"{100 * r['gflops'] / ref_rate:.0f} % of {ref_name}; this run's DGEMM "
                  f"{r['dgemm_gflops']:.1f}, SGEMM {r['sgemm_gflops']:.1f} GFLOP/s")
    for n in (n_large, n_small):
        a, b = k[(n, "mixed")], k[(n, "double")]
        print(f"  max |kdlens mixed - kdlens double| over the 4 x 4 grid, N = {n}: "
              f"biased {grid_diff(a, b, ('biased',)):.2e}, "
              f"debiased {grid_diff(a, b, ('debiased',)):.2e}")

    print(f"numpy careful   N = {n_small:6d}: {careful['seconds']:7.1f} s, peak "
          f"{careful['peak_bytes'] / gib:5.2f} GiB (Gram space, float64; each of the "
          f"{careful['grams']} Grams computed once and used by both estimators; reading included)")
    print(f"numpy reference N = {n_small:6d}: {ref['seconds']:7.1f} s for all {ref['calls']} "
          f"calls of the grid (16 pairs x 2 estimators, 2 Grams a call: {2 * ref['calls']} "
          f"Grams), peak {ref['peak_bytes'] / gib:5.2f} GiB; its reading "
          f"({ref['read_seconds']:.1f} s) not included")
    need = careful["peak_bytes"] * (n_large / n_small) ** 2
    print(f"numpy careful   N = {n_large:6d}: would need ~{need / gib:.0f} GiB as run "
          f"(at least {2 * 8 * n_large * n_large / gib:.0f} GiB: two n x n Grams) and ~"
          f"{careful['seconds'] * (n_large / n_small) ** 2:.0f} s (EXTRAPOLATED: Gram cost "
          f"grows as N^2)")

    # Gram flops: numpy's x @ x.T is a SYRK, N^2 D; the O(N^2) centring and
    # inner products are not counted.
    gram = float(n_small) ** 2 * WIDTH
    flops = [("kdlens, feature space", k[(n_small, "double")]["flops"]),
             ("numpy careful, 8 Grams", 2 * LAYERS * gram),
             ("numpy reference, 64 Grams", 2 * ref["calls"] * gram)]
    print(f"flops at N = {n_small} (products only):")
    for label, f in flops:
        print(f"  {label:<28s} {f / 1e12:6.2f} TFLOP = {f / flops[0][1]:4.1f}x kdlens's")

    print("speed-ups (wall time; kdlens including its reading; baseline named on each line):")
    ups = []
    for p in ("double", "mixed"):
        t = k[(n_small, p)]["seconds"]
        ups.append((f"N = {n_small}: kdlens {p} vs numpy careful (measured)",
                    careful["seconds"] / t))
        ups.append((f"N = {n_small}: kdlens {p} vs numpy reference (measured, its reading "
                    f"excluded)", ref["seconds"] / t))
    for n in (n_large, n_small):
        ups.append((f"N = {n}: kdlens mixed vs kdlens double (measured)",
                    k[(n, "double")]["seconds"] / k[(n, "mixed")]["seconds"]))
    for p in ("double", "mixed"):
        ups.append((f"N = {n_large}: kdlens {p} vs numpy careful (EXTRAPOLATED as N^2)",
                    careful["seconds"] * (n_large / n_small) ** 2 / k[(n_large, p)]["seconds"]))
    for label, v in ups:
        print(f"  {label:<78s} {v:6.1f}x")

    print(f"agreement at N = {n_small} (max over biased and debiased):")
    for p in ("double", "mixed"):
        print(f"  max |kdlens {p} - numpy careful| (4 x 4): "
              f"{grid_diff(k[(n_small, p)], careful):.2e}")
    print(f"  max |numpy reference - numpy careful| (4 x 4): "
          f"{grid_diff(ref, careful):.2e}")
    print(f"linear CKA, N = {n_large}, kdlens double (rows teacher, columns student):")
    for row in k[(n_large, "double")]["biased"]:
        print("   " + "  ".join(f"{v:.4f}" for v in row))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "numpy-careful":
        print(json.dumps(numpy_careful(sys.argv[2], int(sys.argv[3]))))
    elif len(sys.argv) == 4 and sys.argv[1] == "numpy-reference":
        print(json.dumps(numpy_reference(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
