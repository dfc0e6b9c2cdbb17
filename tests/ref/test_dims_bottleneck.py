#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens dims's softmax_bottleneck table (docs/dims.md#softmax-bottleneck) against numpy
float64: the spectrum of the teacher's centred log-probabilities over its tokens, by the
exact paths and by a forced sketch."""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

TMP = kt.tmpdir()
N, V, H = 600, 300, 40            # tokens, vocabulary, the teacher's hidden width
WIDTHS = {"narrow": 16, "wide": 280}


def write(path, role, model, logits, w=None, hidden=None):
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = role
        f.attrs["model"] = model
        f["labels"] = (np.arange(N) % V).astype(np.int64)
        f["sequence_ids"] = (np.arange(N) // 30).astype(np.int64)
        f["positions"] = (np.arange(N) % 30).astype(np.int32)
        g = f.create_group("checkpoints/final")
        g.attrs["step"] = np.int64(1)
        g["logits"] = logits
        if w is not None:
            g["features/hidden"] = hidden
            g["features/hidden"].attrs["depth"] = 1
            g["head/weight"] = w
            g["head/bias"] = np.zeros(V)
            g["head"].attrs["input"] = "hidden"


def dumps(name, tail):
    """A teacher LM of hidden width H (plus a decaying full-rank tail of scale @tail), and
    students of the widths WIDTHS (their heads; their logits do not matter here)."""
    rng = np.random.default_rng(len(name))
    h = rng.standard_normal((N, H)) * np.linspace(3.0, 0.2, H)
    z = h @ rng.standard_normal((V, H)).T + rng.standard_normal(V)
    z += tail * rng.standard_normal((N, V)) * np.exp(-np.arange(V) / 30.0)
    tp = os.path.join(TMP, name + "-t.h5")
    write(tp, "teacher", "T", z)
    sps = []
    for m, d in WIDTHS.items():
        sp = os.path.join(TMP, f"{name}-{m}.h5")
        ws, hs = rng.standard_normal((V, d)), rng.standard_normal((N, d))
        write(sp, "student", m, hs @ ws.T, ws, hs)
        sps += ["-s", sp]
    return tp, sps, z


def reference(z):
    """The eigenvalue shares of the centred log-probabilities: log p, minus each row's mean
    over the vocabulary, centred over the tokens."""
    lp = z - z.max(1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    x = lp - lp.mean(1, keepdims=True)
    x -= x.mean(0)
    lam = np.linalg.svd(x, compute_uv=False) ** 2
    tail = np.concatenate([[lam[d:].sum() / lam.sum() for d in range(len(lam))],
                           np.zeros(V + 1 - len(lam))])
    p = lam[lam > 0] / lam.sum()
    rank = {q: int(np.argmax(tail <= s)) for q, s in (("99", 0.01), ("999", 0.001))}
    return rank, float(np.exp(-(p * np.log(p)).sum())), tail


def rows(doc):
    r = {x["model"]: x for x in kt.records(doc, "softmax_bottleneck")}
    assert sorted(r) == sorted(WIDTHS), r
    return r


def test_exact_paths_against_numpy():
    tp, sps, z = dumps("exact", 0.3)
    rank, eff, tail = reference(z)
    assert rank["99"] < WIDTHS["wide"] and rank["99"] > WIDTHS["narrow"], rank
    for method in ("exact-features", "exact-gram"):
        doc = kt.run_json("dims", "-t", tp, *sps, "--logit-spectrum", method)
        for m, r in rows(doc).items():
            d = WIDTHS[m]
            assert r["d_s"] == d and r["classes"] == V and r["samples"] == N, r
            assert r["spectrum_method"] == method, r
            for q in ("99", "999"):
                assert r["rank_" + q] == rank[q], (method, m, q, r, rank)
                assert r["d_below_rank_" + q] == ("yes" if d < rank[q] else "no"), r
                assert "rank_%s_lo" % q not in r, r
            kt.assert_close(r["effective_rank"], eff, 1e-9, 0, f"{method} effective rank")
            assert r["d_below_effective_rank"] == ("yes" if d < eff else "no"), r
            kt.assert_close(r["variance_beyond_d"], tail[d], 0, 1e-10, f"{method} tail")
        assert rows(doc)["narrow"]["d_below_rank_99"] == "yes"
        assert any(n.startswith("softmax_bottleneck:") for n in doc["notes"])


def test_sketch_of_a_low_rank_teacher_is_exact():
    """Centred log-probabilities of rank H = 40 and a sketch of 64 + 16 columns: the two
    ends meet at numpy's ranks; the effective rank needs the whole spectrum."""
    tp, sps, z = dumps("lowrank", 0.0)
    rank, _, tail = reference(z)
    doc = kt.run_json("dims", "-t", tp, *sps, "--logit-spectrum", "sketch", "--sketch-rank",
                      "64", "--sketch-oversample", "16")
    for m, r in rows(doc).items():
        assert r["spectrum_method"] == "sketch", r
        for q in ("99", "999"):
            assert r["rank_" + q] == rank[q] == r["rank_%s_lo" % q], (m, q, r, rank)
        assert r["d_below_effective_rank"] == "unknown" and r["effective_rank"] is None, r
        kt.assert_close(r["variance_beyond_d"], tail[WIDTHS[m]], 0, 1e-9, "sketch tail")


def test_sketch_bounds_hold():
    """A full-rank tail and a small sketch: numpy's ranks lie between the two ends, and
    the answer is yes or no only where both ends agree."""
    tp, sps, z = dumps("tail", 1.0)
    rank, _, tail = reference(z)
    seen = set()
    for r_ in ("8", "24", "48"):
        doc = kt.run_json("dims", "-t", tp, *sps, "--logit-spectrum", "sketch",
                          "--sketch-rank", r_, "--sketch-oversample", "4")
        for m, r in rows(doc).items():
            d = WIDTHS[m]
            for q in ("99", "999"):
                lo, hi = r["rank_%s_lo" % q], r["rank_" + q]
                assert lo <= rank[q] <= hi, (r_, m, q, lo, rank[q], hi)
                want = "yes" if d < lo else "no" if d >= hi else "unresolved"
                assert r["d_below_rank_" + q] == want, r
                seen.add(want)
            assert (r["variance_beyond_d_lo"] - 1e-9 <= tail[d]
                    <= r["variance_beyond_d"] + 1e-9), (r, tail[d])
    assert "unresolved" in seen, seen


def test_no_teacher_no_table():
    tp, sps, _ = dumps("alone", 0.1)
    assert not kt.records(kt.run_json("dims", "-t", tp), "softmax_bottleneck")
    assert not kt.records(kt.run_json("dims", *sps), "softmax_bottleneck")


if __name__ == "__main__":
    kt.main(globals())
