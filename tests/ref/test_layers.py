#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens layers against an independent numpy float64 implementation of
Cooper et al.'s Q = S + sqrt(I*E) (docs/layers.md#knowledge-quality, written from the authors'
TPlotClassificationEfficiency / ComputeClassPCAID / IComputePCAID), NCM
accuracy, NC1 and effective rank (docs/layers.md).  The within-class mean of variant
code re-expresses the authors' indexing (KD_wo_CE, Analysis.py) in numpy."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import kdltest  # noqa: E402
from kdltest import assert_close, records, run, run_json, one_line_error  # noqa: E402
from refcommon import khash, select, write_dump  # noqa: E402

TMP = kdltest.tmpdir()
C, PER = 4, 60
N = C * PER


def within(blk, variant):
    """The |cos| of a class's block @blk that its within-class mean and minimum cover.

    The authors' code indexes the block with torch.triu_indices(n, n, offset=1), a 2 x M
    tensor, used as one index: that selects whole rows (row i once for every pair it is
    in, n - 1 times in all), not the entries (i, j), so the mean covers the whole block,
    diagonal included.  numpy does the same with one integer array; variant code is that.
    The strict pairs i < j (variants pairs and per-class) are the tuple index."""
    n = len(blk)
    if variant == "code":
        return blk[np.array(np.triu_indices(n, 1))]
    return blk[np.triu_indices(n, 1)]


def quality(x, y, xc, yc, npop, variant="code"):
    """S, I, E, Q as the authors' code computes them (float64, exact SVDs)."""
    n, d = x.shape
    nrm = np.linalg.norm(x, axis=1)
    f = x / nrm[:, None]
    a = np.abs(f @ f.T)
    dist = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0))
    cls = [c for c in np.unique(y) if np.sum(y == c) >= 2]
    idx = {c: np.where(y == c)[0] for c in cls}
    intra, mins, inter, dmin, norms = [], [], [], [], []
    for c in cls:
        sub = within(a[np.ix_(idx[c], idx[c])], variant)
        intra.append(sub.mean())
        mins.append(sub.min())
        norms.append(nrm[idx[c]].mean())
        dmin.append(min(dist[np.ix_(idx[c], idx[o])].min() for o in cls if o != c))
        inter += [a[np.ix_(idx[c], idx[o])].mean() for o in cls if o != c]
    s = np.mean(intra) - np.mean(inter)
    r = min(n, d)
    e = 2 * np.mean(dmin) / np.mean(norms) * (npop / np.pi) ** (1.0 / r)

    ccls = [c for c in np.unique(yc) if np.sum(yc == c) >= 2]
    ncols = max(np.sum(yc == c) for c in ccls)
    rows, ks = [], []
    for c in ccls:
        g = xc[yc == c]
        g = g - g.mean(0)
        sv = np.linalg.svd(g, compute_uv=False) ** 2
        row = np.zeros(ncols)
        row[:len(sv)] = sv / sv.sum()
        cnt = 0
        while np.sum(row[:cnt]) < 0.95 and cnt < ncols - 1:
            cnt += 1
        rows.append(row)
        ks.append(cnt)
    rows = np.array(rows)
    if variant in ("code", "pairs"):
        t = rows[:, :int(sum(ks))]
        t = np.where(t == 0, 1e-127, t)
        t = t / t.sum(1, keepdims=True)
        h = -(t * np.log(t)).sum(1)
        h[np.isnan(h)] = 0
        ent = h.mean() / np.log(5)
    else:
        hs = []
        for row, k in zip(rows, ks):
            t = np.where(row[:k] == 0, 1e-127, row[:k])
            t = t / t.sum()
            hs.append(-(t * np.log(t)).sum() / np.log(k) if k > 1 else 0.0)
        ent = np.mean(hs)
    i = (1 - np.mean(mins)) * ent
    return dict(q=s + np.sqrt(i * e), s=s, i=i, e=e, k_sum=int(sum(ks)), intra=np.mean(intra))


def extra(x, y):
    present = list(np.unique(y))
    mu = np.array([x[y == c].mean(0) for c in present])
    pred = np.argmin(((x[:, None, :] - mu[None]) ** 2).sum(-1), 1)
    acc = np.mean(np.array(present)[pred] == y)
    res = x - mu[np.searchsorted(present, y)]
    sw = res.T @ res / len(x)
    dm = mu - x.mean(0)
    sb = dm.T @ dm / len(present)
    nc1 = np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / len(present)
    lam = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    p = lam / lam.sum()
    p = p[p > 0]
    return dict(ncm_accuracy=acc, nc1=nc1, effective_rank=np.exp(-(p * np.log(p)).sum()))


def cka(x, y):
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def make_teacher(rng):
    """Layers of planted quality: noise, clustered with spread, nearly collapsed, and a
    float32 4-D map; balanced classes in shuffled order."""
    y = np.repeat(np.arange(C), PER)
    rng.shuffle(y)
    centres = rng.standard_normal((C, 12)) * 3
    layers = {
        "noise": (rng.standard_normal((N, 10)), 0),
        "conv": ((centres[y][:, :3, None, None] + rng.standard_normal((N, 3, 2, 2)))
                 .astype(np.float32), 1),
        "mid": (centres[y] + 1.5 * rng.standard_normal((N, 12)), 2),
        "late": (np.abs(centres[y][:, :6]) + 0.01 * rng.standard_normal((N, 6)), 3),
    }
    logits = centres[y][:, :C] + 0.3 * rng.standard_normal((N, C))
    views = {k: (v.astype(np.float64).mean(axis=(2, 3)) if v.ndim == 4 else v)
             for k, (v, _) in layers.items()}
    return y, layers, logits, views


def check_layer(r, d, x, y, xc, yc, npop, variant="code", rtol=1e-9):
    ref = quality(x, y, xc, yc, npop, variant)
    for k in ("q", "s", "i", "e"):
        assert_close(r[k], ref[k], rtol, 1e-12, f"{r['layer']} {k}")
    assert d["k_sum"] == ref["k_sum"], (d["k_sum"], ref["k_sum"])
    ex = extra(x, y)
    assert_close(r["ncm_accuracy"], ex["ncm_accuracy"], 0, 1e-15, "ncm")
    assert_close(r["nc1"], ex["nc1"], 1e-7, 0, f"{r['layer']} nc1")
    assert_close(r["effective_rank"], ex["effective_rank"], 1e-9, 0, "effective rank")


def by_layer(doc, table):
    return {r["layer"]: r for r in records(doc, table)}


def test_quality_on_all_rows():
    rng = np.random.default_rng(1)
    y, layers, logits, v = make_teacher(rng)
    path = os.path.join(TMP, "t.h5")
    write_dump(path, {"final": (0, layers, logits)}, y)
    doc = run_json("layers", "-t", path)
    rows, det = by_layer(doc, "layers"), by_layer(doc, "layers_detail")
    assert set(rows) == {"noise", "conv", "mid", "late"}
    onehot = np.eye(C)[y]
    for name, r in rows.items():
        check_layer(r, det[name], v[name], y, v[name], y, N)
        assert_close(r["cka_logits"], cka(v[name], logits), 1e-10)
        assert_close(r["cka_labels"], cka(v[name], onehot), 1e-10)
    # Planted: the nearly collapsed layer has I ~ 0 and Q ~ S; noise has S ~ 0.
    assert rows["late"]["i"] < 1e-2 and abs(rows["noise"]["s"]) < 0.05
    # 60 samples per class: in range exactly when I and E are in [0, 1].
    for name, r in rows.items():
        assert det[name]["class_rows_min"] == PER and det[name]["spectra_rows_min"] == PER
        assert r["in_range"] == (0 <= r["i"] <= 1 and 0 <= r["e"] <= 1), r
        notes = [f"{k} = {r[k.lower()]:.3g} outside [0, 1]" for k in ("I", "E")
                 if not 0 <= r[k.lower()] <= 1]
        assert r["range_note"] == "; ".join(notes), r
    # Isotropic noise spreads every class over all its dimensions: I > 1 with ln 5.
    assert rows["noise"]["i"] > 1 and not rows["noise"]["in_range"]


def test_quality_on_seeded_subsamples_and_variant():
    rng = np.random.default_rng(2)
    y, layers, logits, v = make_teacher(rng)
    path = os.path.join(TMP, "t2.h5")
    write_dump(path, {"final": (0, layers, logits)}, y)
    for variant in ("code", "pairs", "per-class"):
        doc = run_json("layers", "-t", path, "--subsample", "100", "--per-class", "30",
                       "--seed", "4", "--variant", variant)
        xr = select(N, 25, 4, 1, labels=y, nclasses=C)
        cr = select(N, 30, 4, 2, labels=y, nclasses=C)
        assert len(xr) == 100 and len(cr) == 120
        rows, det = by_layer(doc, "layers"), by_layer(doc, "layers_detail")
        for name, r in rows.items():
            check_layer(r, det[name], v[name][xr], y[xr], v[name][cr], y[cr], N, variant)
            assert det[name]["n"] == 100
        assert_close(det["mid"]["entropy_norm"], 1.0 if variant == "per-class" else np.log(5),
                     1e-15)


def test_code_variant_reproduces_the_authors_indexing():
    """At 10 samples per class the whole-block mean of the authors' code and the strict
    pairs differ by mean_c (1 - intra_c) / n_c, about 0.03 in S and Q: variant code is
    the former, diagonal included; variant pairs the latter."""
    per = 10
    rng = np.random.default_rng(11)
    y = np.repeat(np.arange(C), per)
    rng.shuffle(y)
    centres = rng.standard_normal((C, 8)) * 2
    x = centres[y] + 1.2 * rng.standard_normal((C * per, 8))
    path = os.path.join(TMP, "small.h5")
    write_dump(path, {"final": (0, {"f": (x, 0)}, centres[y][:, :C])}, y)
    got = {}
    for variant in ("code", "pairs"):
        doc = run_json("layers", "-t", path, "--variant", variant)
        got[variant] = by_layer(doc, "layers")["f"]
        det = by_layer(doc, "layers_detail")["f"]
        ref = quality(x, y, x, y, C * per, variant)
        check_layer(got[variant], det, x, y, x, y, C * per, variant, rtol=1e-12)
        assert_close(det["intra"], ref["intra"], 1e-12, 0, f"{variant} intra")
    nrm = x / np.linalg.norm(x, axis=1)[:, None]
    gap = np.mean([(1 - np.abs(nrm[y == c] @ nrm[y == c].T)[np.triu_indices(per, 1)].mean()) / per
                   for c in range(C)])
    assert gap > 0.01, gap
    for k in ("q", "s"):
        assert_close(got["code"][k] - got["pairs"][k], gap, 1e-10, 0, f"code - pairs {k}")
    for k in ("i", "e"):
        assert got["code"][k] == got["pairs"][k], k


def test_range_notes_at_30_samples_per_class():
    """Q was designed for I, E in [0, 1] and the authors' subsample sizes: with 30 samples
    per class every layer is flagged (in the table, the JSON, the notes), and a layer with
    I > 1 says so too.  kdlens used to give the ranking without a word."""
    per = 30
    rng = np.random.default_rng(12)
    y = np.repeat(np.arange(C), per)
    rng.shuffle(y)
    centres = rng.standard_normal((C, 12)) * 3
    layers = {"noise": (rng.standard_normal((C * per, 40)), 0),
              "mid": (centres[y] + 1.5 * rng.standard_normal((C * per, 12)), 1)}
    path = os.path.join(TMP, "thirty.h5")
    write_dump(path, {"final": (0, layers, centres[y][:, :C])}, y)
    doc = run_json("layers", "-t", path)
    rows, det = by_layer(doc, "layers"), by_layer(doc, "layers_detail")
    few = ("fewer than 50 samples per class (smallest class: 30 in the subsample, 30 in the "
           "class spectra)")
    for name, r in rows.items():
        x = layers[name][0]
        ref = quality(x, y, x, y, C * per)
        assert_close(r["i"], ref["i"], 1e-9, 1e-12, "I")
        assert det[name]["class_rows_min"] == per and det[name]["spectra_rows_min"] == per
        assert r["in_range"] is False, r
        notes = [f"{k} = {ref[k.lower()]:.3g} outside [0, 1]" for k in ("I", "E")
                 if not 0 <= ref[k.lower()] <= 1]
        assert r["range_note"] == "; ".join(notes + [few]), r
    assert rows["noise"]["i"] > 1 and rows["noise"]["range_note"].startswith("I = "), rows
    assert all(r["in_range"] is False for r in records(doc, "layers_recommended"))
    assert any("outside its design range for 2 of 2 layer rows" in n for n in doc["notes"]), \
        doc["notes"]


def test_ranking_and_recommendation():
    rng = np.random.default_rng(3)
    y, layers, logits, v = make_teacher(rng)
    path = os.path.join(TMP, "t3.h5")
    write_dump(path, {"final": (0, layers, logits)}, y)
    doc = run_json("layers", "-t", path, "-k", "2")
    ranked = records(doc, "layers")
    qs = [r["q"] for r in ranked]
    assert qs == sorted(qs, reverse=True)
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    top = sorted(ranked[:2], key=lambda r: r["depth"])
    rec = records(doc, "layers_recommended")
    assert [r["layer"] for r in rec] == [r["layer"] for r in top]
    assert [r["recommended"] for r in ranked] == [True, True, False, False]


def test_with_a_student():
    rng = np.random.default_rng(4)
    y, layers, logits, v = make_teacher(rng)
    ids = np.arange(N) * 3
    tp, sp = os.path.join(TMP, "t4.h5"), os.path.join(TMP, "s4.h5")
    write_dump(tp, {"final": (0, layers, logits)}, y, ids=ids)
    s1 = v["mid"][:, :5] + rng.standard_normal((N, 5))
    s2 = np.tanh(v["late"]) + 0.1 * rng.standard_normal((N, 6))
    perm = rng.permutation(N)
    write_dump(sp, {"final": (0, {"a": (s1, 0), "b": (s2, 1)}, s2[:, :C])}, y, role="student",
               order=perm, ids=ids)
    doc = run_json("layers", "-t", tp, "-s", sp)
    pairs = records(doc, "layers_cka")
    for r in pairs:
        if r["teacher_layer"] == "mid" and r["student_layer"] == "a":
            assert_close(r["cka_linear"], cka(v["mid"], s1), 1e-10)
    late = by_layer(doc, "layers")["late"]
    best = max((cka(v["late"], s1), "a"), (cka(v["late"], s2), "b"))
    assert late["student_best"] == best[1]
    assert_close(late["cka_student_best"], best[0], 1e-10)


def class_subset(y, ncls, subsample, per_class=500, classes="auto", min_per_class=None,
                 rule="frequent", seed=0):
    """The classes layers keeps and its per-class sizes, re-expressed from docs/layers.md:
    None for every class; else (kept, M, rows per class of X and of X_c, kept samples)."""
    count = np.bincount(y, minlength=ncls)
    if classes == "all" or (classes == "auto" and min_per_class is None
                            and subsample // ncls >= 2):
        return None

    def at_least(m):
        return int((count >= m).sum())
    m = min_per_class
    if m is None:
        t = min(10 if classes == "auto" else classes, at_least(2), subsample // 2)
        m = next((m for m in range(50, 2, -1) if at_least(m) >= t and subsample // m >= t), 2)
    kmax = subsample // m if classes == "auto" else min(subsample // m, classes)
    elig = np.flatnonzero(count >= m)
    if rule == "frequent":
        order = elig[np.lexsort((elig, -count[elig]))]
    else:
        order = elig[np.lexsort((elig, khash(seed, elig, 4)))]
    kept = np.sort(order[:kmax])
    n_kept = int(count[kept].sum())
    per_c = max(1, min(per_class, n_kept // len(kept)))
    return kept, m, subsample // len(kept), per_c, n_kept


def subset_rows(y, ncls, kept, per, seed, stream):
    """kdl_sample_select_counts(): a class's rows are those kdl_sample_select() picks."""
    rows = select(len(y), per, seed, stream, labels=y, nclasses=ncls)
    return rows[np.isin(y[rows], kept)]


def zipf_dump(path, ncls, n, seed, logits_dtype=np.float64):
    """Labels with a Zipf-like law over @ncls classes (many rare, some absent); a clustered
    layer, a noise layer and a nearly collapsed one."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, ncls + 1) ** 1.1
    y = rng.permutation(ncls)[rng.choice(ncls, size=n, p=p / p.sum())]
    centres = rng.standard_normal((ncls, 12)) * 3
    layers = {"noise": (rng.standard_normal((n, 10)), 0),
              "mid": (centres[y] + 1.5 * rng.standard_normal((n, 12)), 1),
              "late": (np.abs(centres[y][:, :6]) + 0.05 * rng.standard_normal((n, 6)), 2)}
    logits = (centres[y] @ rng.standard_normal((12, ncls))).astype(logits_dtype)
    write_dump(path, {"final": (0, layers, logits)}, y)
    return y, {k: v for k, (v, _) in layers.items()}, logits


def check_subset(doc, y, ncls, views, sel, seed, variant="code"):
    """Q, S, I, E, the parts and the class-geometry columns on exactly the kept classes'
    rows, and the tables that name them."""
    kept, m, per_x, per_c, n_kept = sel
    xr = subset_rows(y, ncls, kept, per_x, seed, 1)
    cr = subset_rows(y, ncls, kept, per_c, seed, 2)
    rows, det = by_layer(doc, "layers"), by_layer(doc, "layers_detail")
    for name, r in rows.items():
        x = views[name]
        ref = quality(x[xr], y[xr], x[cr], y[cr], n_kept, variant)
        for k in ("q", "s", "i", "e"):
            assert_close(r[k], ref[k], 1e-10, 1e-12, f"{name} {k}")
        assert det[name]["k_sum"] == ref["k_sum"]
        assert det[name]["n"] == len(xr) and det[name]["classes"] == len(kept), det[name]
        ex = extra(x[xr], y[xr])
        assert_close(r["ncm_accuracy"], ex["ncm_accuracy"], 0, 1e-15, "ncm")
        assert_close(r["nc1"], ex["nc1"], 1e-7, 0, f"{name} nc1")
        assert_close(r["effective_rank"], ex["effective_rank"], 1e-9, 0, "effective rank")
        assert_close(det[name]["packing"], (n_kept / np.pi) ** (1 / min(len(xr), x.shape[1])),
                     1e-14)
    count = np.bincount(y, minlength=ncls)
    (summary,) = records(doc, "layers_class_subset")
    assert summary == dict(summary, classes=ncls, kept=len(kept), min_per_class=m,
                           eligible=int((count >= m).sum()), samples=len(y),
                           samples_kept=n_kept, kept_class_min=count[kept].min(),
                           kept_class_max=count[kept].max(), subsample_per_class=per_x,
                           spectra_per_class=per_c), summary


def test_class_subset_when_classes_outnumber_the_subsample():
    """--subsample 200 leaves fewer than 2 samples for each of 120 classes: kdlens used to
    refuse; it now keeps the most frequent classes with enough samples, says so, and Q
    is the numpy Q of exactly those classes' rows."""
    ncls, n = 120, 2400
    path = os.path.join(TMP, "zipf.h5")
    y, views, logits = zipf_dump(path, ncls, n, 21)
    count = np.bincount(y, minlength=ncls)
    assert (count == 0).any() and (count == 1).any() and (count >= 20).sum() >= 10
    for variant in ("code", "pairs", "per-class"):
        doc = run_json("layers", "-t", path, "--subsample", "200", "--variant", variant)
        sel = class_subset(y, ncls, 200)
        # 10 classes (the authors' fewest) of 20 samples (as many as 200 rows hold).
        assert sel[1] == 20 and len(sel[0]) == 10, sel
        assert list(sel[0]) == sorted(np.argsort(-count, kind="stable")[:10])
        check_subset(doc, y, ncls, views, sel, 0, variant)
    notes = [x for x in doc["notes"] if x.startswith("class subset")]
    assert len(notes) == 1 and "10 of the 120 classes, the 10 most frequent" in notes[0], notes
    assert f"hold {sel[4]} of the {n} samples" in notes[0], notes
    # The CKA columns still use every sample and every class.
    onehot = np.eye(ncls)[y]
    for name, r in by_layer(doc, "layers").items():
        assert_close(r["cka_logits"], cka(views[name], logits), 1e-10)
        assert_close(r["cka_labels"], cka(views[name], onehot), 1e-10)


def test_class_subset_forced_seeded_and_given_minimum():
    """--classes K forces the subset at any C (the large-C path on a small dump);
    --class-rule seeded keeps the eligible classes of smallest hash of (seed, class id),
    whatever the row order; --min-per-class sets M."""
    ncls, n = 60, 1500
    path = os.path.join(TMP, "zipf60.h5")
    y, views, _ = zipf_dump(path, ncls, n, 22)
    for args, kw in ((["--classes", "7", "--class-rule", "seeded", "--min-per-class", "6"],
                      dict(classes=7, min_per_class=6, rule="seeded")),
                     (["--classes", "30"], dict(classes=30)),
                     (["--classes", "12", "--subsample", "1000", "--per-class", "40"],
                      dict(classes=12, per_class=40)),
                     (["--min-per-class", "30"], dict(min_per_class=30))):
        sub = int(args[args.index("--subsample") + 1]) if "--subsample" in args else 5000
        doc = run_json("layers", "-t", path, "--seed", "3", *args)
        sel = class_subset(y, ncls, sub, seed=3, **kw)
        check_subset(doc, y, ncls, views, sel, 3)
    # --classes 30: M comes down until 30 classes qualify.
    count = np.bincount(y, minlength=ncls)
    m = class_subset(y, ncls, 5000, classes=30)[1]
    assert (count >= m).sum() >= 30 > (count >= m + 1).sum(), m
    # The seeded subset is not the most frequent one.
    seeded = class_subset(y, ncls, 5000, classes=7, min_per_class=6, rule="seeded", seed=3)[0]
    frequent = class_subset(y, ncls, 5000, classes=7, min_per_class=6, seed=3)[0]
    assert list(seeded) != list(frequent)


def test_every_class_is_still_the_default_path():
    """With 2 samples per class or more in --subsample, no subset: no note, no table, and
    --classes all is the same document."""
    ncls, n = 60, 1500
    path = os.path.join(TMP, "zipf60b.h5")
    y, views, _ = zipf_dump(path, ncls, n, 23)
    auto = run_json("layers", "-t", path, "--subsample", "120")
    assert auto == run_json("layers", "-t", path, "--subsample", "120", "--classes", "all")
    assert not records(auto, "layers_class_subset")
    assert not any(x.startswith("class subset") for x in auto["notes"])


def test_vocabulary_sized_logits_leave_their_cka_out():
    """min(N, C) above 4096: Q still on a class subset, the logits and labels CKA columns
    NaN with a note saying why, instead of C x C products (7.6 GiB at C = 32,000)."""
    ncls, n = 4200, 4300
    path = os.path.join(TMP, "vocab.h5")
    y, views, _ = zipf_dump(path, ncls, n, 24, logits_dtype=np.float16)
    doc = run_json("layers", "-t", path)
    check_subset(doc, y, ncls, views, class_subset(y, ncls, 5000), 0)
    for r in records(doc, "layers"):
        assert r["cka_logits"] is None and r["cka_labels"] is None, r
    assert any("min(N, C) = 4200 is above 4096" in x for x in doc["notes"]), doc["notes"]


def test_bad_requests():
    rng = np.random.default_rng(5)
    y, layers, logits, _ = make_teacher(rng)
    path = os.path.join(TMP, "nolabels.h5")
    write_dump(path, {"final": (0, layers, logits)}, None)
    st, _, err = run("layers", "-t", path)
    assert st == 1
    one_line_error(err, "labels")
    good = os.path.join(TMP, "good.h5")
    write_dump(good, {"final": (0, layers, logits)}, y)
    st, _, err = run("layers")
    assert st == 2 and "teacher" in err.splitlines()[0]  # usage errors add the usage line
    st, _, err = run("layers", "-t", good, "--variant", "paper")
    assert st == 2
    st, _, err = run("layers", "-t", good, "--subsample", "6", "--classes", "all")
    assert st == 2
    one_line_error(err, "subsample")
    st, _, err = run("layers", "-t", good, "--min-per-class", "61", "--classes", "3")
    assert st == 2
    one_line_error(err, "--min-per-class 61")
    st, _, err = run("layers", "-t", good, "--min-per-class", "2600")
    assert st == 2  # no room for 2 classes of 2600 in --subsample 5000
    one_line_error(err, "--min-per-class 2600")
    st, _, err = run("layers", "-t", good, "--min-per-class", "5", "--classes", "all")
    assert st == 2
    one_line_error(err, "--classes all")
    for bad in (["--classes", "1"], ["--classes", "some"], ["--class-rule", "random"],
                ["--min-per-class", "1"]):
        st, _, err = run("layers", "-t", good, *bad)
        assert st == 2, bad
    single = os.path.join(TMP, "single.h5")
    write_dump(single, {"final": (0, {"f": (rng.standard_normal((5, 3)), 0)},
                                  rng.standard_normal((5, 5)))}, np.arange(5))
    st, _, err = run("layers", "-t", single)
    assert st == 1
    one_line_error(err, "two classes with two samples")
    st, _, err = run("layers", "-t", good, "-k", "0")
    assert st == 2


if __name__ == "__main__":
    kdltest.main(globals())
