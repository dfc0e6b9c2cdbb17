#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens cka --sequences (docs/cka.md#token-dumps-subsamples-by-sequence): the subsample of a
token dump drawn by sequence, against a numpy re-implementation of the draw (kdlens's hash)
and the RBF and robust CKA of test_cka.py on the rows drawn."""
import json
import os
import sys

import h5py

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import kdltest  # noqa: E402
from kdltest import assert_close, records, run  # noqa: E402
from refcommon import khash, write_dump  # noqa: E402
from test_cka import cka, gram_rbf, robust_cka  # noqa: E402

TMP = kdltest.tmpdir()
STREAM = 1  # the cka subsample's


def draw(seq, count, per_seq, seed):
    """Sequences by increasing hash (then id), each whole or its per_seq rows of smallest
    row hash (then row), until count rows are taken."""
    rows = np.arange(len(seq))
    hs = khash(seed, seq.astype(np.uint64), STREAM)
    hr = khash(seed, rows, STREAM + 1)
    taken = []
    for s in sorted(set(seq.tolist()), key=lambda s: (int(hs[seq == s][0]), s)):
        if len(taken) >= count:
            break
        mine = rows[seq == s]
        mine = sorted(mine, key=lambda i: (int(hr[i]), i))
        taken += mine[:per_seq] if per_seq else mine
    return np.sort(np.array(taken))


def token_dump(name, rng, nseq=50):
    lens = rng.integers(2, 15, nseq)
    seq = np.repeat(rng.permutation(1000)[:nseq] * 7 - 300, lens)  # ids any int64
    rng.shuffle(seq)  # a sequence's tokens need not be adjacent
    n = len(seq)
    base = rng.standard_normal((n, 4))
    x = base @ rng.standard_normal((4, 6)) + 0.5 * rng.standard_normal((n, 6))
    y = np.tanh(base @ rng.standard_normal((4, 5))) + 0.3 * rng.standard_normal((n, 5))
    x[:3] += 20.0  # outliers for the robust column
    path = os.path.join(TMP, name + ".h5")
    write_dump(path, {"final": (0, {"x": (x, 0), "y": (y, 1)}, base @ rng.standard_normal(
        (4, 3)))}, np.arange(n) % 3)
    with h5py.File(path, "r+") as f:
        f["sequence_ids"] = seq.astype(np.int64)
    return path, seq, x, y


def pair_xy(doc):
    return [r for r in records(doc, "cka_pairs") if r["layer_a"] == "x" and r["layer_b"] == "y"][0]


def test_whole_sequences_and_k_per_sequence():
    path, seq, x, y = token_dump("tok", np.random.default_rng(3))
    for spec, per_seq in (("whole", 0), ("3", 3), ("1", 1)):
        for count, seed in ((60, 0), (150, 5)):
            rows = draw(seq, count, per_seq, seed)
            lens = np.unique(seq, return_counts=True)[1]
            avail = np.minimum(lens, per_seq).sum() if per_seq else len(seq)
            assert len(rows) >= min(count, avail), (spec, count, len(rows))
            _, out, _ = run("cka", path, "--kernel", "rbf", "--sequences", spec, "--subsample",
                            count, "--seed", seed, "--format", "json", check=0)
            r = pair_xy(json.loads(out))
            assert r["subsample"] == len(rows), (spec, count, r["subsample"], len(rows))
            assert_close(r["cka_rbf"], cka(gram_rbf(x[rows]), gram_rbf(y[rows])), 1e-10, 1e-13,
                         f"rbf {spec} {count}")
            assert_close(r["cka_linear_robust"], robust_cka(x[rows], y[rows]), 1e-9, 1e-12,
                         f"robust {spec} {count}")
            counts = np.unique(seq[rows], return_counts=True)[1]
            if per_seq:
                assert counts.max() <= per_seq
            else:  # whole sequences
                full = dict(zip(*np.unique(seq, return_counts=True)))
                assert all(full[s] == c for s, c in zip(*np.unique(seq[rows],
                                                                   return_counts=True)))


def test_needs_sequence_ids():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 3))
    path = os.path.join(TMP, "plain.h5")
    write_dump(path, {"final": (0, {"x": (x, 0)}, x @ rng.standard_normal((3, 3)))},
               np.arange(40) % 3)
    st, _, err = run("cka", path, "--sequences", "whole")
    assert st == 2 and "--sequences: expected /sequence_ids" in err, (st, err)
    st, _, err = run("cka", path, "--sequences", "0")
    assert st == 2 and "--sequences" in err, (st, err)


if __name__ == "__main__":
    kdltest.main(globals())
