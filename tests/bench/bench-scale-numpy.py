#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Benchmark (not a test): kdlens beside numpy on a scale dump, with agreement.

    bench-scale-numpy.py DIR NAME KDLENS [--only kl,split,dims,cka]

DIR/NAME-teacher.h5 and DIR/NAME-student.h5 are a pair bench-scale.py
generates (set n's a250000 is the default choice: the largest of its dumps
numpy holds on a 24 GiB machine; at N = 1,000,000 the two float64 logit
matrices alone are 16 GB, and the softmax temporaries double that).

For each command, kdlens (--format json) and a numpy float64 program that
loads whole datasets, as a notebook does, run in fresh processes one after
the other; each one's wall time, CPU time and peak RSS (wait4) are printed
beside the largest relative difference between the quantities both compute:

  kl     the mean of tau^2 KL(p_t || p_s) per sample, tau = 4 (kdlens's default)
  split  the means of KL, TCKD and NCKD, tau = 4
  dims   effective rank, participation ratio and top eigenvalue share of
         every layer of both models (the covariance spectrum)
  cka    linear CKA (biased) of every teacher layer against every student
         layer, logits included

The numpy programs follow kdlens's documented definitions (docs/kl.md,
docs/split.md, docs/dims.md, docs/cka.md), written independently of its code.
"""
import json
import os
import subprocess
import sys
import time

TAU = 4.0
COMMANDS = ("kl", "split", "dims", "cka")


def h5():
    import h5py
    return h5py


def load(path, name, rows=None):
    with h5().File(path, "r") as f:
        return f[name][...].astype("float64")


def layers(path):
    with h5().File(path, "r") as f:
        ck = f["checkpoints"]
        c = sorted(ck)[0]
        names = sorted(ck[c]["features"]) if "features" in ck[c] else []
        return "/checkpoints/%s" % c, names


def log_softmax(z):
    import numpy as np
    z = z / TAU
    z -= z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def np_kl(t, s):
    import numpy as np
    ck, _ = layers(t)
    lt = log_softmax(load(t, ck + "/logits"))
    ls = log_softmax(load(s, ck + "/logits"))
    pt = np.exp(lt)
    kl = TAU * TAU * (pt * (lt - ls)).sum(axis=1)
    return {"kl": float(kl.mean())}


def np_split(t, s):
    import numpy as np
    ck, _ = layers(t)
    with h5().File(t, "r") as f:
        y = f["labels"][...].astype(np.int64)
    lt = log_softmax(load(t, ck + "/logits"))
    ls = log_softmax(load(s, ck + "/logits"))
    n = np.arange(lt.shape[0])
    pt, ps = np.exp(lt), np.exp(ls)
    kl = (pt * (lt - ls)).sum(axis=1)
    bt, bs = pt[n, y], ps[n, y]
    tckd = bt * np.log(bt / bs) + (1 - bt) * np.log((1 - bt) / (1 - bs))
    # NCKD: KL between the distributions over the non-target classes.
    lnt = lt - np.log1p(-bt)[:, None]
    lns = ls - np.log1p(-bs)[:, None]
    del ls, ps
    qt = np.exp(lnt)
    qt[n, y] = 0.0
    lnt[n, y] = 0.0
    lns[n, y] = 0.0
    nckd = (qt * (lnt - lns)).sum(axis=1)
    t2 = TAU * TAU
    return {"kl": float(t2 * kl.mean()), "tckd": float(t2 * tckd.mean()),
            "nckd": float(t2 * nckd.mean())}


def spectrum_stats(x):
    import numpy as np
    x -= x.mean(axis=0)
    lam = np.linalg.eigvalsh(x.T @ x)[::-1]
    lam = np.clip(lam, 0.0, None)
    p = lam / lam.sum()
    nz = p[p > 0]
    return {"effective_rank": float(np.exp(-(nz * np.log(nz)).sum())),
            "participation_ratio": float(lam.sum() ** 2 / (lam * lam).sum()),
            "top_share": float(lam[0] / lam.sum())}


def np_dims(t, s):
    out = {}
    for role, path in (("teacher", t), ("student", s)):
        ck, names = layers(path)
        for nm in names:
            for k, v in spectrum_stats(load(path, ck + "/features/" + nm)).items():
                out["%s/%s/%s" % (role, nm, k)] = v
    return out


def np_cka(t, s):
    import numpy as np
    ckt, nt = layers(t)
    cks, ns = layers(s)

    def centred(path, ck, nm):
        x = load(path, ck + ("/logits" if nm == "logits" else "/features/" + nm))
        x -= x.mean(axis=0)
        return x

    tx = {nm: centred(t, ckt, nm) for nm in nt + ["logits"]}
    txx = {nm: np.linalg.norm(x.T @ x) for nm, x in tx.items()}
    out = {}
    for nm in ns + ["logits"]:
        y = centred(s, cks, nm)
        yy = np.linalg.norm(y.T @ y)
        for a, x in tx.items():
            out["%s/%s" % (a, nm)] = float(np.linalg.norm(x.T @ y) ** 2 / (txx[a] * yy))
        del y
    return out


def kd_values(cmd, doc):
    """The quantities of @cmd from kdlens's JSON @doc, keyed as numpy's."""
    out = {}
    for r in doc["results"]:
        tb = r.get("table")
        if cmd == "kl" and tb == "kl" and r["approximation"] == "kl" and r["tau"] == TAU:
            out["kl"] = r["mean"]
        elif cmd == "split" and tb == "split" and r["tau"] == TAU:
            out.update(kl=r["kl"], tckd=r["tckd"], nckd=r["nckd"])
        elif cmd == "dims" and tb == "dims" and r["kind"] == "features":
            k = "%s/%s/" % (r["role"], r["layer"])
            out[k + "effective_rank"] = r["effective_rank"]
            out[k + "participation_ratio"] = r["participation_ratio"]
            out[k + "top_share"] = r["top_eigenvalue"] / r["total_variance"]
        elif cmd == "cka" and tb == "cka_pairs":
            out["%s/%s" % (r["layer_a"], r["layer_b"])] = r["cka_linear"]
    return out


def measure(argv, stdout):
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit("bench-scale-numpy: %s exited %d: %s" % (argv[:3], code, err.strip()))
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0


def main(argv):
    if len(argv) >= 3 and argv[0] == "numpy-one":
        cmd, t, s = argv[1], argv[2], argv[3]
        json.dump(globals()["np_" + cmd](t, s), sys.stdout)
        return 0
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    d, name, kdlens = argv[:3]
    only = COMMANDS
    if len(argv) == 5 and argv[3] == "--only":
        only = [c for c in argv[4].split(",") if c in COMMANDS]
    t = os.path.join(d, name + "-teacher.h5")
    s = os.path.join(d, name + "-student.h5")
    with h5().File(t, "r") as f:
        n = f["labels"].shape[0]
    print("dump %s: N = %s; load average at start %s" %
          (name, "{:,}".format(n), " ".join("%.1f" % x for x in os.getloadavg())))
    print("%-6s %10s %9s %10s   %10s %9s %10s   %-12s %s" %
          ("cmd", "kdlens_s", "cpu_s", "peak_MiB", "numpy_s", "cpu_s", "peak_MiB",
           "max_rel_diff", "values compared"))
    rows = []
    for cmd in only:
        args = [kdlens, cmd, t, s] if cmd == "cka" else [kdlens, cmd, "-t", t, "-s", s]
        if cmd == "kl":
            args += ["-T", "4"]
        # Only the table compared: split's confusion tables alone are C^2 rows
        # (kdlens still computes everything it computes without --table).
        args += ["--table", {"cka": "cka_pairs"}.get(cmd, cmd)]
        out = os.path.join(d, "out", "numpy-kd-%s-%s.json" % (name, cmd))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            kw, kc, km = measure(["nice", "-n", "10"] + args + ["--format", "json"], f)
        with open(out) as f:
            kd = kd_values(cmd, json.load(f))
        npout = out.replace("numpy-kd-", "numpy-np-")
        with open(npout, "w") as f:
            nw, nc, nm = measure(["nice", "-n", "10", sys.executable, os.path.abspath(__file__),
                                  "numpy-one", cmd, t, s], f)
        with open(npout) as f:
            ref = json.load(f)
        missing = sorted(set(ref) - set(kd))
        if missing:
            raise SystemExit("bench-scale-numpy: kdlens %s lacks %s" % (cmd, ", ".join(missing)))
        rel = max(abs(kd[k] - v) / max(abs(v), 1e-300) for k, v in ref.items())
        print("%-6s %10.1f %9.1f %10.0f   %10.1f %9.1f %10.0f   %-12.2e %d" %
              (cmd, kw, kc, km, nw, nc, nm, rel, len(ref)), flush=True)
        rows.append(dict(cmd=cmd, kdlens_s=kw, kdlens_cpu_s=kc, kdlens_peak_mib=km,
                         numpy_s=nw, numpy_cpu_s=nc, numpy_peak_mib=nm, max_rel_diff=rel,
                         compared=len(ref)))
    with open(os.path.join(d, "out", "numpy-%s.json" % name), "w") as f:
        json.dump(rows, f, indent=1)
    print("load average at the end %s" % " ".join("%.1f" % x for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
