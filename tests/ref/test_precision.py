#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens split and kl against a 50-digit reference (mpmath), near certainty.

When both models are near-certain (a target margin of 20 to 40 in z/tau), the
KL is 1e-11 to 1e-15 and log p_y is a tiny number next to z_y/tau: a split that
forms log p_y as z_y/tau minus the log-sum-exp loses most of its digits there.
This test writes such logits (and ordinary ones) to dumps with h5py, computes
every per-sample KL, TCKD, NCKD, confidence and derived value with mpmath at
50 significant digits from the stored float64 values, and requires kdlens
split (--per-sample and the means of its JSON document) and kdlens kl to agree
with it to 1e-12 relative, and with each other.
"""
import os
import sys

import h5py
import numpy as np
from mpmath import mp, mpf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

mp.dps = 50
N, C = 120, 10
LAMBDA, OMEGA_MAX = 0.9, 10.0
RTOL = 1e-12


# ---- logits --------------------------------------------------------------------

def near_certain(tau, seed):
    """Target margins 20..40 in z/tau, the student within about 0.5 of the
    teacher in every logit: both near-certain, KL about 1e-11..1e-15."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    a = rng.standard_normal((N, C))
    a[np.arange(N), y] = a.max(1) + rng.uniform(20.0, 40.0, N)
    b = a + 0.5 * rng.standard_normal((N, C))
    return y, tau * a, tau * b


def ordinary(tau, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    a = 2.0 * rng.standard_normal((N, C))
    a[np.arange(N), y] += 2.0
    b = 0.7 * a + 1.5 * rng.standard_normal((N, C))
    return y, tau * a, tau * b


def write_dumps(d, y, zt, zs):
    paths = []
    for role, z in (("teacher", zt), ("student", zs)):
        p = os.path.join(d, role + ".h5")
        with h5py.File(p, "w") as f:
            f.attrs["kdlens_format"] = 1
            f.attrs["role"] = role
            f["labels"] = y.astype(np.int64)
            f["sample_ids"] = np.arange(N, dtype=np.int64)
            g = f.create_group("checkpoints/final")
            g.attrs["step"] = np.int64(1)
            g["logits"] = z.astype(np.float64)
        paths.append(p)
    return paths


# ---- 50-digit reference ----------------------------------------------------------

def log_softmax(a):
    lse = mp.log(mp.fsum(mp.exp(x) for x in a))
    return [x - lse for x in a]


def kl(lp, lq):
    return mp.fsum(mp.exp(u) * (u - v) for u, v in zip(lp, lq))


def reference(zt, zs, y, tau):
    """Per-sample values from the definitions, every step in 50 digits."""
    t = mpf(tau)
    out = {k: [] for k in ("kl", "tckd", "nckd", "pt_y", "ps_y", "rest", "gap", "omega", "eps",
                           "nt_entropy")}
    for zt_n, zs_n, yn in zip(zt, zs, y):
        a = [mpf(float(x)) / t for x in zt_n]
        b = [mpf(float(x)) / t for x in zs_n]
        lpt, lps = log_softmax(a), log_softmax(b)
        rest_t = mp.fsum(mp.exp(lpt[k]) for k in range(C) if k != yn)
        rest_s = mp.fsum(mp.exp(lps[k]) for k in range(C) if k != yn)
        pt, ps = 1 - rest_t, 1 - rest_s
        tckd = pt * mp.log(pt / ps) + rest_t * mp.log(rest_t / rest_s)
        lht = log_softmax([a[k] for k in range(C) if k != yn])
        lhs = log_softmax([b[k] for k in range(C) if k != yn])
        ratio = lpt[yn] - lps[yn]
        out["kl"].append(t * t * kl(lpt, lps))
        out["tckd"].append(t * t * tckd)
        out["nckd"].append(t * t * kl(lht, lhs))
        out["pt_y"].append(pt)
        out["ps_y"].append(ps)
        out["rest"].append(rest_t)
        out["gap"].append(abs(pt - ps))
        out["omega"].append(mpf(OMEGA_MAX) if ratio > mp.log(OMEGA_MAX) else mp.exp(ratio))
        out["eps"].append(LAMBDA * rest_t * C / (C - 1))
        out["nt_entropy"].append(-mp.fsum(mp.exp(u) * u for u in lht) / mp.log(C - 1))
    return out


def mean(xs):
    return mp.fsum(xs) / len(xs)


# ---- checks ------------------------------------------------------------------------

def relerr(got, want):
    want = float(want)
    return abs(got - want) / abs(want) if want != 0 else abs(got)


def check(y, zt, zs, tau, what):
    d = kt.tmpdir()
    tp, sp = write_dumps(d, y, zt, zs)
    ps = os.path.join(d, "per-sample.h5")
    doc = kt.run_json("split", "-t", tp, "-s", sp, "-T", str(tau), "--per-sample", ps)
    ref = reference(zt, zs, y, tau)
    worst = {}
    with h5py.File(ps, "r") as f:
        g = f["students/0/checkpoints/final"]
        for field in ("kl", "tckd", "nckd", "pt_y", "ps_y", "gap", "omega", "eps", "nt_entropy"):
            got = g[field][:, 0]
            errs = [relerr(v, r) for v, r in zip(got, ref[field])]
            worst[field] = max(errs)
        # the identity, relative to each sample's KL
        res = g["identity_residual"][:, 0]
        worst["residual/kl"] = max(abs(r) / float(k) for r, k in zip(res, ref["kl"]))
    r = kt.records(doc, "split")[0]
    means = dict(kl=mean(ref["kl"]), tckd=mean(ref["tckd"]), nckd=mean(ref["nckd"]),
                 nckd_coupled=mean([u * v for u, v in zip(ref["rest"], ref["nckd"])]),
                 pt_y=mean(ref["pt_y"]), ps_y=mean(ref["ps_y"]), gap=mean(ref["gap"]))
    means["explicit_share"] = means["tckd"] / means["kl"]
    means["implicit_share"] = means["nckd_coupled"] / means["kl"]
    for k, v in means.items():
        worst["mean " + k] = relerr(r[k], v)
    assert r["identity_residual"] <= RTOL * max(float(x) for x in ref["kl"])

    # kdlens kl on the same dumps: its exact KL is split's KL
    kdoc = kt.run_json("kl", "-t", tp, "-s", sp, "-T", str(tau))
    k = [x for x in kt.records(kdoc, "kl") if x["approximation"] == "kl"][0]
    worst["kl mean (kdlens kl)"] = relerr(k["mean"], means["kl"])
    worst["kl vs split"] = relerr(r["kl"], k["mean"])

    print(f"{what}: KL {float(min(ref['kl'])):.1e}..{float(max(ref['kl'])):.1e}; " +
          ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    bad = {k: v for k, v in worst.items() if not v <= RTOL}
    assert not bad, f"{what}: relative errors above {RTOL}: {bad}"


def test_near_certain_tau1():
    check(*near_certain(1.0, 1), 1.0, "near-certain, tau 1")


def test_near_certain_tau4():
    check(*near_certain(4.0, 2), 4.0, "near-certain, tau 4")


def test_ordinary_tau1():
    check(*ordinary(1.0, 3), 1.0, "ordinary, tau 1")


def test_ordinary_tau4():
    check(*ordinary(4.0, 4), 4.0, "ordinary, tau 4")


if __name__ == "__main__":
    kt.main(globals())
