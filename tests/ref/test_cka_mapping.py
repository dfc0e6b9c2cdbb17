#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens cka's table cka_mapping (docs/cka.md#layer-mapping) against a numpy float64
brute force over every monotone map of B's layers to A's, on small cases."""
import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import kdltest  # noqa: E402
from kdltest import assert_close, records, run_json  # noqa: E402
from refcommon import write_dump  # noqa: E402

TMP = kdltest.tmpdir()
N, C = 200, 5


def lin_cka(x, y, debiased=False):
    """Linear CKA in Gram form (biased HKH, or U-centred), float64."""
    def centre(g):
        g = g.copy()
        n = len(g)
        if debiased:
            np.fill_diagonal(g, 0)
            m = g.sum(0) / (n - 2)
            m -= m.sum() / (2 * (n - 1))
            g -= m[:, None] + m[None, :]
            np.fill_diagonal(g, 0)
        else:
            m = g.mean(0)
            m -= m.mean() / 2
            g -= m[:, None] + m[None, :]
        return g
    gx, gy = centre(x @ x.T), centre(y @ y.T)
    return gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy))


def brute_force(v):
    """v[j, i]: A's layer j against B's layer i.  The best row of each column (the first
    on ties) and, over every non-decreasing map i -> m(i), the one of largest sum,
    ties to the smallest m(last), then m(last - 1), ...  Sums left to right."""
    na, nb = v.shape
    best = [int(np.argmax(v[:, i])) for i in range(nb)]
    top, arg = -np.inf, None
    for m in itertools.combinations_with_replacement(range(na), nb):
        s = 0.0
        for i, j in enumerate(m):
            s += v[j, i]
        if s > top or (s == top and m[::-1] < arg[::-1]):
            top, arg = s, m
    return best, list(arg)


def models(rng, na=4, nb=3, dup=None):
    """A with na feature layers and B with nb; B's layer i copies A's layer perm[i]
    through a random map plus noise, so the best layers need not be monotone.  Layer names
    sort against their depth (A's depth d is named 'a<na - d>')."""
    labels = rng.integers(0, C, N)
    base = rng.standard_normal((N, 6))
    a = {}
    for d in range(na):
        x = np.tanh(base @ rng.standard_normal((6, 5 + d))) + 0.3 * rng.standard_normal(
            (N, 5 + d))
        if dup is not None and d == dup + 1:
            x = a[f"a{na - dup}"][0].copy()
        a[f"a{na - d}"] = (x, d)
    perm = rng.permutation(na)
    b = {}
    for i in range(nb):
        src = a[f"a{na - perm[i % na]}"][0]
        y = src @ rng.standard_normal((src.shape[1], 4)) + 0.8 * rng.standard_normal((N, 4))
        b[f"b{i}"] = (y, 10 * i)
    alog = base @ rng.standard_normal((6, C))
    blog = b[f"b{nb - 1}"][0] @ rng.standard_normal((4, C))
    return labels, a, alog, b, blog


def order_of(layers, logits):
    """The layers in kdlens's order (by depth, then the logits) with their data."""
    names = sorted(layers, key=lambda k: layers[k][1])
    return names + ["logits"], [layers[k][0] for k in names] + [logits]


def dumps(name, rng, checkpoints=("final",), **kw):
    labels, a, alog, b, blog = models(rng, **kw)
    tp, sp = os.path.join(TMP, name + "-a.h5"), os.path.join(TMP, name + "-b.h5")
    write_dump(tp, {c: (k, a, alog) for k, c in enumerate(checkpoints)}, labels)
    write_dump(sp, {c: (k, b, blog) for k, c in enumerate(checkpoints)}, labels, role="student")
    return tp, sp, order_of(a, alog), order_of(b, blog)


def check(doc, an, bn, ref, checkpoint="final"):
    """The table's rows at @checkpoint against the brute force on the numpy matrix @ref
    and on the values of the cka table."""
    rows = [r for r in records(doc, "cka_mapping") if r["checkpoint"] == checkpoint]
    assert [r["layer_b"] for r in rows] == bn, rows
    shown = {r["layer"]: r for r in records(doc, "cka") if r["checkpoint"] == checkpoint}
    got = np.array([[shown[x][y] for y in bn] for x in an])
    for j, i in np.ndindex(ref.shape):
        assert_close(got[j, i], ref[j, i], 1e-9, 1e-12, f"{an[j]} x {bn[i]}")
    for v in (got, ref):
        best, mono = brute_force(v)
        for i, r in enumerate(rows):
            assert r["best_layer_a"] == an[best[i]], (r, an[best[i]])
            assert r["monotone_layer_a"] == an[mono[i]], (r, an[mono[i]])
            assert_close(r["best_cka"], v[best[i], i], 1e-9, 1e-12)
            assert_close(r["monotone_cka"], v[mono[i], i], 1e-9, 1e-12)
    return rows


def test_against_brute_force_on_small_cases():
    for seed, na, nb in [(1, 4, 3), (2, 3, 4), (3, 5, 2), (4, 2, 5), (5, 4, 4)]:
        tp, sp, (an, ax), (bn, bx) = dumps(f"small{seed}", np.random.default_rng(seed),
                                          na=na, nb=nb)
        doc = run_json("cka", tp, sp)
        ref = np.array([[lin_cka(x, y) for y in bx] for x in ax])
        rows = check(doc, an, bn, ref)
        assert all(r["checkpoint_b"] == "final" for r in rows)
        # Depths: B's layers carry theirs, the logits none.
        assert [r.get("depth_b") for r in rows] == [10 * i for i in range(nb)] + [None]
        mono = [an.index(r["monotone_layer_a"]) for r in rows]
        assert mono == sorted(mono), mono
        assert all(r["monotone_cka"] <= r["best_cka"] for r in rows)


def test_monotone_differs_from_best():
    """A case where the best layers go backwards, so the monotone map must give way."""
    found = False
    for seed in range(10, 30):
        tp, sp, (an, ax), (bn, bx) = dumps(f"order{seed}", np.random.default_rng(seed))
        ref = np.array([[lin_cka(x, y) for y in bx] for x in ax])
        best, mono = brute_force(ref)
        if best == mono:
            continue
        check(run_json("cka", tp, sp), an, bn, ref)
        found = True
        break
    assert found, "no seed with a non-monotone best mapping"


def test_checkpoints_and_debiased():
    tp, sp, (an, ax), (bn, bx) = dumps("ck", np.random.default_rng(7), checkpoints=("e1", "e2"))
    doc = run_json("cka", tp, sp, "--checkpoint", "all", "--estimator", "debiased")
    ref = np.array([[lin_cka(x, y, True) for y in bx] for x in ax])
    for c in ("e1", "e2"):
        check(doc, an, bn, ref, c)
    assert len(records(doc, "cka_mapping")) == 2 * len(bn)


def test_ties_break_to_the_earlier_layer():
    """A's depths 1 and 2 hold the same data: equal CKA with every layer of B."""
    tp, sp, (an, ax), (bn, bx) = dumps("tie", np.random.default_rng(8), na=4, nb=3, dup=1)
    doc = run_json("cka", tp, sp)
    shown = {r["layer"]: r for r in records(doc, "cka")}
    d1, d2 = an[1], an[2]
    assert all(shown[d1][y] == shown[d2][y] for y in bn), "the duplicate's values differ"
    rows = check(doc, an, bn, np.array([[lin_cka(x, y) for y in bx] for x in ax]))
    assert all(r["best_layer_a"] != d2 and r["monotone_layer_a"] != d2 for r in rows), rows
    assert any(r["best_layer_a"] == d1 for r in rows), rows
    assert any(r["monotone_layer_a"] == d1 for r in rows), rows


def test_without_b_no_mapping():
    tp, _, _, _ = dumps("alone", np.random.default_rng(9))
    doc = run_json("cka", tp)
    assert not records(doc, "cka_mapping")


def test_every_format():
    tp, sp, _, (bn, _) = dumps("fmt", np.random.default_rng(11))
    _, csv, _ = kdltest.run("cka", tp, sp, "--format", "csv", "--table", "cka_mapping", check=0)
    head = csv.splitlines()[0].split(",")
    for k in ("layer_b", "best_layer_a", "best_cka", "monotone_layer_a", "monotone_cka"):
        assert k in head, head
    assert len(csv.splitlines()) == 1 + len(bn)
    for fmt in ("table", "md", "tex"):
        _, out, _ = kdltest.run("cka", tp, sp, "--format", fmt, check=0)
        assert "monotone_layer_a" in out or "monotone\\_layer\\_a" in out, fmt


kdltest.main(globals())
