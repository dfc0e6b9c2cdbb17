#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens cka against Kornblith et al.'s published demo values and an
independent numpy float64 implementation of docs/cka.md (Gram form)."""
import os
import sys

from statistics import NormalDist

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import kdltest  # noqa: E402
from kdltest import assert_close, records, run, run_json, one_line_error  # noqa: E402
from refcommon import poisson1, khash, uniform, write_dump  # noqa: E402

TMP = kdltest.tmpdir()


# ---- numpy reference: the demo notebook's Gram-space functions ---------------------

def gram_linear(x):
    return x @ x.T


def gram_rbf(x, threshold=0.5):
    dot = x @ x.T
    sq = np.diag(dot)
    d2 = -2 * dot + sq[:, None] + sq[None, :]
    return np.exp(-d2 / (2 * threshold ** 2 * np.median(d2)))


def center_gram(g, unbiased=False):
    g = g.copy()
    if unbiased:
        n = g.shape[0]
        np.fill_diagonal(g, 0)
        means = np.sum(g, 0) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        g -= means[:, None]
        g -= means[None, :]
        np.fill_diagonal(g, 0)
    else:
        means = np.mean(g, 0)
        means -= np.mean(means) / 2
        g -= means[:, None]
        g -= means[None, :]
    return g


def cka(gx, gy, debiased=False):
    gx = center_gram(gx, debiased)
    gy = center_gram(gy, debiased)
    return gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy))


def robust_cka(x, y, frac=0.01):
    """Linear CKA without each layer's ceil(frac n) largest centred norms (union)."""
    n = len(x)
    q = int(np.ceil(frac * n))
    out = np.zeros(n, bool)
    for z in (x, y):
        d = np.sum((z - z.mean(0)) ** 2, 1)
        out[np.lexsort((np.arange(n), -d))[:q]] = True
    return cka(gram_linear(x[~out]), gram_linear(y[~out]))


def minibatch_cka(x, y, order, m):
    hxy = hxx = hyy = 0.0
    for b in range(len(order) // m):
        rows = order[b * m:(b + 1) * m]
        kx = center_gram(gram_linear(x[rows]), True)
        ky = center_gram(gram_linear(y[rows]), True)
        hxy += kx.ravel() @ ky.ravel()
        hxx += kx.ravel() @ kx.ravel()
        hyy += ky.ravel() @ ky.ravel()
    return hxy / np.sqrt(hxx * hyy)


def pair(doc, a, b, table="cka_pairs"):
    for r in records(doc, table):
        if r["layer_a"] == a and r["layer_b"] == b:
            return r
    raise AssertionError(f"no pair {a} x {b}")


# ---- the published values -----------------------------------------------------------

def kornblith_dump():
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    path = os.path.join(TMP, "kornblith.h5")
    labels = np.arange(100) % 4
    write_dump(path, {"final": (0, {"x": (x, 0), "y": (y, 1)}, np.random.randn(100, 4))}, labels)
    return path, x, y


def test_kornblith_demo_values():
    path, x, y = kornblith_dump()
    lin = pair(run_json("cka", path), "x", "y")
    rbf = pair(run_json("cka", path, "--kernel", "rbf"), "x", "y")
    # The demo notebook prints these to 5 decimals (docs/cka.md#invariances-and-reference-values).
    assert_close(lin["cka_linear"], 0.55761, 0, 5e-6, "linear CKA")
    assert_close(lin["cka_linear_debiased"], 0.51346, 0, 5e-6, "debiased linear CKA")
    assert_close(rbf["cka_rbf"], 0.65483, 0, 5e-6, "RBF CKA, theta 0.5")
    # And to full precision against the demo's own functions.
    assert_close(lin["cka_linear"], cka(gram_linear(x), gram_linear(y)), 1e-12)
    assert_close(lin["cka_linear_debiased"], cka(gram_linear(x), gram_linear(y), True), 1e-12)
    assert_close(rbf["cka_rbf"], cka(gram_rbf(x), gram_rbf(y)), 1e-12)
    assert_close(rbf["cka_rbf_debiased"], cka(gram_rbf(x), gram_rbf(y), True), 1e-12)
    assert lin["method"] == "feature" and lin["n"] == 100


# ---- every value on generated dumps -------------------------------------------------

N, C = 300, 6


def make_models(rng, width_b=7):
    """A teacher with a 4-D float32 layer, a token layer and a wide one; a student."""
    labels = rng.integers(0, C, N)
    base = rng.standard_normal((N, 5)) + np.eye(C)[labels] @ rng.standard_normal((C, 5))
    conv = (np.einsum("nk,kchw->nchw", base, rng.standard_normal((5, 4, 3, 3)))
            + 0.5 * rng.standard_normal((N, 4, 3, 3))).astype(np.float32)
    tok = rng.standard_normal((N, 2, 6)) + base[:, None, :1]
    wide = np.tanh(base @ rng.standard_normal((5, 40))) + 0.1 * rng.standard_normal((N, 40))
    logits = base @ rng.standard_normal((5, C))
    # Outliers in one layer, so the robust column differs.
    wide[:4] += 30.0
    t = {"conv": (conv, 0), "tok": (tok, 1), "wide": (wide, 2)}
    sb = base @ rng.standard_normal((5, width_b)) + rng.standard_normal((N, width_b))
    s = {"s1": (sb, 0), "s2": (np.maximum(sb, 0) ** 2, 3)}
    slog = sb @ rng.standard_normal((width_b, C))
    views = {  # what kdlens reads, avg pooling
        "conv": conv.astype(np.float64).mean(axis=(2, 3)),
        "tok": tok.mean(axis=1), "wide": wide, "logits": logits,
        "s1": sb, "s2": np.maximum(sb, 0) ** 2, "slogits": slog}
    return labels, t, logits, s, slog, views


def test_single_dump_all_pairs():
    rng = np.random.default_rng(5)
    labels, t, logits, _, _, v = make_models(rng)
    path = os.path.join(TMP, "single.h5")
    write_dump(path, {"final": (10, t, logits)}, labels)
    doc = run_json("cka", path, "--kernel", "rbf")
    names = ["conv", "tok", "wide", "logits"]
    onehot = np.eye(C)[labels]
    for a in names:
        for b in names:
            r = pair(doc, a, b)
            ga, gb = gram_linear(v[a]), gram_linear(v[b])
            assert_close(r["cka_linear"], cka(ga, gb), 1e-10, 1e-13, f"{a} x {b}")
            assert_close(r["cka_linear_debiased"], cka(ga, gb, True), 1e-9, 1e-12, f"{a} x {b}")
            assert_close(r["cka_rbf"], cka(gram_rbf(v[a]), gram_rbf(v[b])), 1e-10, 1e-13)
            assert_close(r["cka_rbf_debiased"], cka(gram_rbf(v[a]), gram_rbf(v[b]), True),
                         1e-9, 1e-12)
            assert_close(r["cka_linear_robust"], robust_cka(v[a], v[b]), 1e-9, 1e-12,
                         f"robust {a} x {b}")
    for r in records(doc, "cka_targets"):
        x = v[r["layer"]]
        assert_close(r["cka_logits"], cka(gram_linear(x), gram_linear(logits)), 1e-10, 1e-13)
        assert_close(r["cka_labels"], cka(gram_linear(x), gram_linear(onehot)), 1e-10, 1e-13)
        assert_close(r["cka_labels_debiased"],
                     cka(gram_linear(x), gram_linear(onehot), True), 1e-9, 1e-12)
        assert_close(r["cka_labels_robust"], robust_cka(x, onehot), 1e-9, 1e-12)
    # The matrix shows the selected kernel and estimator.
    row = [r for r in records(doc, "cka") if r["layer"] == "tok"][0]
    assert_close(row["wide"], pair(doc, "tok", "wide")["cka_rbf"], 0, 0)
    assert any("feature space" in n for n in doc["notes"])


def test_teacher_student_joined_on_ids_and_checkpoints():
    rng = np.random.default_rng(6)
    labels, t, logits, s, slog, v = make_models(rng)
    ids = 5000 + np.arange(N)
    tp, sp = os.path.join(TMP, "t.h5"), os.path.join(TMP, "s.h5")
    write_dump(tp, {"a": (0, t, logits), "b": (5, t, logits)}, labels, ids=ids)
    perm = np.random.default_rng(1).permutation(N)
    write_dump(sp, {"a": (0, s, slog), "b": (5, s, slog)}, labels, role="student", order=perm,
               ids=ids)
    doc = run_json("cka", tp, sp, "--checkpoint", "all", "--estimator", "debiased")
    assert {r["checkpoint"] for r in records(doc, "cka_pairs")} == {"a", "b"}
    for a in ["conv", "tok", "wide", "logits"]:
        for b, key in [("s1", "s1"), ("s2", "s2"), ("logits", "slogits")]:
            r = pair(doc, a, b)
            assert_close(r["cka_linear"], cka(gram_linear(v[a]), gram_linear(v[key])), 1e-10,
                         1e-13)
    m = [r for r in records(doc, "cka") if r["layer"] == "wide" and r["checkpoint"] == "b"][0]
    assert_close(m["s2"], cka(gram_linear(v["wide"]), gram_linear(v["s2"]), True), 1e-9, 1e-12)
    # Student layers against the teacher's logits.
    r = [r for r in records(doc, "cka_targets") if r["model"] == "b" and r["layer"] == "s1"][0]
    assert_close(r["cka_logits"], cka(gram_linear(v["s1"]), gram_linear(logits)), 1e-10)


def test_minibatch_in_seeded_order():
    rng = np.random.default_rng(7)
    labels, t, logits, _, _, v = make_models(rng)
    path = os.path.join(TMP, "mb.h5")
    write_dump(path, {"final": (0, t, logits)}, labels)
    doc = run_json("cka", path, "--estimator", "minibatch", "--batch", "64", "--seed", "11")
    order = np.lexsort((np.arange(N), khash(11, np.arange(N), 3)))
    r = pair(doc, "conv", "wide")
    assert r["batches"] == N // 64
    assert_close(r["cka_minibatch"], minibatch_cka(v["conv"], v["wide"], order, 64), 1e-10)
    # One batch of everything is the debiased CKA.
    doc = run_json("cka", path, "--estimator", "minibatch", "--batch", str(N))
    r = pair(doc, "tok", "logits")
    assert_close(r["cka_minibatch"], r["cka_linear_debiased"], 1e-10)


def test_subsample_is_the_seeded_selection():
    rng = np.random.default_rng(8)
    labels, t, logits, _, _, v = make_models(rng)
    path = os.path.join(TMP, "sub.h5")
    write_dump(path, {"final": (0, t, logits)}, labels)
    doc = run_json("cka", path, "--kernel", "rbf", "--subsample", "120", "--seed", "3")
    keys = khash(3, np.arange(N), 1)
    rows = np.sort(np.lexsort((np.arange(N), keys))[:120])
    r = pair(doc, "tok", "wide")
    assert r["subsample"] == 120
    x, y = v["tok"][rows], v["wide"][rows]
    assert_close(r["cka_rbf"], cka(gram_rbf(x), gram_rbf(y)), 1e-10)
    assert_close(r["cka_linear_robust"], robust_cka(x, y), 1e-9)


def test_bootstrap_replicates():
    rng = np.random.default_rng(9)
    labels, t, logits, _, _, v = make_models(rng)
    path = os.path.join(TMP, "boot.h5")
    write_dump(path, {"final": (0, t, logits)}, labels)
    B = 7
    doc = run_json("cka", path, "--bootstrap", str(B), "--seed", "21")
    r = pair(doc, "conv", "tok")
    reps = {False: [], True: []}
    for b in range(B):
        w = poisson1(21, np.arange(N), b)
        rows = np.repeat(np.arange(N), w)  # resampling with the Poisson counts
        for deb in (False, True):
            reps[deb].append(cka(gram_linear(v["conv"][rows]), gram_linear(v["tok"][rows]), deb))
    for deb, key in ((False, "cka_linear"), (True, "cka_linear_debiased")):
        x = np.array(reps[deb])
        assert_close(r[key + "_lo"], np.percentile(x, 2.5), 1e-9)
        assert_close(r[key + "_hi"], np.percentile(x, 97.5), 1e-9)
        assert_close(r[key + "_se"], np.std(x, ddof=1), 1e-8)


def test_gram_path_when_wider_than_samples():
    rng = np.random.default_rng(10)
    n = 40
    labels = np.arange(n) % 4
    x = rng.standard_normal((n, 90))
    y = x[:, :30] @ rng.standard_normal((30, 12)) + rng.standard_normal((n, 12))
    path = os.path.join(TMP, "gram.h5")
    write_dump(path, {"final": (0, {"x": (x, 0), "y": (y, 1)}, rng.standard_normal((n, 4)))},
               labels)
    doc = run_json("cka", path)
    r = pair(doc, "x", "y")
    assert r["method"] == "gram"
    assert_close(r["cka_linear"], cka(gram_linear(x), gram_linear(y)), 1e-10)
    assert_close(r["cka_linear_debiased"], cka(gram_linear(x), gram_linear(y), True), 1e-9)
    assert any("Gram space" in n for n in doc["notes"])
    assert "cka_linear_lo" not in r  # no bootstrap asked


# ---- bootstrap: Gram space too, three intervals, warnings ---------------------------

GROUPS = 50  # KDL_CKA_JACKKNIFE_GROUPS
ND = NormalDist()


def real(v):
    return float("nan") if v is None else v


def close_or_nan(actual, expected, atol, what):
    if np.isnan(expected):
        assert np.isnan(real(actual)), f"{what}: got {actual!r}, expected NaN"
    else:
        assert_close(actual, expected, 0, atol, what)


def boot_reference(x, y, seed, B, kind, level=0.95):
    """Every replicate rebuilt from its Poisson(1) counts by repeating rows, the
    delete-a-group jackknife from kdl_sample_group()'s hash, then the interval
    formulas (numpy linear quantiles, NormalDist for BCa).  Returns
    {debiased: (lo, hi, se, bias)}."""
    n = len(x)
    ids = np.arange(n)  # one dump: the sample id is the row
    reps = {False: [], True: []}
    for b in range(B):
        rows = np.repeat(ids, poisson1(seed, ids, b))
        gx, gy = gram_linear(x[rows]), gram_linear(y[rows])
        for deb in (False, True):
            reps[deb].append(cka(gx, gy, deb))
    jack = {False: [], True: []}
    grp = (khash(seed, ids, 1 << 62) % np.uint64(GROUPS)).astype(np.int64)
    for g in range(GROUPS if kind == "bca" else 0):
        keep = grp != g
        if keep.all():
            continue  # an empty group has no jackknife value
        gx, gy = gram_linear(x[keep]), gram_linear(y[keep])
        for deb in (False, True):
            jack[deb].append(cka(gx, gy, deb))
    out = {}
    for deb in (False, True):
        est = cka(gram_linear(x), gram_linear(y), deb)
        out[deb] = interval(est, np.array(reps[deb]), np.array(jack[deb]), kind, level)
    return out


def interval(est, reps, jack, kind, level):
    reps = reps[np.isfinite(reps)]
    al = 1 - level

    def q(p):
        return np.quantile(reps, p)

    se, bias = np.std(reps, ddof=1), reps.mean() - est
    if kind == "percentile":
        return q(al / 2), q(1 - al / 2), se, bias
    if kind == "basic":
        return 2 * est - q(1 - al / 2), 2 * est - q(al / 2), se, bias
    nan = float("nan")
    p0 = (np.sum(reps < est) + 0.5 * np.sum(reps == est)) / len(reps)
    jack = jack[np.isfinite(jack)]
    if not 0 < p0 < 1 or len(jack) < 2:
        return nan, nan, se, bias
    z0 = ND.inv_cdf(p0)
    d = jack.mean() - jack
    a = np.sum(d ** 3) / (6 * np.sum(d ** 2) ** 1.5) if np.sum(d ** 2) > 0 else 0.0

    def lev(z):
        den = 1 - a * (z0 + z)
        return ND.cdf(z0 + (z0 + z) / den) if den > 0 else nan

    l1, l2 = lev(ND.inv_cdf(al / 2)), lev(ND.inv_cdf(1 - al / 2))
    if np.isnan(l1) or np.isnan(l2):
        return nan, nan, se, bias
    return q(l1), q(l2), se, bias


def narrow_dump():
    """Feature space: every layer narrower than the 150 samples, all related
    (a pair near CKA 0 has a skewed bootstrap whose intervals can miss)."""
    rng = np.random.default_rng(12)
    n = 150
    x = rng.standard_normal((n, 6)) + 4.0
    y = x[:, :3] @ rng.standard_normal((3, 5)) + 1.5 * rng.standard_normal((n, 5))
    logits = x[:, :4] + rng.standard_normal((n, 4))
    path = os.path.join(TMP, "boot-narrow.h5")
    write_dump(path, {"final": (0, {"x": (x, 0), "y": (y, 1)}, logits)}, np.arange(n) % 4)
    return path, x, y


def wide_dump():
    """Gram space: a layer of width 90 on 40 samples."""
    rng = np.random.default_rng(13)
    n = 40
    x = rng.standard_normal((n, 90))
    y = x[:, :30] @ rng.standard_normal((30, 12)) + rng.standard_normal((n, 12))
    path = os.path.join(TMP, "boot-wide.h5")
    write_dump(path, {"final": (0, {"x": (x, 0), "y": (y, 1)}, rng.standard_normal((n, 4)))},
               np.arange(n) % 4)
    return path, x, y


def shifted_dump():
    """Feature space, layers of widths 30 and 20 on 80 samples: the example of
    docs/cka.md whose replicates are shifted beyond their spread."""
    rng = np.random.default_rng(14)
    n = 80
    x = rng.standard_normal((n, 30))
    y = x[:, :10] @ rng.standard_normal((10, 20)) + 3 * rng.standard_normal((n, 20))
    path = os.path.join(TMP, "boot-shifted.h5")
    write_dump(path, {"final": (0, {"x": (x, 0), "y": (y, 1)},
                                x[:, :4] + rng.standard_normal((n, 4)))}, np.arange(n) % 4)
    return path


def check_boot(r, ref, what):
    for deb, key in ((False, "cka_linear"), (True, "cka_linear_debiased")):
        for k, name in enumerate(("lo", "hi", "se", "bias")):
            close_or_nan(r[f"{key}_{name}"], ref[deb][k], 1e-9, f"{what} {key}_{name}")


def test_wide_layer_gets_bootstrap_intervals():
    """Issue 16 item 3: a layer wider than N sent every pair to Gram space and
    --bootstrap gave no interval (exit 0, a footnote).  Now the Gram form has
    them, from the same Poisson weights (weighted HSIC)."""
    path, x, y = wide_dump()
    doc = run_json("cka", path, "--bootstrap", "60", "--seed", "5")
    r = pair(doc, "x", "y")
    assert r["method"] == "gram"
    for key in ("cka_linear", "cka_linear_debiased"):
        assert np.isfinite(real(r[key + "_lo"])) and real(r[key + "_lo"]) < real(r[key + "_hi"])
    check_boot(r, boot_reference(x, y, 5, 60, "percentile"), "gram percentile")
    assert any("Gram space by weighted HSIC" in n for n in doc["notes"]), doc["notes"]
    assert not any("not available" in n for n in doc["notes"]), doc["notes"]


def test_small_bootstrap_is_flagged():
    """Issue 16 item 9: B = 10 gave intervals with no word of warning."""
    path, _, _ = narrow_dump()
    doc = run_json("cka", path, "--bootstrap", "10")
    few = [n for n in doc["notes"] if "only 10 bootstrap replicates" in n]
    assert few and "fewer than 200" in few[0] and "unreliable" in few[0], doc["notes"]
    st, out, _ = run("cka", path, "--bootstrap", "10")  # the table's footnotes too
    assert st == 0 and "only 10 bootstrap replicates" in out
    doc = run_json("cka", path, "--bootstrap", "200")
    assert not any("fewer than 200" in n for n in doc["notes"]), doc["notes"]


def misses(doc):
    """Pairs (a < b by position, both estimators) whose interval misses the value."""
    count = 0
    for r in records(doc, "cka_pairs"):
        if r["layer_a"] >= r["layer_b"]:
            continue
        for key in ("cka_linear", "cka_linear_debiased"):
            lo, hi = real(r[key + "_lo"]), real(r[key + "_hi"])
            count += bool(r[key] < lo - 1e-12 or r[key] > hi + 1e-12)
    return count


def test_interval_missing_its_point_value_is_flagged():
    """Issue 16 item 9: the point value 0.3578 lay outside its own interval
    [0.3593, 0.3890], and nothing said so.  The note counts such intervals."""
    for path in (shifted_dump(), wide_dump()[0]):  # feature space, Gram space
        doc = run_json("cka", path, "--bootstrap", "10")
        k = misses(doc)
        assert k > 0
        note = [n for n in doc["notes"] if "do not contain their own point value" in n]
        assert note and note[0].startswith(f"warning: {k} of 6 bootstrap"), (k, doc["notes"])
        assert "--interval bca" in note[0]
    # No such note when every interval holds its value.
    path, _, _ = narrow_dump()
    doc = run_json("cka", path, "--bootstrap", "300", "--interval", "basic")
    assert misses(doc) == 0
    assert not any("own point value" in n for n in doc["notes"]), doc["notes"]


def test_intervals_against_numpy():
    """Percentile, basic and BCa intervals, sd and bias of the replicates, in
    feature space and in Gram space, against numpy recomputing every
    replicate from the same Poisson weights and the jackknife from the same
    groups."""
    for dump, B in ((narrow_dump, 200), (wide_dump, 120)):
        path, x, y = dump()
        for kind in ("percentile", "basic", "bca"):
            doc = run_json("cka", path, "--bootstrap", str(B), "--seed", "3", "--interval", kind)
            r = pair(doc, "x", "y")
            check_boot(r, boot_reference(x, y, 3, B, kind), f"{r['method']} {kind}")
            assert any(f"{kind} 95 % intervals" in n for n in doc["notes"]), doc["notes"]
            assert (kind == "bca") == any("jackknife over 50" in n for n in doc["notes"])
    # The three differ.
    path, _, _ = narrow_dump()
    los = {kind: pair(run_json("cka", path, "--bootstrap", "50", "--interval", kind), "x", "y")
           ["cka_linear_lo"] for kind in ("percentile", "basic", "bca")}
    assert len(set(los.values())) == 3, los


def test_docs_example_of_a_shifted_bootstrap():
    """The numbers docs/cka.md quotes: replicates shifted beyond their spread,
    and no interval type holding the debiased value."""
    path = shifted_dump()
    r = {kind: pair(run_json("cka", path, "--bootstrap", "1000", "--interval", kind), "x", "y")
         for kind in ("percentile", "basic", "bca")}
    p = r["percentile"]
    for key, want in (("cka_linear", 0.439), ("cka_linear_debiased", 0.298),
                      ("cka_linear_bias", 0.090), ("cka_linear_debiased_bias", 0.140),
                      ("cka_linear_lo", 0.472), ("cka_linear_hi", 0.593),
                      ("cka_linear_debiased_lo", 0.365), ("cka_linear_debiased_hi", 0.517)):
        assert_close(p[key], want, 0, 5e-4, key)
    for kind, v in r.items():
        lo, hi = real(v["cka_linear_debiased_lo"]), real(v["cka_linear_debiased_hi"])
        assert not lo <= v["cka_linear_debiased"] <= hi, (kind, lo, hi)


def test_bad_interval():
    path, _, _ = narrow_dump()
    st, _, err = run("cka", path, "--bootstrap", "20", "--interval", "studentized")
    assert st == 2
    first = err.splitlines()[0]
    assert "'studentized'" in first and "percentile, basic or bca" in first, err


def test_mixed_precision_agrees_with_numpy():
    """--precision mixed: float products, double sums, within the 1e-6 kdlens
    states of the float64 reference (and not equal to it: the floats are used)."""
    rng = np.random.default_rng(8)
    labels, t, logits, _, _, v = make_models(rng)
    path = os.path.join(TMP, "mixed.h5")
    write_dump(path, {"final": (10, t, logits)}, labels)
    doc = run_json("cka", path, "--precision", "mixed")
    dbl = run_json("cka", path)
    assert any("mixed precision" in n for n in doc["notes"]), doc["notes"]
    assert not any("mixed precision" in n for n in dbl["notes"])
    names = ["conv", "tok", "wide", "logits"]
    worst = 0.0
    for a in names:
        for b in names:
            r, d = pair(doc, a, b), pair(dbl, a, b)
            ga, gb = gram_linear(v[a]), gram_linear(v[b])
            assert_close(r["cka_linear"], cka(ga, gb), 0, 1e-6, f"{a} x {b}")
            assert_close(r["cka_linear_debiased"], cka(ga, gb, True), 0, 1e-6, f"{a} x {b}")
            worst = max(worst, abs(r["cka_linear"] - d["cka_linear"]),
                        abs(r["cka_linear_debiased"] - d["cka_linear_debiased"]))
    print(f"max |mixed - double| over the pairs: {worst:.3g}")
    assert worst > 1e-13, worst


def test_bad_requests():
    path, _, _ = kornblith_dump()
    st, _, err = run("cka", path, "--estimator", "minibatch", "--kernel", "rbf")
    assert st == 2
    one_line_error(err, "minibatch")
    st, _, err = run("cka", path, "--checkpoint", "nope")
    assert st == 2
    one_line_error(err, "nope")
    st, _, err = run("cka", path, "--kernel", "cubic")
    assert st == 2
    st, _, err = run("cka", path, "--precision", "half")
    assert st == 2
    assert "'half'" in err.splitlines()[0] and "double or mixed" in err.splitlines()[0], err
    st, _, err = run("cka")
    assert st == 2
    st, _, err = run("cka", os.path.join(TMP, "missing.h5"))
    assert st == 1
    one_line_error(err, "missing.h5")
    st, _, err = run("cka", path, "--estimator", "minibatch", "--batch", "500")
    assert st == 2
    one_line_error(err, "batch")


# ---- wide layers (docs/cka.md#wide-layers) -------------------------------------------

def wide_pair(n=400, c=40, seed=11):
    """A teacher (layers of widths 24 and 9, logits [n, c]) and a student (10, 6, logits),
    c classes; all in the dump's row order."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    base = rng.standard_normal((n, 8)) + np.eye(c)[y] @ rng.standard_normal((c, 8))
    def model(widths, k):
        r = np.random.default_rng(seed + k)
        x, feats = base + 0.7 * r.standard_normal((n, 8)), {}
        for d, w in enumerate(widths):
            x = np.tanh(x @ r.standard_normal((x.shape[1], w)) / 2) + 3.0
            feats[f"m{k}l{d}"] = (x, d)
        return feats, x @ r.standard_normal((x.shape[1], c)) + 2 * np.eye(c)[y] - 5.0
    t, tl = model((24, 9), 1)
    s, sl = model((10, 6), 2)
    tp, sp = os.path.join(TMP, f"wt{seed}.h5"), os.path.join(TMP, f"ws{seed}.h5")
    write_dump(tp, {"final": (1, t, tl)}, y)
    write_dump(sp, {"final": (1, s, sl)}, y, role="student")
    # The sources in kdlens's order: A's layers by depth, A's logits, B's, B's logits.
    srcs = [("m1l0", t["m1l0"][0]), ("m1l1", t["m1l1"][0]), ("logits", tl),
            ("m2l0", s["m2l0"][0]), ("m2l1", s["m2l1"][0]), ("slogits", sl)]
    return tp, sp, srcs, np.eye(c)[y]


BOOT = ("_lo", "_hi", "_se", "_bias")


def same_values(doc, ref, tables=("cka_pairs", "cka_targets"), tol=1e-10):
    """Every number of @doc's tables equals @ref's, both runs' records in one order; the
    bootstrap columns of a pair in column strips are NaN."""
    for t in tables:
        a, b = records(doc, t), records(ref, t)
        assert len(a) == len(b) and a, t
        for x, y in zip(a, b):
            for k, v in y.items():
                if not isinstance(v, float) or k not in x:
                    continue
                what = f"{t} {x.get('layer_a', x.get('layer'))} {k}"
                if x.get("method") == "strips" and k.endswith(BOOT):
                    assert x[k] is None, what
                else:
                    assert_close(x[k], v, tol, 1e-13, what)


def test_wide_labels_and_strips_equal_the_materialised_values():
    """Forced wide (--wide-max 20): labels as class sums, wide layers exact in column
    strips over several passes, the same numbers as the one-pass materialised run."""
    tp, sp, _, _ = wide_pair()
    ref = run_json("cka", tp, sp, "--bootstrap", "20")
    # The labels and the logits wide (every layer is narrower than 39).
    doc = run_json("cka", tp, sp, "--wide-max", "39", "--wide", "exact", "--bootstrap", "20")
    same_values(doc, ref)
    assert {r["labels_method"] for r in records(doc, "cka_targets")} == {"feature", "strips"}
    assert any("class sums and counts" in n for n in doc["notes"]), doc["notes"]
    for k in ("cka_linear_lo", "cka_linear_debiased_hi", "cka_linear_se"):
        assert all(k in r for r in records(doc, "cka_pairs")), k
    # Logits and the teacher's first layer wide too; strips of a few columns (a 64 MiB
    # budget gives half to the strips: every strip holds all 40 + 40 + 24 + 40 columns).
    ref = run_json("cka", tp, sp)
    doc = run_json("cka", tp, sp, "--wide-max", "20", "--wide", "exact")
    same_values(doc, ref)
    m = {(r["layer_a"], r["layer_b"]): r["method"] for r in records(doc, "cka_pairs")}
    assert m[("logits", "logits")] == "strips" and m[("m1l0", "logits")] == "strips"
    assert m[("m1l1", "logits")] == "strips" and m[("m1l1", "m2l0")] == "feature"
    assert any("more passes" in n for n in doc["notes"]), doc["notes"]
    row, parts = plan_of("cka", tp, sp, "--wide-max", "20", "--wide", "exact")
    strips = [p for p in parts if "column strips" in p["part"]]
    assert len(strips) == 1 and "more passes" in strips[0]["part"], parts


def plan_of(*args):
    d = run_json(*args, "--plan")
    (row,) = records(d, "plan")
    return row, records(d, "plan_parts")


STREAM_SKETCH = 1 << 62


def omega(seed, d, r, k):
    """kdl_cka_sketch_new(d, r, seed, STREAM_SKETCH + 2 k): Box-Muller of two uniforms."""
    q = np.arange(d * r)
    u1 = uniform(seed, q, STREAM_SKETCH + 2 * k)
    u2 = uniform(seed, q, STREAM_SKETCH + 2 * k + 1)
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).reshape(d, r)


def side(xc, r):
    """A layer's own terms: f = ‖XᵀX‖², S, S², T = Σ s², corrected when sketched (@r)."""
    s = np.sum(xc * xc, 1)
    f, sd, t = np.sum((xc.T @ xc) ** 2), s.sum(), np.sum(s * s)
    if not r:
        return f, sd, sd * sd, t
    a2 = r * (r * f - sd * sd) / ((r - 1) * (r + 2))
    return a2, sd, sd * sd - 2 * a2 / r, t / (1 + 2 / r)


def cka_terms(n, fxy, txy, x, y):
    (fx, sx, ssx, tx), (fy, sy, ssy, ty) = x, y
    lin = fxy / np.sqrt(fx * fy)
    e, c = n / (n - 2), (n - 1) * (n - 2)
    deb = ((fxy - e * txy + sx * sy / c) /
           np.sqrt((fx - e * tx + ssx / c) * (fy - e * ty + ssy / c)))
    return lin, deb


def sketch_cka(xc, rx, yc, ry):
    """Linear and debiased CKA of centred (sketched with rx, ry columns, 0: exact) layers,
    and the jackknife standard errors over the sketch's columns."""
    n = len(xc)
    sxy = np.sum(xc * xc, 1) * np.sum(yc * yc, 1)
    fxy, txy = np.sum((xc.T @ yc) ** 2), sxy.sum()
    px, py = side(xc, rx), side(yc, ry)
    lin, deb = cka_terms(n, fxy, txy, px, py)
    r = rx or ry
    if not r:
        return lin, deb, np.nan, np.nan
    vals = []
    for a in range(r):
        sc = np.sqrt(r / (r - 1))
        x = np.delete(xc, a, 1) * sc if rx else xc
        y = np.delete(yc, a, 1) * sc if ry else yc
        # Σ s² held at the full sketch's values.
        qx = side(x, r - 1 if rx else 0)[:3] + (px[3],)
        qy = side(y, r - 1 if ry else 0)[:3] + (py[3],)
        vals.append(cka_terms(n, np.sum((x.T @ y) ** 2), txy, qx, qy))
    vals = np.array(vals)
    se = np.sqrt((r - 1) / r * np.sum((vals - vals.mean(0)) ** 2, 0))
    return lin, deb, se[0], se[1]


def test_sketch_matches_numpy():
    """--wide sketch: each wide layer (the teacher's 24-wide layer, both logits) times its
    seeded Gaussian Ω / √r, corrected self terms, the jackknife's standard errors: the same
    numbers as this numpy implementation, to 1e-10."""
    tp, sp, srcs, onehot = wide_pair()
    r, seed = 8, 3
    doc = run_json("cka", tp, sp, "--wide-max", "20", "--wide-rank", str(r), "--seed",
                   str(seed))
    hat = {}
    for k, (name, x) in enumerate(srcs):
        xc = x - x.mean(0)
        rk = r if x.shape[1] > 20 else 0
        hat[name] = (xc @ omega(seed, x.shape[1], r, k) / np.sqrt(r) if rk else xc, rk)
    hat["labels"] = (onehot - onehot.mean(0), 0)  # class sums: exact
    names = {"m1l0": "m1l0", "m1l1": "m1l1", "logits": "logits"}
    for rec in records(doc, "cka_pairs"):
        a = names[rec["layer_a"]]
        b = "slogits" if rec["layer_b"] == "logits" else rec["layer_b"]
        lin, deb, se, dse = sketch_cka(*hat[a], *hat[b])
        what = f"{a} x {b}"
        assert rec["method"] == ("sketch" if hat[a][1] or hat[b][1] else "feature"), what
        assert_close(rec["cka_linear"], lin, 1e-10, 1e-12, what)
        assert_close(rec["cka_linear_debiased"], deb, 1e-10, 1e-12, what)
        if np.isnan(se):
            assert rec["cka_linear_sketch_se"] is None, what
        else:
            assert_close(rec["cka_linear_sketch_se"], se, 1e-9, 1e-12, what)
            assert_close(rec["cka_linear_debiased_sketch_se"], dse, 1e-9, 1e-12, what)
    for rec in records(doc, "cka_targets"):
        a = rec["layer"] if rec["model"] == "a" else (
            "slogits" if rec["layer"] == "logits" else rec["layer"])
        for tgt, key in (("logits", "cka_logits"), ("labels", "cka_labels")):
            if a == tgt:
                assert rec[key] == 1.0 and rec[key + "_sketch_se"] == 0.0
                continue
            lin, deb, se, _ = sketch_cka(*hat[a], *hat[tgt])
            assert_close(rec[key], lin, 1e-10, 1e-12, f"{a} x {tgt}")
            assert_close(rec[key + "_debiased"], deb, 1e-10, 1e-12, f"{a} x {tgt}")
            if not np.isnan(se):
                assert_close(rec[key + "_sketch_se"], se, 1e-9, 1e-12, f"{a} x {tgt}")
    assert any("Gaussian sketch of 8 columns (seed 3)" in n for n in doc["notes"]), doc["notes"]
    # The estimate is near the exact value: within 4 of its standard errors, or 0.05.
    ref = run_json("cka", tp, sp)
    for x, y in zip(records(doc, "cka_pairs"), records(ref, "cka_pairs")):
        if x["method"] == "sketch":
            assert abs(x["cka_linear"] - y["cka_linear"]) < max(4 * x["cka_linear_sketch_se"],
                                                                0.05), (x, y)


def test_wide_options():
    tp, sp, _, _ = wide_pair()
    for bad in (("--wide", "fast"), ("--wide-rank", "2"), ("--wide-max", "10", "--wide-rank",
                                                              "11"), ("--wide-max", "-1")):
        st, _, err = run("cka", tp, sp, *bad)
        assert st == 2 and bad[0] in err.splitlines()[0], (bad, err)
    # --wide-max 0: nothing is wide, the materialised run; a default rank follows --wide-max.
    same_values(run_json("cka", tp, sp, "--wide-max", "0"), run_json("cka", tp, sp))
    doc = run_json("cka", tp, sp, "--wide-max", "20")
    assert any("sketch of 20 columns" in n for n in doc["notes"]), doc["notes"]
    # The plan names the sketches and their lever.
    _, parts = plan_of("cka", tp, sp, "--wide-max", "20")
    sk = [p for p in parts if "Gaussian sketches" in p["part"]]
    assert sk and sk[0]["lowered_by"] == "--wide-rank" and \
        sk[0]["bytes"] == 8 * 20 * (24 + 40 + 40), parts


if __name__ == "__main__":
    kdltest.main(globals())
