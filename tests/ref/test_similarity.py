#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens cka --measure against numpy float64 re-expressions of the authors' reference
code: svcca's cca_core (get_cca_similarity / compute_ccas), its SVCCA recipe and
pwcca.compute_pwcca (Raghu et al. 2017, Morcos et al. 2018), and anatome's
orthogonal_procrustes_distance with netrep's angular form (Ding et al. 2021, Williams
et al. 2021), on dumps with a rank-deficient layer, unequal widths and N < D (Gram
space, where svcca's cca_core itself refuses: it asserts fewer neurons than samples).

Where kdlens states a choice (docs/cka.md#cca-svcca-pwcca-and-procrustes), the
re-expression makes the same one: the rank cut is pinv's rcond = 1e-10 (relative) and
only the min(r_a, r_b) leading correlations count; PWCCA's directions are the canonical
variates of the centred layer (Morcos et al.'s h_i), which compute_pwcca forms without
the whitening S^(-1/2); SVCCA's share counts variance (squared singular values).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import kdltest  # noqa: E402
from kdltest import assert_close, records, run, run_json  # noqa: E402
from refcommon import write_dump  # noqa: E402

TMP = kdltest.tmpdir()
RTOL = 1e-10
TOL = 1e-8


# ---- numpy references (acts are [neurons, datapoints], as svcca takes them) ----------

def positivedef_matrix_sqrt(a):
    w, v = np.linalg.eigh(a)
    return v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T


def rank(s):
    w = np.linalg.eigvalsh(s)
    return int(np.sum(w > RTOL * w.max())) if w.max() > 0 else 0


def cca_core(acts1, acts2):
    """get_cca_similarity + compute_ccas, epsilon 0: np.cov, the max-abs rescaling,
    pinv (rcond = the rank cut), eigh square roots, SVD."""
    numx = acts1.shape[0]
    cov = np.cov(acts1, acts2)
    sxx, sxy, syy = cov[:numx, :numx], cov[:numx, numx:], cov[numx:, numx:]
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)
    ixx = positivedef_matrix_sqrt(np.linalg.pinv(sxx, rcond=RTOL, hermitian=True))
    iyy = positivedef_matrix_sqrt(np.linalg.pinv(syy, rcond=RTOL, hermitian=True))
    u, s, v = np.linalg.svd(ixx @ sxy @ iyy)
    r1, r2 = rank(sxx), rank(syy)
    return u, np.abs(s)[:min(r1, r2)], v, ixx, iyy, r1, r2


def compute_pwcca(acts1, acts2):
    u, s, v, ixx, iyy, r1, r2 = cca_core(acts1, acts2)
    m = len(s)
    if r1 <= r2:
        acts, coef, inv = acts1, u.T[:m], ixx
    else:
        acts, coef, inv = acts2, v[:m], iyy
    acts = acts - acts.mean(axis=1, keepdims=True)
    dirns = coef @ inv @ acts
    p, _ = np.linalg.qr(dirns.T)
    weights = np.sum(np.abs(p.T @ acts.T), axis=1)
    weights = weights / np.sum(weights)
    return np.sum(weights * s)


def svd_reduce(acts, keep):
    """svcca's tutorial: SVD of the centred activations, the top directions kept
    (here: the fewest whose variance reaches keep of the kept rank's)."""
    c = acts - acts.mean(axis=1, keepdims=True)
    _, sv, vt = np.linalg.svd(c, full_matrices=False)
    var = sv ** 2
    r = int(np.sum(var > RTOL * var[0]))
    cs = np.cumsum(var[:r])
    k = int(np.searchsorted(cs, keep * cs[-1])) + 1
    return sv[:k, None] * vt[:k], k


def svcca(acts1, acts2, keep=0.99):
    x, kx = svd_reduce(acts1, keep)
    y, ky = svd_reduce(acts2, keep)
    return cca_core(x, y)[1].mean(), kx, ky


def procrustes(x, y):
    """anatome's orthogonal_procrustes_distance (1 - nuc) doubled, and netrep's angle."""
    x = x - x.mean(0)
    x = x / np.linalg.norm(x)
    y = y - y.mean(0)
    y = y / np.linalg.norm(y)
    nuc = np.linalg.norm(x.T @ y, "nuc")
    return 2 - 2 * nuc, np.arccos(min(nuc, 1.0))


def reference(x, y, keep=0.99):
    """Every column of a pair, x [N, D_a] and y [N, D_b] as stored."""
    _, s, _, _, _, r1, r2 = cca_core(x.T, y.T)
    sv, kx, ky = svcca(x.T, y.T, keep)
    proc, ang = procrustes(x, y)
    return {"cca_mean_rho": s.mean(), "cca_mean_rho2": (s ** 2).mean(), "cca_rank_a": r1,
            "cca_rank_b": r2, "svcca": sv, "svcca_dims_a": kx, "svcca_dims_b": ky,
            "pwcca": compute_pwcca(x.T, y.T), "procrustes": proc, "procrustes_angular": ang}


# ---- dumps ------------------------------------------------------------------------------

MEASURES = ("cca_mean_rho", "cca_mean_rho2", "svcca", "pwcca", "procrustes",
            "procrustes_angular")
TABLES = {"cca": "cca_mean_rho", "svcca": "svcca", "pwcca": "pwcca",
          "procrustes": "procrustes"}


def pair_of_dumps(n=400, seed=5):
    """Teacher: t1 (12 wide), t2 (10 wide of rank 6, a mean far from 0), logits (4);
    student: s1 (7 wide), s2 (20 wide), logits; s1 and s2 partly shared with t1."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 6))
    t1 = rng.standard_normal((n, 12)) * np.linspace(0.5, 3.0, 12)
    t2 = z @ rng.standard_normal((6, 10)) + 40.0
    s1 = t1[:, :5] @ rng.standard_normal((5, 7)) + 0.7 * rng.standard_normal((n, 7))
    s2 = np.hstack([t2[:, :4] + 0.3 * rng.standard_normal((n, 4)),
                    z[:, :2] + rng.standard_normal((n, 2)), rng.standard_normal((n, 14))]) * 2.5
    tl = t1[:, :4] + rng.standard_normal((n, 4))
    sl = s1[:, :4] + rng.standard_normal((n, 4))
    labels = np.argmax(tl, 1)
    tp, sp = os.path.join(TMP, f"t{n}.h5"), os.path.join(TMP, f"s{n}.h5")
    write_dump(tp, {"final": (0, {"t1": (t1, 0), "t2": (t2, 1)}, tl)}, labels)
    write_dump(sp, {"final": (0, {"s1": (s1, 0), "s2": (s2, 1)}, sl)}, labels, role="student")
    return tp, sp, {"t1": t1, "t2": t2, "logits": tl}, {"s1": s1, "s2": s2, "logits": sl}


def check_pairs(doc, a_layers, b_layers, keep=0.99, skip=(), method="feature"):
    rows = records(doc, "cka_pairs")
    assert len(rows) == len(a_layers) * len(b_layers), len(rows)
    for r in rows:
        assert r["method"] == method, r
        want = reference(a_layers[r["layer_a"]], b_layers[r["layer_b"]], keep)
        what = f"{r['layer_a']} x {r['layer_b']}"
        for k, v in want.items():
            if k in r and k not in skip:
                if isinstance(v, int):
                    assert r[k] == v, (what, k, r[k], v)
                else:
                    assert_close(r[k], v, TOL, TOL, f"{what} {k}")
    return rows


# ---- tests ------------------------------------------------------------------------------

def test_every_measure_against_the_references():
    tp, sp, ta, sb = pair_of_dumps()
    doc = run_json("cka", tp, sp, "--measure", "all")
    rows = check_pairs(doc, ta, sb)
    # The rank-deficient layer is cut to its rank.
    assert {r["cca_rank_a"] for r in rows if r["layer_a"] == "t2"} == {6}
    for table, key in TABLES.items():
        m = records(doc, table)
        assert len(m) == 3, (table, m)
        for row in m:
            for b in sb:
                pr = [r for r in rows if r["layer_a"] == row["layer"] and r["layer_b"] == b][0]
                assert_close(row[b], pr[key], 0, 0, f"{table} {row['layer']} x {b}")
    assert any("rank cut: eigenvalues below 1e-10" in n for n in doc["notes"]), doc["notes"]


def test_one_dump_and_svcca_keep():
    tp, _, ta, _ = pair_of_dumps()
    doc = run_json("cka", tp, "--measure", "svcca,cca", "--svcca-keep", "0.8")
    rows = check_pairs(doc, ta, ta, keep=0.8)
    for r in rows:
        assert "pwcca" not in r and "procrustes" not in r, r
        if r["layer_a"] == r["layer_b"]:
            assert_close(r["cca_mean_rho"], 1.0, 0, 1e-10, r["layer_a"])
            assert_close(r["svcca"], 1.0, 0, 1e-10, r["layer_a"])
    assert any(r["svcca_dims_a"] < r["cca_rank_a"] for r in rows), rows
    assert {d["table"] for d in doc["results"]} >= {"cca", "svcca"}
    assert not records(doc, "pwcca") and not records(doc, "procrustes")


def test_default_is_cka_alone():
    tp, sp, _, _ = pair_of_dumps()
    doc = run_json("cka", tp, sp)
    assert not any(k in r for r in records(doc, "cka_pairs") for k in MEASURES)
    assert {d["table"] for d in doc["results"]} == {"cka", "cka_pairs", "cka_targets",
                                                  "cka_mapping"}
    same = run_json("cka", tp, sp, "--measure", "cka")
    assert records(same, "cka_pairs") == records(doc, "cka_pairs")


def test_few_samples_per_dimension_in_feature_space():
    """N = 30 >= every width: feature space, but r_a + r_b >= N: correlations of 1 by
    construction, still equal to the references, and a warning says so.  PWCCA is left
    out: with tied correlations its weights depend on the basis chosen inside the tie
    (in kdlens's LAPACK as in numpy's), so it is not unique there."""
    tp, sp, ta, sb = pair_of_dumps(n=30, seed=8)
    doc = run_json("cka", tp, sp, "--measure", "all")
    check_pairs(doc, ta, sb, skip=("pwcca",))
    assert any("add up to the sample count (30)" in n for n in doc["notes"]), doc["notes"]


def test_wider_than_samples_in_gram_space():
    """N = 15 < 20: the pass is in Gram space; CCA, SVCCA and Procrustes come from the
    centred Gram matrices and equal the references; PWCCA is NaN with a note.  With a
    layer of rank N - 1 the canonical correlations are 1 by construction (noted)."""
    tp, sp, ta, sb = pair_of_dumps(n=15, seed=9)
    doc = run_json("cka", tp, sp, "--measure", "all")
    rows = check_pairs(doc, ta, sb, skip=("pwcca",), method="gram")
    for r in rows:
        assert r["pwcca"] is None or np.isnan(r["pwcca"]), r
        assert r["cca_rank_a"] <= 14 and r["cca_rank_b"] <= 14, r
    assert any("n x n centred Gram" in n for n in doc["notes"]), doc["notes"]
    assert any("pwcca: not computed in Gram space" in n for n in doc["notes"]), doc["notes"]
    assert any("add up to the sample count (15)" in n for n in doc["notes"]), doc["notes"]


def test_gram_space_equals_feature_space():
    """The Gram-space forms equal the feature-space ones where both exist: a dump whose
    one wide layer (N = 60 < 64) forces Gram space, the other pairs against the
    feature-space run of the same layers without it."""
    rng = np.random.default_rng(4)
    n = 60
    x = rng.standard_normal((n, 9)) * np.linspace(1, 4, 9)
    y = x[:, :5] @ rng.standard_normal((5, 6)) + rng.standard_normal((n, 6))
    w = rng.standard_normal((n, 64))
    logits = rng.standard_normal((n, 3))
    labels = np.arange(n) % 3
    gp, fp = os.path.join(TMP, "g.h5"), os.path.join(TMP, "f.h5")
    write_dump(gp, {"final": (0, {"x": (x, 0), "y": (y, 1), "w": (w, 2)}, logits)}, labels)
    write_dump(fp, {"final": (0, {"x": (x, 0), "y": (y, 1)}, logits)}, labels)
    g = {(r["layer_a"], r["layer_b"]): r
         for r in records(run_json("cka", gp, "--measure", "cca,svcca,procrustes"), "cka_pairs")}
    f = records(run_json("cka", fp, "--measure", "cca,svcca,procrustes"), "cka_pairs")
    for r in f:
        assert r["method"] == "feature"
        q = g[(r["layer_a"], r["layer_b"])]
        assert q["method"] == "gram", q
        for k in ("cca_mean_rho", "cca_mean_rho2", "svcca", "procrustes"):
            assert_close(q[k], r[k], TOL, TOL, f"{r['layer_a']} x {r['layer_b']} {k}")
        for k in ("cca_rank_a", "cca_rank_b", "svcca_dims_a", "svcca_dims_b"):
            assert q[k] == r[k], (k, q, r)


def test_wide_pairs_are_nan_the_others_exact():
    tp, sp, ta, sb = pair_of_dumps()
    for mode in ("sketch", "exact"):
        doc = run_json("cka", tp, sp, "--measure", "all", "--wide-max", "15", "--wide-rank",
                       "8", "--wide", mode)
        for r in records(doc, "cka_pairs"):
            if r["layer_b"] == "s2":
                assert r["method"] in ("sketch", "strips"), r
                assert all(r[k] is None or np.isnan(r[k]) for k in MEASURES), r
            else:
                want = reference(ta[r["layer_a"]], sb[r["layer_b"]])
                for k in MEASURES:
                    assert_close(r[k], want[k], TOL, TOL, f"{mode} {r['layer_a']} {k}")
        assert any("wide source" in n and "NaN" in n for n in doc["notes"]), doc["notes"]


def test_text_and_csv_carry_the_tables():
    tp, sp, _, _ = pair_of_dumps()
    for fmt in ("table", "md", "tex"):
        st, out, err = run("cka", tp, sp, "--measure", "all", "--format", fmt)
        assert st == 0, err
        for title in ("mean canonical correlation (CCA)", "SVCCA", "PWCCA",
                      "orthogonal Procrustes distance", "procrustes\\_angular"
                      if fmt == "tex" else "procrustes_angular"):
            assert title in out, (fmt, title)
    doc = run_json("cka", tp, sp, "--measure", "all")
    for table, key in TABLES.items():
        st, out, err = run("cka", tp, sp, "--measure", "all", "--format", "csv", "--table",
                           table)
        assert st == 0, err
        lines = out.splitlines()
        assert lines[0].split(",")[:3] == ["checkpoint", "checkpoint_b", "layer"], lines
        assert len(lines) == 1 + len(records(doc, table)), (table, lines)
    out = os.path.join(TMP, "csv")
    run("cka", tp, sp, "--measure", "all", "--format", "csv", "-o", out, check=0)
    assert {"cca.csv", "svcca.csv", "pwcca.csv", "procrustes.csv"} <= set(os.listdir(out))


def test_bad_options():
    tp, sp, _, _ = pair_of_dumps()
    for bad, needle in ((("--measure", "cka,foo"), "--measure"), (("--measure", ""), "--measure"),
                        (("--svcca-keep", "0.9"), "--svcca-keep"),
                        (("--measure", "svcca", "--svcca-keep", "1.5"), "--svcca-keep"),
                        (("--measure", "svcca", "--svcca-keep", "0"), "--svcca-keep")):
        st, _, err = run("cka", tp, sp, *bad)
        assert st == 2 and needle in err.splitlines()[0], (bad, err)


kdltest.main(globals())
