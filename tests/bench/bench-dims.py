#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Benchmark the dims metrics beside numpy, in one run.  Not a test.

    /usr/bin/python3 tests/bench/bench-dims.py BUILD/tests/bench/bench-dims \
        [--n 100000] [--d 2048] [--c 100] [--scaling 25000,50000] \
        [--kdlens BUILD/analysis/kdlens]

For each N it runs the C benchmark (streaming state, metrics/spectral) and the
same computation in numpy float64 the usual way (whole matrix in memory,
X^T X by matmul, numpy.linalg.eigh), each in its own process so that the peak
resident memory (ru_maxrss) belongs to that implementation alone.  The data
are generated inside each process (same distribution, different generator),
so only times and memory are compared here; the numbers themselves are
checked against numpy by tests/ref/test_dims.py.  With --kdlens it also
writes a float32 HDF5 dump of the same shape and times `kdlens dims` on it,
reading included.
"""
import argparse
import resource
import subprocess
import sys
import time

NUMPY_CHILD = r'''
import resource, sys, time
import numpy as np
n, d, c = (int(a) for a in sys.argv[1:4])
rng = np.random.default_rng(42)
t0 = time.monotonic()
scale = 1.0 / (1.0 + 0.05 * np.arange(d))
x = rng.uniform(-1, 1, size=(n, d)) * scale
z = 3.0 * x[:, np.arange(c) % d] + 0.1 * rng.uniform(-1, 1, size=(n, c))
tgen = time.monotonic() - t0
t0 = time.monotonic()
zc = z - z.mean(axis=1, keepdims=True)
zc -= zc.mean(axis=0)
xc = x - x.mean(axis=0)
sxx = xc.T @ xc
sxy = xc.T @ zc
tss = float(np.sum(zc * zc))
szz = zc.T @ zc
tacc = time.monotonic() - t0
t0 = time.monotonic()
s, v = np.linalg.eigh(sxx)
s = np.maximum(s, 0)
q = np.sum((v.T @ sxy) ** 2, axis=1)
lz = np.maximum(np.linalg.eigvalsh(szz)[::-1], 0)
def gcv(lam):
    t = s + lam
    expl = np.sum(q * (s + 2 * lam) / t**2)
    df = np.sum(s / t)
    rss = max(tss - expl, 0.0)
    den = 1 - (1 + df) / n
    return (rss / n / den**2 if den > 0 else np.inf), rss
grid = s[-1] * 10.0 ** np.linspace(-10, 5, 301)
vals = [gcv(l)[0] for l in grid]
lam = grid[int(np.argmin(vals))]
r2 = 1 - gcv(lam)[1] / tss
lam1 = s[-1] / (n - 1)
tail1 = 1 - lz[0] / lz.sum()
tfin = time.monotonic() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(f"impl=numpy n={n} d={d} c={c} generate_s={tgen:.3f} accumulate_s={tacc:.3f} "
      f"finalize_s={tfin:.3f} total_s={tacc + tfin:.3f} peak_rss_mib={rss:.1f} "
      f"lambda1={lam1:.17g} ridge_lambda={lam:.6g} ridge_r2={r2:.12f} logit_tail1={tail1:.12f}")
'''


# Runs a command and reports its own peak RSS: ru_maxrss of the waited child.
MEASURE = (r'import resource, subprocess, sys, time; t0 = time.monotonic(); '
           r'p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); '
           r'print(f"status={p.returncode} wall_s={time.monotonic() - t0:.3f} '
           r'peak_rss_mib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.1f}")')


def write_dump(path, n, d, c):
    """A teacher dump: one float32 layer [n, d] feeding a head, and logits [n, c]."""
    import h5py
    import numpy as np
    rng = np.random.default_rng(7)
    scale = (1.0 / (1.0 + 0.05 * np.arange(d))).astype(np.float32)
    w = rng.standard_normal((c, d)) / np.sqrt(d)
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = "teacher"
        f.attrs["model"] = "bench"
        g = f.create_group("checkpoints/final")
        g.attrs["step"] = np.int64(0)
        pen = g.create_dataset("features/pen", shape=(n, d), dtype="float32",
                               chunks=(min(n, 1024), d))
        pen.attrs["depth"] = 0
        logits = g.create_dataset("logits", shape=(n, c), dtype="float64")
        for i in range(0, n, 8192):
            m = min(8192, n - i)
            x = rng.uniform(-1, 1, size=(m, d)).astype(np.float32) * scale
            pen[i:i + m] = x
            logits[i:i + m] = x.astype(np.float64) @ w.T
        g.create_dataset("head/weight", data=w)
        g.create_dataset("head/bias", data=np.zeros(c))
        g["head"].attrs["input"] = "pen"


def parse(line):
    return dict(kv.split('=', 1) for kv in line.split())


def run(cmd):
    t0 = time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall = time.monotonic() - t0
    rec = parse(out.strip().splitlines()[-1])
    rec.setdefault('wall_s', f'{wall:.2f}')
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('bench', help='path of the bench-dims binary')
    ap.add_argument('--n', type=int, default=100000)
    ap.add_argument('--d', type=int, default=2048)
    ap.add_argument('--c', type=int, default=100)
    ap.add_argument('--scaling', default='25000,50000',
                    help='extra N values for the memory-vs-N check (kdlens only)')
    ap.add_argument('--no-numpy', action='store_true')
    ap.add_argument('--kdlens', help='also time `kdlens dims` end to end (HDF5 float32 dump '
                    'written here) at --scaling and --n')
    ap.add_argument('--tmp', default='/tmp', help='directory for the generated dumps')
    a = ap.parse_args()

    rows = []
    for n in [int(v) for v in a.scaling.split(',') if v] + [a.n]:
        rows.append(run([a.bench, str(n), str(a.d), str(a.c)]))
    if not a.no_numpy:
        rows.append(run([sys.executable, '-c', NUMPY_CHILD, str(a.n), str(a.d), str(a.c)]))

    if a.kdlens:
        import os
        import tempfile
        for n in [int(v) for v in a.scaling.split(',') if v] + [a.n]:
            with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
                path = os.path.join(tmp, 'teacher.h5')
                write_dump(path, n, a.d, a.c)
                rec = run([sys.executable, '-c', MEASURE, a.kdlens, 'dims', '-t', path,
                           '--format', 'json'])
                rec.update(impl='kdlens dims (HDF5, end to end)', n=str(n), d=str(a.d),
                           c=str(a.c), total_s=rec['wall_s'])
                rows.append(rec)

    cols = ['impl', 'n', 'd', 'c', 'accumulate_s', 'finalize_s', 'total_s', 'generate_s',
            'wall_s', 'peak_rss_mib', 'ridge_r2', 'logit_tail1']
    print('| ' + ' | '.join(cols) + ' |')
    print('|' + '---|' * len(cols))
    for r in rows:
        print('| ' + ' | '.join(r.get(k, '') for k in cols) + ' |')
    d = a.d
    print(f'\nO(D^2) reference: one {d}x{d} float64 matrix = {d * d * 8 / 2**20:.1f} MiB; '
          f'one N x D float64 matrix = {a.n * d * 8 / 2**20:.1f} MiB.')
    print(f'load average during the run: {open("/proc/loadavg").read().split()[0:3]}')


if __name__ == '__main__':
    main()
