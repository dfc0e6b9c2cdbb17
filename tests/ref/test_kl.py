#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""`kdlens kl` against an independent numpy float64 computation (docs/kl.md).

Dumps are written here with h5py; every number of the "kl" and "kl_features"
tables (and of --per-sample) is recomputed in numpy and compared with relative
error <= 1e-9.  The projector is numpy's lstsq on [h_s, 1] (an SVD of the data,
not kdlens's normal equations), the KL-visible share uses pinv(W) W (not an
SVD basis), the KL is the textbook sum p_t (log p_t - log p_s), ranks are
average ranks by sorting.
"""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

RTOL = 1e-9
NAMES = ["kl", "logit_fisher", "logit_centered_l2", "logit_l2", "prob_l2", "feature_l2",
         "feature_head", "gradient_fisher", "gradient_empirical", "gradient_logit_l2"]
SOURCE = {"kl": "logits", "logit_fisher": "logits", "logit_centered_l2": "logits",
          "logit_l2": "logits", "prob_l2": "probabilities", "feature_l2": "features",
          "feature_head": "features", "gradient_fisher": "gradients",
          "gradient_empirical": "gradients", "gradient_logit_l2": "gradients"}


# ---- writing dumps -------------------------------------------------------------

def make_model(rng, n, c, d, checkpoints, teacher=None, noise=1.0):
    """Per checkpoint: features, head, logits and CE gradients; a student
    (teacher given) has features and logits related to the teacher's."""
    labels = rng.integers(0, c, n)
    out = {}
    for ck in checkpoints:
        h = rng.standard_normal((n, d)) * 1.3 + 0.4
        if teacher is not None:
            t = teacher[ck if ck in teacher else list(teacher)[-1]]
            k = min(d, t["h"].shape[1])
            h[:, :k] += 1.5 * t["h"][:, :k]
        w = rng.standard_normal((c, d)) * 0.6
        b = rng.standard_normal(c) * 0.3
        z = h @ w.T + b
        if teacher is not None:
            z = 0.6 * z + t["z"] + noise * rng.standard_normal((n, c))
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        gz = p - np.eye(c)[labels]
        out[ck] = dict(h=h, w=w, b=b, z=z, gz=gz, gh=gz @ w)
    return out, labels


def write_dump(path, role, model, labels, order=None, ids=True, drop=(), dtype="f8",
               head_input="pen"):
    n = len(labels)
    order = np.arange(n) if order is None else order
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = role
        f.attrs["model"] = role
        f["labels"] = labels[order].astype(np.int32)
        if ids:
            f["sample_ids"] = (5000 + np.arange(n))[order].astype(np.int64)
        for step, (ck, m) in enumerate(model.items()):
            g = f.create_group("checkpoints/" + ck)
            g.attrs["step"] = np.int64(10 * step)
            g.create_dataset("logits", data=m["z"][order].astype(dtype))
            d = g.create_dataset("features/pen", data=m["h"][order].astype(dtype))
            d.attrs["depth"] = 3
            d = g.create_dataset("features/early", data=m["h"][order, :2].astype(dtype))
            d.attrs["depth"] = 1
            if "grad_logits" not in drop:
                g.create_dataset("gradients/logits", data=m["gz"][order])
            if "grad_features" not in drop:
                g.create_dataset("gradients/features/pen", data=m["gh"][order])
            if "head" not in drop:
                g.create_dataset("head/weight", data=m["w"])
                g.create_dataset("head/bias", data=m["b"])
            if head_input is not None:
                g.require_group("head").attrs["input"] = head_input


# ---- numpy reference -----------------------------------------------------------

def log_softmax(x):
    m = x.max(1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(1, keepdims=True))


def per_sample(t, s, tau, proj, want):
    """Every value of docs/kl.md per sample, in float64."""
    c = t["z"].shape[1]
    lpt, lps = log_softmax(t["z"] / tau), log_softmax(s["z"] / tau)
    pt, ps = np.exp(lpt), np.exp(lps)
    d = s["z"] - t["z"]
    v = {"kl": tau ** 2 * (pt * (lpt - lps)).sum(1)}
    mu = (pt * d).sum(1, keepdims=True)
    v["logit_fisher"] = 0.5 * (pt * (d - mu) ** 2).sum(1)
    v["logit_centered_l2"] = ((d - d.mean(1, keepdims=True)) ** 2).sum(1) / (2 * c)
    v["logit_l2"] = (d ** 2).sum(1) / (2 * c)
    v["prob_l2"] = tau ** 2 * ((ps - pt) ** 2).sum(1) / 2
    if "features" in want:
        e = (s["h"] @ proj[0] + proj[1] if proj is not None else s["h"]) - t["h"]
        v["feature_l2"] = (e ** 2).sum(1) / (2 * t["h"].shape[1])
        if "head" in want:
            u = e @ t["w"].T
            v["feature_head"] = (u ** 2).sum(1) / (2 * c)
            um = (pt * u).sum(1, keepdims=True)
            v["gradient_fisher"] = 0.5 * (pt * (u - um) ** 2).sum(1)
        if "grad_features" in want:
            v["gradient_empirical"] = 0.5 * (t["gh"] * e).sum(1) ** 2
    if "grad_logits" in want:
        v["gradient_logit_l2"] = 0.5 * ((s["gz"] - t["gz"]) ** 2).sum(1)
    return v


def ranks(x):
    """Average ranks, 1-based (ties share their mean rank)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i + 1
        while j < len(x) and sx[j] == sx[i]:
            j += 1
        r[order[i:j]] = 0.5 * (i + 1 + j)
        i = j
    return r


def fidelity(a, k, sub=None):
    sa, sk = (a, k) if sub is None else (a[sub], k[sub])
    return {"mean": a.mean(), "ratio": a.mean() / k.mean(),
            "pearson": np.corrcoef(a, k)[0, 1],
            "spearman": np.corrcoef(ranks(sa), ranks(sk))[0, 1],
            "relerr": np.abs(a - k).mean() / k.mean()}


def fit_projector(hs, ht):
    coef, *_ = np.linalg.lstsq(np.c_[hs, np.ones(len(hs))], ht, rcond=None)
    return coef[:-1], coef[-1]


def dim(name, c, d_t):
    return {"feature_l2": d_t, "feature_head": d_t, "gradient_fisher": d_t + c,
            "gradient_empirical": 2 * d_t}.get(name, c)


M64 = (1 << 64) - 1


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)


def reservoir(n, cap, seed):
    """The documented subsample: the cap samples of smallest
    (mix64(mix64(i + golden) ^ seed), i)."""
    keys = [(mix64(mix64((i + 0x9e3779b97f4a7c15) & M64) ^ seed), i) for i in range(n)]
    return np.array(sorted(i for _, i in sorted(keys)[:cap]))


def check_doc(doc, tm, sm, taus, cks, want, student_path, proj_fit, sub=None, rtol=RTOL,
              present=None):
    """Every row of kl and kl_features against numpy."""
    rows = [r for r in kt.records(doc, "kl") if r["student"] == student_path]
    frows = [r for r in kt.records(doc, "kl_features") if r["student"] == student_path]
    assert len(rows) == len(cks) * len(taus) * len(NAMES), len(rows)
    assert len(frows) == len(cks)
    it = iter(rows)
    for (sck, tck), fr in zip(cks, frows):
        t, s = tm[tck], sm[sck]
        c, d_t, d_s = t["z"].shape[1], t["h"].shape[1], s["h"].shape[1]
        proj = fit_projector(s["h"], t["h"]) if proj_fit and d_s != d_t else None
        for tau in taus:
            vals = per_sample(t, s, tau, proj, want)
            for name in NAMES:
                r = next(it)
                what = f"{sck}/{tau}/{name}"
                assert (r["checkpoint"], r["teacher_checkpoint"], r["approximation"],
                        r["source"]) == (sck, tck, name, SOURCE[name]), (r, what)
                kt.assert_close(r["tau"], tau, 0, 0, what)
                avail = name in vals
                assert r["available"] == avail, what
                if not avail:
                    assert "needs" in r and "mean" not in r, r
                    if present is not None:
                        for needle in present.get(name, ()):
                            assert needle in r["needs"], (needle, r["needs"])
                    continue
                assert r["dim"] == dim(name, c, d_t), (r["dim"], what)
                assert r["samples"] == len(vals["kl"])
                ref = fidelity(vals[name], vals["kl"], sub)
                for key, v in ref.items():
                    kt.assert_close(r[key], v, rtol, 1e-12, f"{what}.{key}")
        if "features" in want:
            e = (s["h"] @ proj[0] + proj[1] if proj is not None else s["h"]) - t["h"]
            sst = ((t["h"] - t["h"].mean(0)) ** 2).sum()
            assert fr["available"] and fr["d_t"] == d_t and fr["d_s"] == d_s
            assert fr["projector"] == ("least_squares" if proj is not None else "identity")
            kt.assert_close(fr["r2"], 1 - (e ** 2).sum() / sst, rtol, 1e-12, "r2")
            kt.assert_close(fr["mean_sq_mismatch"], (e ** 2).sum(1).mean(), rtol, 0, "msq")
            if "head" in want:
                w = t["w"]
                proj_row = np.linalg.pinv(w) @ w
                share = ((e @ proj_row) ** 2).sum() / (e ** 2).sum()
                assert fr["head_rank"] == np.linalg.matrix_rank(w)
                kt.assert_close(fr["kl_visible_share"], share, rtol, 1e-12, "share")


# ---- tests -----------------------------------------------------------------------

def setup(n=300, c=7, d_t=6, d_s=6, t_cks=("final",), s_cks=("init", "final"), seed=1,
          **kw):
    rng = np.random.default_rng(seed)
    tm, tl = make_model(rng, n, c, d_t, t_cks)
    sm, _ = make_model(rng, n, c, d_s, s_cks, teacher=tm)
    return tm, sm, tl


ALL = {"features", "head", "grad_features", "grad_logits"}


def test_equal_widths_every_value():
    tm, sm, labels = setup()
    d = kt.tmpdir()
    tp, sp = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
    write_dump(tp, "teacher", tm, labels)
    perm = np.random.default_rng(3).permutation(len(labels))
    write_dump(sp, "student", sm, labels, order=perm)  # joined on /sample_ids
    taus = [0.5, 1.0, 4.0, 10.0]
    doc = kt.run_json("kl", "-t", tp, "-s", sp, "-T", "0.5,1,4,10", "--checkpoint", "all")
    assert doc["command"] == "kl" and doc["inputs"] == [tp, sp]
    check_doc(doc, tm, sm, taus, [("init", "final"), ("final", "final")], ALL, sp, True)


def test_different_widths_fit_the_projector():
    for d_s in (4, 11):
        tm, sm, labels = setup(d_t=9, d_s=d_s, c=6, seed=2 + d_s)
        d = kt.tmpdir()
        tp, sp = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
        write_dump(tp, "teacher", tm, labels, dtype="f4")
        write_dump(sp, "student", sm, labels, ids=False)
        # The reader upcasts float32 to double exactly, as numpy does.
        tm32 = {k: dict(v, z=v["z"].astype(np.float32).astype(np.float64),
                        h=v["h"].astype(np.float32).astype(np.float64)) for k, v in tm.items()}
        doc = kt.run_json("kl", "-t", tp, "-s", sp, "-T", "2,8")
        check_doc(doc, tm32, sm, [2.0, 8.0], [("final", "final")], ALL, sp, True)
        fr = kt.records(doc, "kl_features")[0]
        assert fr["projector_rank"] == d_s


def rchar():
    """Bytes read by this process and the children it has waited for."""
    with open("/proc/self/io") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("rchar:"))


def test_projector_fit_reads_only_the_features():
    # C-wide logits and gradients, narrow features: the fit pass must not
    # read the C-wide datasets (at C = 32,000 that doubled kl's reading).
    tm, sm, labels = setup(n=1500, c=1200, d_t=9, d_s=4, s_cks=("final",), seed=21)
    d = kt.tmpdir()
    tp, sp = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
    write_dump(tp, "teacher", tm, labels)
    write_dump(sp, "student", sm, labels)
    one_pass = os.path.getsize(tp) + os.path.getsize(sp)  # more than one pass reads
    before = rchar()
    doc = kt.run_json("kl", "-t", tp, "-s", sp)
    read = rchar() - before
    assert read < 1.2 * one_pass, (read, one_pass)
    check_doc(doc, tm, sm, [4.0], [("final", "final")], ALL, sp, True)
    assert kt.records(doc, "kl_features")[0]["projector_rank"] == 4
    # Under --nonfinite skip the fit stays in the shared stream (two passes).
    before = rchar()
    assert kt.run_json("kl", "-t", tp, "-s", sp, "--nonfinite", "skip") == doc
    assert rchar() - before > 1.5 * one_pass


def test_teacher_checkpoint_pins_the_partner():
    tm, sm, labels = setup(t_cks=("init", "final"), s_cks=("init", "middle", "final"), seed=11)
    d = kt.tmpdir()
    tp, sp = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
    write_dump(tp, "teacher", tm, labels)
    write_dump(sp, "student", sm, labels)
    # Default: a trained teacher, its last checkpoint for every student checkpoint.
    doc = kt.run_json("kl", "-t", tp, "-s", sp, "-c", "all", "-T", "2")
    check_doc(doc, tm, sm, [2.0], [("init", "final"), ("middle", "final"), ("final", "final")],
              ALL, sp, True)
    # "same": the same name, else the teacher's last.
    doc = kt.run_json("kl", "-t", tp, "-s", sp, "-c", "all", "-T", "2",
                      "--teacher-checkpoint", "same")
    check_doc(doc, tm, sm, [2.0], [("init", "init"), ("middle", "final"), ("final", "final")],
              ALL, sp, True)
    doc = kt.run_json("kl", "-t", tp, "-s", sp, "-c", "all", "-T", "2",
                      "--teacher-checkpoint", "init")
    check_doc(doc, tm, sm, [2.0], [("init", "init"), ("middle", "init"), ("final", "init")],
              ALL, sp, True)
    st, o, err = kt.run("kl", "-t", tp, "-s", sp, "--teacher-checkpoint", "nope")
    assert st == 2 and o == "" and "no checkpoint 'nope'" in err and tp in err, err


def test_unavailable_sources_are_listed_with_what_they_need():
    tm, sm, labels = setup(seed=5)
    d = kt.tmpdir()
    tp, sp = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
    write_dump(tp, "teacher", tm, labels, drop=("grad_features",))
    write_dump(sp, "student", sm, labels, drop=("grad_logits",))
    doc = kt.run_json("kl", "-t", tp, "-s", sp, "-T", "3", "-c", "init")
    present = {"gradient_empirical": [f"'{tp}': /checkpoints/final/gradients/features/pen"],
               "gradient_logit_l2": [f"'{sp}': /checkpoints/init/gradients/logits"]}
    check_doc(doc, tm, sm, [3.0], [("init", "final")], {"features", "head"}, sp, True,
              present=present)
    # The teacher's logit gradients are there: only the student's are named.
    r = [r for r in kt.records(doc, "kl") if r["approximation"] == "gradient_logit_l2"][0]
    assert tp not in r["needs"]

    # A teacher without a head (the schema puts the input attribute on the
    # head group, so its head-input layer is unknown too).
    write_dump(tp, "teacher", tm, labels, drop=("head",), head_input=None)
    write_dump(sp, "student", sm, labels)
    doc = kt.run_json("kl", "-t", tp, "-s", sp, "-T", "3", "-c", "init")
    present = {n: [f"'{tp}': /checkpoints/final/head attr input"]
               for n in ("feature_l2", "feature_head", "gradient_fisher", "gradient_empirical")}
    check_doc(doc, tm, sm, [3.0], [("init", "final")], {"grad_logits"}, sp, True,
              present=present)

    # A student without a head: every feature value is unavailable.
    write_dump(tp, "teacher", tm, labels)
    write_dump(sp, "student", sm, labels, drop=("head",), head_input=None)
    doc = kt.run_json("kl", "-t", tp, "-s", sp, "-T", "3")
    present = {n: [f"'{sp}': /checkpoints/final/head attr input"]
               for n in ("feature_l2", "feature_head", "gradient_fisher", "gradient_empirical")}
    check_doc(doc, tm, sm, [3.0], [("final", "final")], {"grad_logits"}, sp, True,
              present=present)
    fr = kt.records(doc, "kl_features")[0]
    assert fr["available"] is False and "needs" in fr


def test_several_students_and_the_spearman_subsample():
    tm, sm, labels = setup(n=400, seed=6)
    rng = np.random.default_rng(60)
    sm2, _ = make_model(rng, 400, 7, 6, ("final",), teacher=tm, noise=0.3)
    d = kt.tmpdir()
    tp, s1, s2 = (os.path.join(d, x) for x in ("t.h5", "s1.h5", "s2.h5"))
    write_dump(tp, "teacher", tm, labels)
    write_dump(s1, "student", sm, labels)
    write_dump(s2, "student", sm2, labels)
    doc = kt.run_json("kl", "-t", tp, "-s", s1, "-s", s2, "--spearman-samples", "64",
                      "--seed", "9")
    sub = reservoir(400, 64, 9)
    check_doc(doc, tm, sm, [4.0], [("final", "final")], ALL, s1, True, sub=sub)
    check_doc(doc, tm, sm2, [4.0], [("final", "final")], ALL, s2, True, sub=sub)
    assert all(r["spearman_samples"] == 64 for r in kt.records(doc, "kl") if r["available"])
    assert any("subsample of 64 of 400" in n for n in doc["notes"]), doc["notes"]


def test_per_sample_file():
    tm, sm, labels = setup(d_s=5, d_t=6, seed=7)
    d = kt.tmpdir()
    tp, sp, out = (os.path.join(d, x) for x in ("t.h5", "s.h5", "per.h5"))
    write_dump(tp, "teacher", tm, labels)
    perm = np.random.default_rng(8).permutation(len(labels))
    write_dump(sp, "student", sm, labels, order=perm)
    kt.run("kl", "-t", tp, "-s", sp, "-T", "1,4", "-c", "all", "--per-sample", out,
           "--format", "json", check=0)
    assert not [x for x in os.listdir(d) if ".tmp-" in x]
    with h5py.File(out, "r") as f:
        assert f.attrs["command"] == "kl" and f["students/0"].attrs["student"] == sp
        assert list(f["tau"][...]) == [1.0, 4.0]
        for sck in ("init", "final"):
            g = f[f"students/0/checkpoints/{sck}"]
            assert g.attrs["teacher_checkpoint"] == "final" and set(g) == set(NAMES)
            proj = fit_projector(sm[sck]["h"], tm["final"]["h"])
            for it, tau in enumerate((1.0, 4.0)):
                ref = per_sample(tm["final"], sm[sck], tau, proj, ALL)
                for name in NAMES:
                    np.testing.assert_allclose(g[name][:, it], ref[name], rtol=RTOL, atol=1e-13)


def test_nonfinite_error_and_skip():
    tm, sm, labels = setup(seed=8)
    d = kt.tmpdir()
    tp, sp, out = (os.path.join(d, x) for x in ("t.h5", "s.h5", "per.h5"))
    write_dump(tp, "teacher", tm, labels)
    bad = [17, 31, 32, 200, 299]  # inside, at both ends of 16-row blocks, the last
    sm["final"]["z"][bad, [2, 0, 5, 0, 1]] = np.nan
    write_dump(sp, "student", sm, labels)
    st, o, err = kt.run("kl", "-t", tp, "-s", sp)
    assert st == 1 and o == ""
    kt.one_line_error(err, "kdlens kl:", "/checkpoints/final/logits", "17")
    doc = kt.run_json("kl", "-t", tp, "-s", sp, "--nonfinite", "skip", "--per-sample", out,
                      "--block-rows", "16")
    keep = np.setdiff1d(np.arange(len(labels)), bad)
    tk = {"final": {k: (v[keep] if v.ndim == 2 and v.shape[0] == len(labels) else v)
                    for k, v in tm["final"].items()}}
    sk = {"final": {k: (v[keep] if v.ndim == 2 and v.shape[0] == len(labels) else v)
                    for k, v in sm["final"].items()}}
    check_doc(doc, tk, sk, [4.0], [("final", "final")], ALL, sp, True)
    assert any("5 samples with NaN/Inf skipped" in n for n in doc["notes"]), doc["notes"]
    ref = per_sample(tk["final"], sk["final"], 4.0, None, ALL)
    with h5py.File(out, "r") as f:
        for name in NAMES:
            v = f[f"students/0/checkpoints/final/{name}"][:, 0]
            assert np.isnan(v[bad]).all(), name
            np.testing.assert_allclose(v[keep], ref[name], rtol=RTOL, atol=1e-13)


def test_bad_inputs():
    tm, sm, labels = setup(n=50, seed=9)
    d = kt.tmpdir()
    tp, sp = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
    write_dump(tp, "teacher", tm, labels)
    write_dump(sp, "student", sm, labels, ids=False)

    missing = os.path.join(d, "nope.h5")
    st, o, err = kt.run("kl", "-t", missing, "-s", sp)
    assert st == 1 and o == ""
    kt.one_line_error(err, "kdlens kl:", missing)

    # Mismatched N (no sample ids to join on).
    small = {k: {n: (v[:-5] if v.ndim == 2 and v.shape[0] == 50 else v) for n, v in m.items()}
             for k, m in sm.items()}
    bad = os.path.join(d, "short.h5")
    write_dump(bad, "student", small, labels[:-5], ids=False)
    write_dump(tp.replace("t.h5", "t-noid.h5"), "teacher", tm, labels, ids=False)
    st, o, err = kt.run("kl", "-t", tp.replace("t.h5", "t-noid.h5"), "-s", bad)
    assert st == 1 and o == ""
    kt.one_line_error(err, "kdlens kl:", "45")

    # Different class counts.
    rng = np.random.default_rng(90)
    other, _ = make_model(rng, 50, 8, 6, ("final",))
    bad = os.path.join(d, "classes.h5")
    write_dump(bad, "student", other, labels, ids=False)
    st, o, err = kt.run("kl", "-t", tp, "-s", bad)
    assert st == 1 and o == ""
    kt.one_line_error(err, "kdlens kl:", "classes", bad)

    # A head weight that does not fit the head-input width.
    bad = os.path.join(d, "head.h5")
    write_dump(bad, "teacher", tm, labels)
    with h5py.File(bad, "a") as f:
        del f["checkpoints/final/head/weight"]
        f["checkpoints/final/head/weight"] = np.zeros((7, 5))
    st, o, err = kt.run("kl", "-t", bad, "-s", sp)
    assert st == 1 and o == ""
    kt.one_line_error(err, "kdlens kl:", "head/weight")

    # The per-sample file cannot be created: nothing is written, exit 1.
    nodir = os.path.join(d, "no-such-dir", "per.h5")
    st, o, err = kt.run("kl", "-t", tp, "-s", sp, "--per-sample", nodir)
    assert st == 1 and o == "" and not os.path.exists(os.path.dirname(nodir))
    kt.one_line_error(err, "kdlens kl:", "no-such-dir")

    # Usage errors: exit 2.
    for args, needle in ((("-t", tp), "student"), (("-s", sp), "teacher"),
                         (("-t", tp, "-s", sp, "-T", "0"), "--temperature"),
                         (("-t", tp, "-s", sp, "-c", "nope"), "no checkpoint 'nope'"),
                         (("-t", tp, "-s", sp, "--spearman-samples", "x"), "--spearman-samples"),
                         (("-t", tp, "-s", sp, "extra"), "argument")):
        st, o, err = kt.run("kl", *args)
        assert st == 2 and o == "", (args, st, err)
        assert needle in err, (needle, err)


def test_every_format_renders():
    tm, sm, labels = setup(n=40, seed=10)
    d = kt.tmpdir()
    tp, sp = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
    write_dump(tp, "teacher", tm, labels)
    write_dump(sp, "student", sm, labels)
    for fmt in ("table", "md", "csv", "tex"):
        table = ("--table", "kl") if fmt == "csv" else ()  # CSV on stdout is one table
        _, out, err = kt.run("kl", "-t", tp, "-s", sp, "--format", fmt, *table, check=0)
        assert "gradient_empirical" in out.replace("\\_", "_") and err == "", fmt


if __name__ == "__main__":
    kt.main(globals())
