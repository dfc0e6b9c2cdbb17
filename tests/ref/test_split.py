#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens split against an independent numpy float64 computation.

Dumps are generated here (h5py, seeded): a teacher with one checkpoint and a
head of width 16, a student with two checkpoints, a head of width 3, stored
in another order and joined on /sample_ids; and one whose instance weights
w_n take either sign, with floored denominators.  Every number of the JSON
document is recomputed from the stored values with numpy (docs/split.md#universe-domain-and-instance-knowledge, docs/split.md#the-aekt-weight, docs/split.md#explicit-and-implicit-knowledge, docs/split.md) and compared with relative error <= 1e-9; histogram counts and
the quantiles derived from them are recomputed with the binning rule that
metrics/split.h documents.  Bad inputs get one line on stderr.
"""
import json
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

N, C, DT, DS = 500, 6, 16, 3
TAUS = [1.0, 2.5, 4.0]
LAMBDA, OMEGA_MAX, W_EPS, NBINS, OUT_BINS = 0.9, 10.0, 1e-3, 1000, 20
W_LO, W_HI, W_NB = -16, 16, 2048   # signed log2 bins of w: 2048 per sign, 1/64 octave
W_MID = W_NB + 1                     # the slot of -2^W_LO <= w < 2^W_LO
W_REL, W_ABS = 2.0 ** (1 / 64) - 1, 2.0 ** (W_LO + 1)   # the stated quantile error bound
QLEVELS = [0.05, 0.25, 0.5, 0.75, 0.95]
RTOL = 1e-9


# ---- dumps -------------------------------------------------------------------

def make_data(seed=5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    wt = rng.standard_normal((C, DT))
    ht = rng.standard_normal((N, DT)) + 1.5 * wt[y] / np.linalg.norm(wt[y], axis=1)[:, None] * 2
    zt = ht @ wt.T + 0.1 * rng.standard_normal(C)
    students = {}
    for step, (name, mix) in enumerate([("early", 0.3), ("final", 0.8)]):
        ws = rng.standard_normal((C, DS))
        zs = mix * zt + (1 - mix) * 2.0 * rng.standard_normal((N, C))
        students[name] = dict(step=10 * (step + 1), z=zs, w=ws)
    return y, dict(z=zt, w=wt, h=ht), students


def write_dumps(d, y, teacher, students, t_labels=True, s_labels=True, s_label_edit=None):
    perm = np.random.default_rng(11).permutation(N)
    tp, sp = os.path.join(d, "teacher.h5"), os.path.join(d, "student.h5")
    with h5py.File(tp, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = "teacher"
        if t_labels:
            f["labels"] = y.astype(np.int32)
        f["sample_ids"] = np.arange(N, dtype=np.int64) + 100
        g = f.create_group("checkpoints/final")
        g.attrs["step"] = np.int64(500)
        # float32 storage: the reference uses the stored (rounded) values.
        g["logits"] = teacher["z"].astype(np.float32)
        g["features/pen"] = teacher["h"]
        g["features/pen"].attrs["depth"] = 1
        g["head/weight"] = teacher["w"]
        g["head/bias"] = np.zeros(C)
        g["head"].attrs["input"] = "pen"
    with h5py.File(sp, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = "student"
        if s_labels:
            ys = y.copy()
            if s_label_edit is not None:
                ys[s_label_edit] = (ys[s_label_edit] + 1) % C
            f["labels"] = ys[perm].astype(np.int64)
        f["sample_ids"] = (np.arange(N, dtype=np.int64) + 100)[perm]
        for name, s in students.items():
            g = f.create_group("checkpoints/" + name)
            g.attrs["step"] = np.int64(s["step"])
            g["logits"] = s["z"][perm]
            g["features/pen"] = np.zeros((N, DS))
            g["features/pen"].attrs["depth"] = 1
            g["head/weight"] = s["w"]
            g["head/bias"] = np.zeros(C)
            g["head"].attrs["input"] = "pen"
    return tp, sp


# ---- numpy reference -----------------------------------------------------------

def log_softmax(a):
    m = a.max(axis=1, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=1, keepdims=True))


def reference(zt, zs, y, tau):
    """Per-sample values, written from the definitions (docs/split.md#explicit-and-implicit-knowledge, docs/split.md#universe-label-smoothing, docs/split.md#the-aekt-weight)."""
    n = len(y)
    rows = np.arange(n)
    a, b = zt / tau, zs / tau
    lpt, lps = log_softmax(a), log_softmax(b)
    pt, ps = np.exp(lpt), np.exp(lps)
    kl = tau ** 2 * (pt * (lpt - lps)).sum(1)
    mask = np.ones((n, C), bool)
    mask[rows, y] = False
    at, bs = a[mask].reshape(n, C - 1), b[mask].reshape(n, C - 1)
    lht, lhs = log_softmax(at), log_softmax(bs)
    ht = np.exp(lht)
    nckd = tau ** 2 * (ht * (lht - lhs)).sum(1)
    # 1 - p_y from the non-target log-sum-exp (exact when p_y is near 1)
    lrest_t = np.log(np.exp(at - at.max(1, keepdims=True)).sum(1)) + at.max(1) - (
        np.log(np.exp(a - a.max(1, keepdims=True)).sum(1)) + a.max(1))
    lrest_s = np.log(np.exp(bs - bs.max(1, keepdims=True)).sum(1)) + bs.max(1) - (
        np.log(np.exp(b - b.max(1, keepdims=True)).sum(1)) + b.max(1))
    pty, psy = pt[rows, y], ps[rows, y]
    rt, rs = np.exp(lrest_t), np.exp(lrest_s)
    tckd = tau ** 2 * (pty * (lpt[rows, y] - lps[rows, y]) + rt * (lrest_t - lrest_s))
    ratio = lpt[rows, y] - lps[rows, y]
    omega = np.where(ratio > np.log(OMEGA_MAX), OMEGA_MAX, np.exp(np.minimum(ratio, 50)))
    eps = LAMBDA * rt * C / (C - 1)
    ent = -(ht * lht).sum(1) / np.log(C - 1)
    pbar = pty.mean()
    den = rs - LAMBDA * (1 - pbar)
    guarded = ~(den >= W_EPS)
    w = (rs - LAMBDA * rt) / np.where(guarded, W_EPS, den)
    conf = np.zeros((C, C))
    for i in range(C):
        conf[i] = pt[y == i].mean(0) if (y == i).any() else np.nan
    return dict(kl=kl, tckd=tckd, nckd=nckd, rest=rt, pt_y=pty, ps_y=psy,
                gap=np.abs(pty - psy), omega=omega, clipped=ratio > np.log(OMEGA_MAX),
                eps=eps, nt_entropy=ent, w=w, guarded=guarded, pbar=pbar, conf=conf,
                residual=kl - tckd - rt * nckd)


def lin_hist(x, lo, hi):
    t = (x - lo) / (hi - lo) * NBINS
    k = np.where(~(t > 0), 0, np.where(t >= NBINS, NBINS - 1, np.floor(np.maximum(t, 0))))
    counts = np.bincount(k.astype(int), minlength=NBINS)
    ks = np.arange(NBINS)
    return counts, lo + (hi - lo) * ks / NBINS, lo + (hi - lo) * (ks + 1) / NBINS, \
        np.zeros(NBINS, bool)


def w_hist(x):
    """The signed log layout of metrics/split.h: w < -2^H, NB bins in log2|w| for
    -2^H <= w <= -2^L, the middle -2^L < w < 2^L (and -2^L), NB bins in log2 w
    for 2^L <= w < 2^H, w >= 2^H."""
    k = np.full(len(x), W_MID)
    pos, neg = x > 0, x < 0
    t = np.log2(np.where(pos, x, 1.0))
    u = (t - W_LO) / (W_HI - W_LO) * W_NB
    k = np.where(pos & (t >= W_LO), W_NB + 2 + np.minimum(np.floor(np.maximum(u, 0)), W_NB - 1), k)
    k = np.where(pos & (t >= W_HI), 2 * W_NB + 2, k)
    t = np.log2(np.where(neg, -x, 1.0))
    u = (W_HI - t) / (W_HI - W_LO) * W_NB
    k = np.where(neg & (t > W_LO), 1 + np.minimum(np.floor(np.maximum(u, 0)), W_NB - 1), k)
    k = np.where(neg & (t > W_HI), 0, k)
    counts = np.bincount(k.astype(int), minlength=2 * W_NB + 3)
    e = np.exp2(W_LO + float(W_HI - W_LO) * np.arange(W_NB + 1) / W_NB)
    lo = np.concatenate([[min(x.min(), -e[-1])], -e[:0:-1], [-e[0]], e[:-1], [e[-1]]])
    hi = np.concatenate([[-e[-1]], -e[-2::-1], [e[0]], e[1:], [max(x.max(), e[-1])]])
    return counts, lo, hi, np.zeros(2 * W_NB + 3, bool)


def w_groups(counts):
    """The output bins of w: 2 per octave, the middle and outer slots alone,
    from the first with a sample to the last."""
    g = W_NB // (2 * (W_HI - W_LO))
    groups = [[0]] + [list(range(1 + g * i, 1 + g * i + g)) for i in range(W_NB // g)] + \
        [[W_MID]] + [list(range(W_MID + 1 + g * i, W_MID + 1 + g * i + g))
                     for i in range(W_NB // g)] + [[2 * W_NB + 2]]
    full = [i for i, gr in enumerate(groups) if counts[gr].sum() > 0]
    return groups[full[0]:full[-1] + 1]


def hist_quantiles(x, hist):
    counts, lo, hi, lg = hist
    out = []
    for q in QLEVELS:
        r, cum, v = q * len(x), 0.0, x.max()
        for k in range(len(counts)):
            if counts[k] == 0:
                continue
            if cum + counts[k] >= r:
                f = (r - cum) / counts[k]
                v = (np.exp2(np.log2(lo[k]) + f * (np.log2(hi[k]) - np.log2(lo[k]))) if lg[k]
                     else lo[k] + f * (hi[k] - lo[k]))
                break
            cum += counts[k]
        out.append(min(max(v, x.min()), x.max()))
    return out


def pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a @ b) / np.sqrt((a @ a) * (b @ b))  # NaN for a constant: null in JSON


def cosines(w):
    u = w / np.linalg.norm(w, axis=1, keepdims=True)
    return u @ u.T


def cka_feature(x, y):
    """Linear CKA in feature space (docs/cka.md#linear-cka); split.c uses the Gram form."""
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


# ---- comparisons -----------------------------------------------------------------

def close(actual, expected, what, rtol=RTOL, atol=1e-13):
    if expected is None or (isinstance(expected, float) and np.isnan(expected)):
        assert actual is None, f"{what}: expected null, got {actual!r}"
        return
    kt.assert_close(actual, float(expected), rtol=rtol, atol=atol, what=what)


def one(doc, table, **keys):
    rs = [r for r in kt.records(doc, table) if all(r.get(k) == v for k, v in keys.items())]
    assert len(rs) == 1, f"{table} {keys}: {len(rs)} records"
    return rs[0]


def check_document(doc, y, teacher, students, skip=None):
    keep = np.ones(N, bool) if skip is None else ~np.isin(np.arange(N), skip)
    yk = y[keep]
    zt = teacher["z"].astype(np.float32).astype(np.float64)[keep]
    cos_t = cosines(teacher["w"])
    upper = np.triu_indices(C, 1)
    for name, s in students.items():
        zs = s["z"][keep]
        cos_s = cosines(s["w"])
        key = dict(checkpoint=name, tau=None)
        for tau in TAUS:
            key["tau"] = tau
            ref = reference(zt, zs, yk, tau)
            n = len(yk)
            r = one(doc, "split", **key)
            assert r["step"] == s["step"] and r["teacher_checkpoint"] == "final"
            assert r["samples"] == n and r["skipped"] == N - n
            for k in ("kl", "tckd", "nckd", "pt_y", "ps_y", "gap", "omega"):
                close(r[k], ref[k].mean(), f"split {name} tau={tau} {k}")
            close(r["nckd_coupled"], (ref["rest"] * ref["nckd"]).mean(), "nckd_coupled")
            assert 0 <= r["identity_residual"] < 1e-12, r["identity_residual"]
            assert np.abs(ref["residual"]).max() < 1e-12
            close(r["explicit_share"], ref["tckd"].mean() / ref["kl"].mean(), "explicit_share")
            close(r["implicit_share"], (ref["rest"] * ref["nckd"]).mean() / ref["kl"].mean(),
                  "implicit_share")
            assert r["omega_clipped"] == int(ref["clipped"].sum())
            close(r["teacher_top1"], (zt.argmax(1) == yk).mean(), "teacher_top1")
            close(r["student_top1"], (zs.argmax(1) == yk).mean(), "student_top1")

            hists = dict(pt_y=lin_hist(ref["pt_y"], 0.0, 1.0), ps_y=lin_hist(ref["ps_y"], 0, 1.0),
                         gap=lin_hist(ref["gap"], 0.0, 1.0),
                         omega=lin_hist(ref["omega"], 0.0, OMEGA_MAX),
                         eps=lin_hist(ref["eps"], 0.0, LAMBDA * C / (C - 1)),
                         nt_entropy=lin_hist(ref["nt_entropy"], 0.0, 1.0), w=w_hist(ref["w"]))
            ok = ~ref["guarded"]
            ref["w_unguarded"] = ref["w"][ok]
            hists["w_unguarded"] = w_hist(ref["w"][ok])
            quants = {}
            for q, h in hists.items():
                x = ref[q]
                d = one(doc, "distributions", quantity=q, **key)
                assert d["n"] == len(x)
                close(d["mean"], x.mean(), f"{q} mean")
                close(d["std"], x.std(), f"{q} std", rtol=1e-8)
                close(d["min"], x.min(), f"{q} min")
                close(d["max"], x.max(), f"{q} max")
                qs = hist_quantiles(x, h)
                quants[q] = qs
                srt = np.sort(x)
                for lvl, name_q, v in zip(QLEVELS, ("p05", "p25", "p50", "p75", "p95"), qs):
                    close(d[name_q], v, f"{q} {name_q}", atol=1e-12)
                    # and within one bin of the exact order statistic
                    exact = srt[int(np.ceil(lvl * len(x))) - 1]
                    if not q.startswith("w"):
                        width = (OMEGA_MAX if q == "omega" else
                                 LAMBDA * C / (C - 1) if q == "eps" else 1.0) / NBINS
                        assert abs(d[name_q] - exact) <= width * (1 + 1e-9), (q, lvl)
                    else:
                        assert abs(d[name_q] - exact) <= W_REL * abs(exact) + W_ABS, \
                            (q, lvl, d[name_q], exact, srt[:5])
                # coarse output histogram
                counts, lo, hi, _ = h
                recs = sorted((x for x in kt.records(doc, "histograms")
                               if x["quantity"] == q and x["checkpoint"] == name
                               and x["tau"] == tau), key=lambda x: x["bin"])
                if q.startswith("w"):
                    groups = w_groups(counts)
                else:
                    g = NBINS // OUT_BINS
                    groups = [list(range(g * b, g * b + g)) for b in range(OUT_BINS)]
                assert [x["count"] for x in recs] == [int(counts[gr].sum()) for gr in groups], q
                for x, gr in zip(recs, groups):
                    close(x["lo"], lo[gr[0]], f"{q} bin lo", atol=1e-15)
                    close(x["hi"], hi[gr[-1]], f"{q} bin hi", atol=1e-15)

            u = one(doc, "universe", **key)
            close(u["lambda"], LAMBDA, "lambda")
            close(u["eps"], ref["eps"].mean(), "eps")
            close(u["eps_p50"], quants["eps"][2], "eps_p50", atol=1e-12)
            close(u["nt_entropy"], ref["nt_entropy"].mean(), "nt_entropy")

            dm = one(doc, "domain", **key)
            m = ref["conf"]
            sym = 0.5 * (m + m.T)
            assert dm["confusion_pairs"] == C * (C - 1) // 2
            close(dm["pearson_confusion_student"], pearson(sym[upper], cos_s[upper]), "conf~S^s")
            close(dm["pearson_confusion_teacher"], pearson(sym[upper], cos_t[upper]), "conf~S^t")
            close(dm["pearson_heads"], pearson(cos_t[upper], cos_s[upper]), "S^t~S^s")
            close(dm["cka_heads"], cka_feature(teacher["w"], s["w"]), "cka_heads")
            assert (dm["d_teacher"], dm["d_student"]) == (DT, DS)

            ins = one(doc, "instance", **key)
            close(ins["pt_mean"], ref["pbar"], "pt_mean")
            check_w_summaries(ins, ref, quants, n)
            close(ins["w"], ref["w"].mean(), "w mean")
            close(ins["w_std"], ref["w"].std(), "w std", rtol=1e-8)
            close(ins["pearson_w_pt"], pearson(ref["w"], ref["pt_y"]), "pearson_w_pt")
            assert ins["w_guarded"] == int(ref["guarded"].sum())
            assert ins["w_above_one"] == int((ref["w"] > 1).sum())
            close(ins["w_unguarded"], ref["w"][ok].mean(), "w_unguarded")
            close(ins["w_std_unguarded"], ref["w"][ok].std(), "w_std_unguarded", rtol=1e-8)
            close(ins["pearson_w_pt_unguarded"], pearson(ref["w"][ok], ref["pt_y"][ok]),
                  "pearson_w_pt_unguarded")
            # docs/split.md#instance-rescaling-weights: w_n > 1 exactly when p^t_y > p̄^t_y, where unguarded
            assert np.array_equal(ref["w"][ok] > 1, ref["pt_y"][ok] > ref["pbar"])

            cells = [x for x in kt.records(doc, "confusion_teacher")
                     if x["checkpoint"] == name and x["tau"] == tau]
            assert len(cells) == C * C
            for x in cells:
                close(x["value"], m[x["i"], x["j"]], "confusion")
                assert x["samples_i"] == int((yk == x["i"]).sum())
        for table, mat in (("head_cosine_teacher", cos_t), ("head_cosine_student", cos_s)):
            cells = [x for x in kt.records(doc, table) if x["checkpoint"] == name]
            assert len(cells) == C * C and all("tau" not in x for x in cells)
            for x in cells:
                close(x["value"], mat[x["i"], x["j"]], table, atol=1e-14)


def check_w_summaries(ins, ref, quants, n):
    """The robust summaries of w_n in the instance table: the quantiles of the
    distributions table, the counts of w <= 0 and of floored denominators."""
    for i, lvl in enumerate(("p05", "p25", "p50", "p75", "p95")):
        close(ins["w_" + lvl], quants["w"][i], f"w_{lvl}", atol=1e-12)
    for i, lvl in ((1, "p25"), (2, "p50"), (3, "p75")):
        close(ins[f"w_{lvl}_unguarded"], quants["w_unguarded"][i], f"w_{lvl}_unguarded",
              atol=1e-12)
    assert ins["w_nonpositive"] == int((ref["w"] <= 0).sum())
    close(ins["w_nonpositive_share"], (ref["w"] <= 0).mean(), "w_nonpositive_share")
    assert ins["w_guarded"] == int(ref["guarded"].sum())
    close(ins["w_eps"], W_EPS, "w_eps")


def args(tp, sp, *extra):
    return ["split", "-t", tp, "-s", sp, "-T", ",".join(map(str, TAUS)), "--checkpoint", "all",
            "--block-rows", "37", *extra]


# ---- tests ---------------------------------------------------------------------

def test_every_value_against_numpy():
    d = kt.tmpdir()
    try:
        y, teacher, students = make_data()
        tp, sp = write_dumps(d, y, teacher, students)
        ps = os.path.join(d, "per-sample.h5")
        doc = kt.run_json(*args(tp, sp, "--per-sample", ps))
        assert doc["command"] == "split" and doc["inputs"] == [tp, sp]
        assert {r["checkpoint"] for r in kt.records(doc, "split")} == {"early", "final"}
        assert any("tau^2" in n for n in doc["notes"])
        check_document(doc, y, teacher, students)

        # The per-sample file, in teacher order, matches sample by sample.
        zt = teacher["z"].astype(np.float32).astype(np.float64)
        with h5py.File(ps, "r") as f:
            assert f.attrs["command"] == "split"
            assert list(f["tau"][...]) == TAUS
            assert np.array_equal(f["sample_ids"][...], np.arange(N) + 100)  # the teacher's ids
            assert np.array_equal(f["labels"][...], y)
            for name, s in students.items():
                g = f[f"students/0/checkpoints/{name}"]
                assert g.attrs["checkpoint"] == name and g.attrs["teacher_checkpoint"] == "final"
                for k, tau in enumerate(TAUS):
                    ref = reference(zt, s["z"], y, tau)
                    for field in ("kl", "tckd", "nckd", "pt_y", "ps_y", "gap", "omega", "eps",
                                  "nt_entropy", "w"):
                        got = g[field][:, k]
                        assert np.allclose(got, ref[field], rtol=RTOL, atol=1e-13), field
                    assert np.abs(g["identity_residual"][:, k]).max() < 1e-12
        assert not [p for p in os.listdir(d) if ".tmp-" in p], os.listdir(d)
    finally:
        shutil.rmtree(d)


def test_nonfinite_skip_and_error():
    d = kt.tmpdir()
    try:
        y, teacher, students = make_data(6)
        students["final"]["z"][123, 2] = np.nan
        tp, sp = write_dumps(d, y, teacher, students)
        st, out, err = kt.run(*args(tp, sp))
        assert st == 1 and out == ""
        kt.one_line_error(err, "kdlens split:", "/checkpoints/final/logits")
        doc = kt.run_json(*args(tp, sp, "--nonfinite", "skip"))
        # the NaN sample is dropped for the checkpoint that has it only
        assert one(doc, "split", checkpoint="early", tau=1.0)["skipped"] == 0
        check_document(doc, y, teacher, {"final": students["final"]}, skip=[123])
    finally:
        shutil.rmtree(d)


def test_certain_teacher_is_finite():
    """Teacher logits of magnitude 100: p^t_y == 1 in double at tau = 1."""
    d = kt.tmpdir()
    try:
        y, teacher, students = make_data(7)
        teacher["z"] = np.where(np.eye(C)[y] > 0, 100.0, -100.0)
        tp, sp = write_dumps(d, y, teacher, students)
        doc = kt.run_json(*args(tp, sp))
        for r in kt.records(doc, "split") + kt.records(doc, "universe"):
            for k, v in r.items():
                assert v is not None, (r["table"], k)
        one1 = one(doc, "split", checkpoint="final", tau=1.0)
        assert one1["pt_y"] == 1.0 and one1["identity_residual"] < 1e-12
        check_document(doc, y, teacher, students)
    finally:
        shutil.rmtree(d)


def test_w_negative_and_floored():
    """w_n of either sign, with floored denominators: a student more confident
    than its teacher on a third of the samples (w_n <= 0, many floored), as
    confident on a third, less on the rest.  The median, quartiles, the share
    of w_n <= 0 and the floored count against numpy, the quantiles within the
    stated bound of numpy's exact order statistics, and the output histogram
    covers the negative values."""
    d = kt.tmpdir()
    try:
        y, teacher, students = make_data(12)
        rng = np.random.default_rng(13)
        zt = teacher["z"].astype(np.float32).astype(np.float64)
        boost = np.select([np.arange(N) % 3 == 0, np.arange(N) % 3 == 1], [6.0, 0.0], -2.0)
        zs = zt + 0.3 * rng.standard_normal((N, C))
        zs[np.arange(N), y] += boost
        students = {"final": dict(step=10, z=zs, w=students["final"]["w"])}
        tp, sp = write_dumps(d, y, teacher, students)
        doc = kt.run_json(*args(tp, sp))
        check_document(doc, y, teacher, students)
        for tau in TAUS:
            ref = reference(zt, zs, y, tau)
            w, g = ref["w"], ref["guarded"]
            # the data has what the test is about
            assert (w <= 0).sum() > N // 10 and (g & (w <= 0)).any() and (~g & (w <= 0)).any()
            assert g.sum() > 10 and (w > 1).sum() > 10, (tau, g.sum())
            ins = one(doc, "instance", checkpoint="final", tau=tau)
            srt, srt_ok = np.sort(w), np.sort(w[~g])
            for lvl, q in ((0.25, "p25"), (0.5, "p50"), (0.75, "p75")):
                exact = srt[int(np.ceil(lvl * N)) - 1]
                assert abs(ins["w_" + q] - exact) <= W_REL * abs(exact) + W_ABS, (tau, q)
                exact = srt_ok[int(np.ceil(lvl * len(srt_ok))) - 1]
                got = ins[f"w_{q}_unguarded"]
                assert abs(got - exact) <= W_REL * abs(exact) + W_ABS, (tau, q)
            assert ins["w_nonpositive"] == int((w <= 0).sum())
            close(ins["w_nonpositive_share"], (w <= 0).mean(), "w_nonpositive_share")
            assert ins["w_guarded"] == int(g.sum())
            hist = [x for x in kt.records(doc, "histograms")
                    if x["quantity"] == "w" and x["tau"] == tau]
            assert sum(x["count"] for x in hist) == N
            # from the bin of the smallest value to that of the largest
            assert hist[0]["lo"] <= w.min() < hist[0]["hi"]
            assert hist[-1]["lo"] <= w.max() < hist[-1]["hi"]
            assert sum(x["count"] for x in hist if x["hi"] <= 0) == int((w < 0).sum()) - int(
                ((w < 0) & (w > -(2.0 ** W_LO))).sum())
    finally:
        shutil.rmtree(d)


def test_labels_from_student_and_formats():
    d = kt.tmpdir()
    try:
        y, teacher, students = make_data(8)
        tp, sp = write_dumps(d, y, teacher, students, t_labels=False)
        doc = kt.run_json(*args(tp, sp))
        check_document(doc, y, teacher, students)
        # csv carries the long tables, the terminal table does not
        out = os.path.join(d, "csv")
        kt.run(*args(tp, sp, "-o", out), check=0)
        assert {"confusion_teacher.csv", "histograms.csv"} <= set(os.listdir(out))
        _, out, _ = kt.run(*args(tp, sp), check=0)
        assert "Teacher soft confusion" not in out and "--format json or csv" in out
        assert "Explicit vs implicit" in out
        for fmt in ("md", "tex"):
            kt.run(*args(tp, sp, "--format", fmt), check=0)
    finally:
        shutil.rmtree(d)


def test_without_heads():
    """Dumps without a head: everything else is reported, head values are null."""
    d = kt.tmpdir()
    try:
        y, teacher, students = make_data(10)
        tp, sp = write_dumps(d, y, teacher, students)
        with h5py.File(sp, "a") as f:
            for name in students:
                del f[f"checkpoints/{name}/head"]
        doc = kt.run_json(*args(tp, sp))
        for r in kt.records(doc, "domain"):
            assert r["pearson_heads"] is None and r["cka_heads"] is None
            assert r["pearson_confusion_student"] is None and r["d_student"] is None
            assert r["pearson_confusion_teacher"] is not None and r["d_teacher"] == DT
        assert not kt.records(doc, "head_cosine_student")
        assert len(kt.records(doc, "head_cosine_teacher")) == 2 * C * C
        assert any("no /checkpoints/final/head/weight" in n for n in doc["notes"])
        ref = reference(teacher["z"].astype(np.float32).astype(np.float64), students["final"]["z"],
                        y, 4.0)
        close(one(doc, "split", checkpoint="final", tau=4.0)["kl"], ref["kl"].mean(), "kl")
    finally:
        shutil.rmtree(d)


def test_bad_inputs():
    d = kt.tmpdir()
    try:
        y, teacher, students = make_data(9)
        os.mkdir(os.path.join(d, "none"))
        tp, sp = write_dumps(os.path.join(d, "none"), y, teacher, students, t_labels=False,
                             s_labels=False)
        st, out, err = kt.run(*args(tp, sp))
        assert st == 1 and out == ""
        kt.one_line_error(err, "kdlens split:", "/labels", "found none")

        os.mkdir(os.path.join(d, "disagree"))
        tp, sp = write_dumps(os.path.join(d, "disagree"), y, teacher, students, s_label_edit=77)
        st, out, err = kt.run(*args(tp, sp))
        assert st == 1 and out == ""
        kt.one_line_error(err, "kdlens split:", "/labels", "(row 77) for that id")

        os.mkdir(os.path.join(d, "ok"))
        tp, sp = write_dumps(os.path.join(d, "ok"), y, teacher, students)
        for bad, needle in ((["split", "-s", sp], "teacher dump is required"),
                            (["split", "-t", tp], "student dump is required"),
                            (["split", "-t", tp, "-s", sp, "-c", "nope"], "no checkpoint 'nope'"),
                            (["split", "-t", tp, "-s", sp, "--bins", "7"], "divisor of 1000"),
                            (["split", "-t", tp, "-s", sp, "--lambda", "2"], "--lambda"),
                            (["split", "-t", tp, "-s", sp, "-T", "0"], "--temperature"),
                            (["split", "-t", tp, "-s", sp, "extra"], "at most 0 arguments")):
            st, out, err = kt.run(*bad)
            assert st == 2 and out == "", (bad, st, err)
            assert needle in err, (needle, err)

        ps = os.path.join(d, "no-such-dir", "out.h5")
        st, out, err = kt.run(*args(tp, sp, "--per-sample", ps))
        assert st == 1 and out == ""
        kt.one_line_error(err, "kdlens split:", ps)

        with h5py.File(sp, "a") as f:   # a student head of the wrong class count
            del f["checkpoints/final/head/weight"]
            f["checkpoints/final/head/weight"] = np.zeros((C + 1, DS))
        st, out, err = kt.run(*args(tp, sp))
        assert st == 1 and out == "", err
        kt.one_line_error(err, "head/weight")
    finally:
        shutil.rmtree(d)


# ---- the domain level at large C ------------------------------------------------

def write_plain(d, y, zt, zs, wt=None, ws=None, dtype=np.float64):
    """A teacher and a student of one checkpoint each, heads when given."""
    paths = []
    for role, z, w in (("teacher", zt, wt), ("student", zs, ws)):
        p = os.path.join(d, role + ".h5")
        with h5py.File(p, "w") as f:
            f.attrs["kdlens_format"] = 1
            f.attrs["role"] = role
            f["labels"] = y.astype(np.int64)
            g = f.create_group("checkpoints/final")
            g.attrs["step"] = np.int64(1)
            g["logits"] = z.astype(dtype)
            if w is not None:   # the schema's head: weight, bias and its input layer
                g["head/weight"] = w
                g["head/bias"] = np.zeros(len(w))
                g["head"].attrs["input"] = "pen"
                g["features/pen"] = np.zeros((len(y), w.shape[1]))
                g["features/pen"].attrs["depth"] = 1
        paths.append(p)
    return paths


def top_pairs(pt, y, c, k):
    """The k ordered pairs (i, j), i != j, n_i > 0, of the largest soft count
    A_ij = sum of p^t_j over the samples of class i; ties by i, then j."""
    a = np.zeros((c, c))
    np.add.at(a, y, pt)
    n = np.bincount(y, minlength=c)
    i, j = np.meshgrid(np.arange(c), np.arange(c), indexing="ij")
    ok = (i != j) & (n[:, None] > 0)
    order = np.lexsort((j[ok], i[ok], -a[ok]))[:k]
    return [(int(i[ok][q]), int(j[ok][q]), a[ok][q], a[ok][q] / n[i[ok][q]]) for q in order]


def test_blocked_domain_against_numpy():
    """C = 60 above --domain-max-c 40: the domain level in blocks, without any
    C x C table; its Pearson and CKA values against numpy (1e-9) and the full
    computation (1e-10); the confused pairs exactly numpy's; --domain off."""
    d = kt.tmpdir()
    c, n, dt, ds, k = 60, 1500, 16, 3, 25
    rng = np.random.default_rng(21)
    y = rng.integers(0, c, n)
    y[y == 7] = 8                          # class 7 has no sample
    wt = rng.standard_normal((c, dt)) + np.eye(1, dt, 0) * 1.2   # cosines of mean > 0
    ws = rng.standard_normal((c, ds))
    zt = rng.standard_normal((n, dt)) @ wt.T + 3.0 * np.eye(c)[y]
    zs = 0.6 * zt + rng.standard_normal((n, c))
    tp, sp = write_plain(d, y, zt, zs, wt, ws)
    base = ["split", "-t", tp, "-s", sp, "-T", "1,4", "--block-rows", "97"]
    blocked = kt.run_json(*base, "--domain-max-c", "40", "--top-pairs", str(k))
    full = kt.run_json(*base, "--domain", "full")
    forced = kt.run_json(*base, "--domain", "blocked", "--top-pairs", str(k))
    assert not kt.records(blocked, "confusion_teacher")
    assert not kt.records(blocked, "head_cosine_teacher")
    assert len(kt.records(full, "confusion_teacher")) == 2 * c * c
    assert not kt.records(full, "confused_pairs")
    assert any("without any C x C matrix (C = 60, C above --domain-max-c)" in x
               for x in blocked["notes"])
    assert any("--domain blocked" in x for x in forced["notes"])
    assert any("confused_pairs: the 25 ordered class pairs" in x for x in blocked["notes"])
    cos_t, cos_s = cosines(wt), cosines(ws)
    upper = np.triu_indices(c, 1)
    present = np.bincount(y, minlength=c) > 0
    keep = present[upper[0]] & present[upper[1]]
    for tau in (1.0, 4.0):
        pt = np.exp(log_softmax(zt / tau))
        m = np.array([pt[y == i].mean(0) if (y == i).any() else np.full(c, np.nan)
                      for i in range(c)])
        sym = (0.5 * (m + m.T))[upper][keep]
        for doc in (blocked, forced):
            dm = one(doc, "domain", tau=tau)
            fm = one(full, "domain", tau=tau)
            assert dm["confusion_pairs"] == fm["confusion_pairs"] == int(keep.sum())
            for key, ref in (("pearson_confusion_teacher", pearson(sym, cos_t[upper][keep])),
                             ("pearson_confusion_student", pearson(sym, cos_s[upper][keep])),
                             ("pearson_heads", pearson(cos_t[upper], cos_s[upper])),
                             ("cka_heads", cka_feature(wt, ws))):
                close(dm[key], ref, f"blocked {key} tau={tau}")
                assert abs(dm[key] - fm[key]) <= 1e-10, (key, dm[key], fm[key])
            got = sorted((r for r in kt.records(doc, "confused_pairs") if r["tau"] == tau),
                         key=lambda r: r["rank"])
            ref = top_pairs(pt, y, c, k)
            assert [(r["i"], r["j"]) for r in got] == [(i, j) for i, j, _, _ in ref]
            assert [r["rank"] for r in got] == list(range(1, k + 1))
            for r, (i, j, mass, conf) in zip(got, ref):
                close(r["mass"], mass, "mass", rtol=1e-12)
                close(r["confusion"], conf, "confusion", rtol=1e-12)
                close(r["confusion"], m[i, j], "confusion = M_ij", rtol=1e-12)
                assert r["samples_i"] == int((y == i).sum())
    # The other tables do not depend on the mode.
    for table in ("split", "universe", "instance", "distributions"):
        assert kt.records(blocked, table) == kt.records(full, table), table

    off = kt.run_json(*base, "--domain", "off")
    assert not kt.records(off, "domain") and not kt.records(off, "confused_pairs")
    assert any("domain level off" in x for x in off["notes"])
    assert kt.records(off, "split") == kt.records(full, "split")
    _, out, _ = kt.run(*base, "--domain-max-c", "40", check=0)
    assert "most confused class pairs" in out and "histograms: --format json or csv" in out
    for bad, needle in ((["--domain", "blocks"], "--domain: unknown domain mode 'blocks'"),
                        (["--top-pairs", "-1"], "--top-pairs"),
                        (["--domain-max-c", "x"], "--domain-max-c")):
        st, out, err = kt.run(*base, *bad)
        assert st == 2 and out == "" and needle in err, (bad, st, err)


def test_domain_over_budget_is_refused():
    """Before reading anything, a domain level that cannot fit a 4 GiB budget
    (--memory 4G, so that the test does not depend on this machine's memory)
    is exit 1 with one line naming split, the size asked and the option that
    lowers it; --domain off runs."""
    d = kt.tmpdir()
    for c, extra, needles in (
            (40000, ["--domain", "full"],
             ["split needs", "GiB for the C x C matrices", "C = 40000",
              "budget of 4.00 GiB", "--domain blocked or --domain off"]),
            (152000, [], ["split needs at least", "in blocks of classes", "C = 152000",
                          "at most 8 passes", "--domain off lowers it"])):
        rng = np.random.default_rng(c)
        y = np.array([0, 1, c - 1, 5])
        tp, sp = write_plain(d, y, rng.standard_normal((4, c)), rng.standard_normal((4, c)),
                             dtype=np.float32)
        st, out, err = kt.run("split", "-t", tp, "-s", sp, "--memory", "4G", *extra)
        assert st == 1 and out == "", (st, err)
        kt.one_line_error(err, "kdlens split:", *needles)
        doc = kt.run_json("split", "-t", tp, "-s", sp, "--domain", "off")
        assert one(doc, "split", tau=4.0)["samples"] == 4


if __name__ == "__main__":
    kt.main(globals())
