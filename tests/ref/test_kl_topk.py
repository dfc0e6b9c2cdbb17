#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""`kdlens kl --topk` (sparse teacher targets, docs/lm.md) against numpy float64.

Dumps are written with h5py (vocabulary-like logits: a Zipf-shaped teacher and
a student near it); every number of the "kl_topk" table is recomputed here:
the top-k by a full lexicographic sort (kdlens uses a heap), the log-softmax
by numpy's log-sum-exp, the draws of `sampled` from kdlens's seeded hash
re-implemented in numpy, ranks by sorting.  Relative error <= 1e-10.  The
sampled estimator's unbiasedness is checked over many seeds, and each bad
--topk gets its error.
"""
import math
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import kdltest as kt  # noqa: E402
import refcommon as rc  # noqa: E402

RTOL = 1e-10
ATOL = 1e-13  # relerr of the sources that are K up to rounding (k = C)
SOURCES = ["topk_renorm", "topk_tail", "sampled"]


def lm_logits(rng, n, c):
    """Teacher logits with a heavy head (a Zipf-like prior plus noise) and a
    student that agrees with it only in part."""
    prior = -1.1 * np.log1p(np.arange(c))[rng.permutation(c)]
    zt = prior + 2.0 * rng.standard_normal((n, c))
    zs = 0.8 * zt + 1.2 * rng.standard_normal((n, c)) + 0.5
    return zt, zs


def write(path, role, z):
    n = z.shape[0]
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = role
        f.attrs["model"] = role
        f["labels"] = np.zeros(n, dtype=np.int32)
        g = f.create_group("checkpoints/final")
        g.attrs["step"] = np.int64(1)
        g.create_dataset("logits", data=z)


def dumps(n, c, seed, ties=False):
    rng = np.random.default_rng(seed)
    zt, zs = lm_logits(rng, n, c)
    if ties:  # many equal teacher logits: the smaller class goes first
        zt = np.round(zt)
    d = kt.tmpdir()
    t, s = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
    write(t, "teacher", zt)
    write(s, "student", zs)
    return t, s, zt, zs


# ---- the reference ----------------------------------------------------------------

def log_softmax(a):
    m = a.max(1, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(1, keepdims=True))


def uniforms(seed, idx, streams):
    """kdl_sample_uniform(seed, idx, stream) for an array of streams."""
    with np.errstate(over="ignore"):
        s = rc._mix64(np.uint64(seed))
        st = np.asarray(streams, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
        h = rc._mix64(rc._mix64(s ^ np.uint64(idx)) ^ st)
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


def sampled_value(lp, lq, p, idx, it, k, seed):
    base = (1 << 61) + (it << 40) + (k << 20)
    e = -np.log(uniforms(seed, idx, [base + j for j in range(k + 1)]))
    sp = np.cumsum(e)
    cum = np.cumsum(p)
    t = sp[:k] / sp[k] * cum[-1]
    x = np.minimum(np.searchsorted(cum, t, side="right"), len(p) - 1)
    return np.mean(lp[x] - lq[x])


def reference(zt, zs, taus, ks, seed):
    """{(tau, name, k): per-sample values}, and {tau: K}."""
    n, c = zt.shape
    order = np.lexsort((np.tile(np.arange(c), (n, 1)), -zt), axis=1)
    top = order[:, :max(ks)]
    hard = -log_softmax(zs)[np.arange(n), top[:, 0]]
    out, exact = {}, {}
    for it, tau in enumerate(taus):
        lp, lq = log_softmax(zt / tau), log_softmax(zs / tau)
        p, q = np.exp(lp), np.exp(lq)
        t2 = tau * tau
        exact[tau] = t2 * (p * (lp - lq)).sum(1)
        out[(tau, "hard", 1)] = hard
        for k in ks:
            ren, tail, smp = np.empty(n), np.empty(n), np.empty(n)
            for r in range(n):
                S = top[r, :k]
                ps = p[r, S].sum()
                ph = p[r, S] / ps
                ren[r] = t2 * np.sum(ph * (np.log(ph) - lq[r, S]))
                mask = np.ones(c, dtype=bool)
                mask[S] = False
                tp, tq = p[r, mask].sum(), q[r, mask].sum()
                tl = tp * math.log(tp / tq) if tp > 0 else 0.0
                tail[r] = t2 * (np.sum(p[r, S] * (lp[r, S] - lq[r, S])) + tl)
                smp[r] = t2 * sampled_value(lp[r], lq[r], p[r], r, it, k, seed)
            out[(tau, "topk_renorm", k)] = ren
            out[(tau, "topk_tail", k)] = tail
            out[(tau, "sampled", k)] = smp
    return out, exact


def ranks(x):
    """Average ranks, 1-based: a tie group spanning sorted places a..b gets (a + b) / 2."""
    _, inv, cnt = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(cnt)
    return ((last - cnt + 1 + last) / 2.0)[inv]


def check_table(doc, ref, exact, taus, ks, c):
    rows = kt.records(doc, "kl_topk")
    assert len(rows) == len(taus) * (1 + 3 * len(ks)), len(rows)
    seen = set()
    for row in rows:
        tau, name, k = row["tau"], row["approximation"], row["k"]
        a, kv = ref[(tau, name, k)], exact[tau]
        seen.add((tau, name, k))
        what = f"tau {tau} {name} k {k}"
        assert row["dim"] == (1 if name == "hard" else 2 * k), what
        assert row["samples"] == len(a)
        kt.assert_close(row["mean"], a.mean(), RTOL, 0, what + " mean")
        kt.assert_close(row["ratio"], a.mean() / kv.mean(), RTOL, 0, what + " ratio")
        kt.assert_close(row["pearson"], np.corrcoef(a, kv)[0, 1], RTOL, 0, what + " pearson")
        kt.assert_close(row["spearman"], np.corrcoef(ranks(a), ranks(kv))[0, 1], RTOL, 0,
                        what + " spearman")
        kt.assert_close(row["relerr"], np.abs(a - kv).sum() / kv.sum(), RTOL, ATOL,
                        what + " relerr")
    assert len(seen) == len(rows)


def run_case(n, c, taus, ks, seed=1, data_seed=3, ties=False):
    t, s, zt, zs = dumps(n, c, data_seed, ties)
    doc = kt.run_json("kl", "-t", t, "-s", s, "-T", ",".join(map(str, taus)),
                      "--topk", ",".join(map(str, ks)), "--seed", seed)
    ref, exact = reference(zt, zs, taus, ks, seed)
    check_table(doc, ref, exact, taus, ks, c)
    # The exact KL of the kl table is the one the ratios divide by.
    for row in kt.records(doc, "kl"):
        if row["approximation"] == "kl":
            kt.assert_close(row["mean"], exact[row["tau"]].mean(), RTOL, 0, "kl mean")
    return doc, ref, exact


# ---- tests ------------------------------------------------------------------------

def test_reference_c1000():
    # tau 1 is among the temperatures: hard comes from its softmax.
    run_case(300, 1000, [1.0, 4.0], [1, 8, 32, 128], seed=7)


def test_reference_c32000():
    # No tau of 1: hard takes a softmax of its own.
    run_case(300, 32000, [2.0], [1, 8, 128], seed=1)


def test_ties_smaller_class_first():
    run_case(200, 300, [1.0], [1, 8, 32], ties=True)


def test_whole_vocabulary_is_exact():
    # k = C: the renormalised and the tail sources are the exact KL.
    doc, ref, exact = run_case(200, 50, [1.0, 3.0], [50, 5])
    for row in kt.records(doc, "kl_topk"):
        if row["k"] == 50 and row["approximation"] != "sampled":
            kt.assert_close(row["ratio"], 1.0, 1e-12, 0, row["approximation"])
            kt.assert_close(row["pearson"], 1.0, 1e-12, 0, row["approximation"])


def test_sampled_unbiased_over_seeds():
    # Each seed's mean over the samples is an unbiased estimate of mean(K): the
    # mean over seeds is within 4 standard errors of it, and the spread is not 0.
    n, c, k = 300, 1000, 8
    t, s, zt, zs = dumps(n, c, 11)
    means, kmean = [], None
    for seed in range(1, 61):
        doc = kt.run_json("kl", "-t", t, "-s", s, "-T", "2", "--topk", k, "--seed", seed)
        for row in kt.records(doc, "kl_topk"):
            if row["approximation"] == "sampled":
                means.append(row["mean"])
        kmean = [r["mean"] for r in kt.records(doc, "kl") if r["approximation"] == "kl"][0]
    means = np.array(means)
    se = means.std(ddof=1) / math.sqrt(len(means))
    assert se > 0, "the draws do not depend on the seed"
    z = (means.mean() - kmean) / se
    assert abs(z) < 4.0, f"sampled: mean over seeds {means.mean()}, exact {kmean}, z = {z}"
    # The top-k sources do not depend on the seed; the renormalised one is biased.
    ren = [r["mean"] for r in kt.records(doc, "kl_topk") if r["approximation"] == "topk_renorm"]
    assert abs(ren[0] - kmean) > 10 * se


def write_sparse(path, zt, k, kind, classes=True):
    """A sparse-only teacher: the top-k of zt (shuffled within each row, as the schema allows
    any order), as logits with logsumexp, logits alone, or log-probabilities."""
    n, c = zt.shape
    rng = np.random.default_rng(9)
    order = np.lexsort((np.tile(np.arange(c), (n, 1)), -zt), axis=1)[:, :k]
    order = np.take_along_axis(order, rng.permuted(np.tile(np.arange(k), (n, 1)), axis=1), 1)
    lse = np.log(np.exp(zt - zt.max(1, keepdims=True)).sum(1)) + zt.max(1)
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = "teacher"
        f.attrs["model"] = "teacher"
        f["labels"] = np.zeros(n, dtype=np.int32)
        g = f.create_group("checkpoints/final")
        g.attrs["step"] = np.int64(1)
        t = g.create_group("logits_topk")
        if classes:
            t.attrs["classes"] = np.int64(c)
        t["indices"] = order.astype(np.int64)
        v = np.take_along_axis(zt, order, 1)
        if kind == "logprobs":
            t["logprobs"] = v - lse[:, None]
        else:
            t["values"] = v
        if kind == "values+lse":
            t["logsumexp"] = lse


def test_sparse_only_teacher():
    # What a sparse-only teacher gives exactly equals the dense top-k values of the
    # same k (reference: numpy), whichever way the values are stored; the exact KL is
    # said not to be computable.
    n, c, k, taus = 300, 1000, 16, [1.0, 3.0]
    t, s, zt, zs = dumps(n, c, 4)
    ref, _ = reference(zt, zs, taus, [k], 1)
    d = kt.tmpdir()
    for kind in ["values+lse", "logprobs", "values"]:
        sp = os.path.join(d, kind + ".h5")
        write_sparse(sp, zt, k, kind)
        doc = kt.run_json("kl", "-t", sp, "-s", s, "-T", "1,3")
        assert not kt.records(doc, "kl"), "no exact KL from a sparse teacher"
        rows = {(r["approximation"], r["tau"]): r for r in kt.records(doc, "kl_sparse")}
        want = {("hard", 1.0): ref[(1.0, "hard", 1)]}
        for tau in taus:
            want[("topk_renorm", tau)] = ref[(tau, "topk_renorm", k)]
        if kind != "values":
            want[("topk_tail", 1.0)] = ref[(1.0, "topk_tail", k)]
            lp = log_softmax(zt)
            top = np.lexsort((np.tile(np.arange(c), (n, 1)), -zt), axis=1)[:, :k]
            want[("teacher_mass", 1.0)] = np.exp(np.take_along_axis(lp, top, 1)).sum(1)
        assert set(rows) == set(want), (kind, sorted(rows))
        for key, a in want.items():
            kt.assert_close(rows[key]["mean"], a.mean(), RTOL, 0, f"{kind} {key} mean")
            kt.assert_close(rows[key]["sd"], a.std(ddof=1), 1e-8, 0, f"{kind} {key} sd")
            assert rows[key]["k"] == k and rows[key]["samples"] == n
        notes = " ".join(doc.get("notes", []))
        assert "not computed" in notes, notes
    for extra in [["--topk", "8"], ["--per-sample", os.path.join(d, "ps.h5")]]:
        st, _, err = kt.run("kl", "-t", sp, "-s", s, *extra)
        assert st == 2 and extra[0] in err and "only sparse" in err, (st, err)
        assert not os.path.exists(os.path.join(d, "ps.h5"))


def test_bad_topk():
    t, s, _, _ = dumps(20, 10, 5)
    st, _, err = kt.run("kl", "-t", t, "-s", s, "--topk", "11")
    assert st == 1, (st, err)
    kt.one_line_error(err, "kdlens kl:", t, "/checkpoints/final/logits", "11")
    for bad in ["0", "8,8", "4,,8", "x", "-3", ""]:
        st, _, err = kt.run("kl", "-t", t, "-s", s, "--topk", bad)
        # A usage error: its line, then the synopsis.
        assert st == 2, (bad, st, err)
        assert err.startswith("kdlens kl: --topk"), (bad, err)


kt.main(globals())
