#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens layers --sequences (docs/layers.md#token-dumps-subsamples-by-sequence): the subsample X
of S, E and the class-geometry columns drawn by the teacher's /sequence_ids (the numpy draw of
test_cka_sequences.py, layers' stream 1), then the kept classes' tokens of it; the class
spectra still class-balanced.  Checked through Q, S, I, E and the parts (test_layers.py's
references on the rows drawn), and the refusals."""
import os
import subprocess
import sys

import h5py

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import kdltest  # noqa: E402
from kdltest import assert_close, records, run, run_json, one_line_error  # noqa: E402
from refcommon import select, write_dump  # noqa: E402
from test_cka_sequences import draw  # noqa: E402
from test_layers import (C, N, by_layer, check_layer, class_subset, make_teacher, quality,  # noqa: E402
                         subset_rows, zipf_dump)

TMP = kdltest.tmpdir()
SYNTH = os.environ.get("KDL_SYNTH", "kdl-synth")


def add_sequences(path, n, rng, nseq):
    """Sequence ids of @nseq sequences of uneven lengths over @n rows, in shuffled order."""
    cuts = np.sort(rng.choice(np.arange(1, n), nseq - 1, replace=False))
    seq = np.repeat(rng.permutation(10 * nseq)[:nseq] * 5 - 40, np.diff(np.r_[0, cuts, n]))
    rng.shuffle(seq)
    with h5py.File(path, "r+") as f:
        f["sequence_ids"] = seq.astype(np.int64)
    return seq


def test_every_class_kept():
    rng = np.random.default_rng(5)
    y, layers, logits, v = make_teacher(rng)
    path = os.path.join(TMP, "tok.h5")
    write_dump(path, {"final": (0, layers, logits)}, y)
    seq = add_sequences(path, N, rng, 30)
    for spec, per_seq in (("whole", 0), ("3", 3)):
        for seed in (0, 7):
            doc = run_json("layers", "-t", path, "--subsample", "100", "--per-class", "30",
                           "--seed", seed, "--sequences", spec)
            xr = draw(seq, 100, per_seq, seed)
            cr = select(N, 30, seed, 2, labels=y, nclasses=C)
            rows, det = by_layer(doc, "layers"), by_layer(doc, "layers_detail")
            for name, r in rows.items():
                check_layer(r, det[name], v[name][xr], y[xr], v[name][cr], y[cr], N)
                assert det[name]["n"] == len(xr), (spec, seed, det[name]["n"], len(xr))
            assert any("--sequences" in n for n in doc["notes"]), doc["notes"]


def test_class_subset_among_the_drawn_tokens():
    ncls, n, sub, seed = 300, 3000, 400, 3
    path = os.path.join(TMP, "zipf.h5")
    y, views, _ = zipf_dump(path, ncls, n, 11)
    seq = add_sequences(path, n, np.random.default_rng(12), 120)
    kept, _, _, per_c, n_kept = class_subset(y, ncls, sub)
    doc = run_json("layers", "-t", path, "--subsample", sub, "--seed", seed, "--sequences", "5")
    xr = draw(seq, sub, 5, seed)
    xr = xr[np.isin(y[xr], kept)]
    cr = subset_rows(y, ncls, kept, per_c, seed, 2)
    rows, det = by_layer(doc, "layers"), by_layer(doc, "layers_detail")
    for name, r in rows.items():
        x = views[name]
        ref = quality(x[xr], y[xr], x[cr], y[cr], n_kept)
        for k in ("q", "s", "i", "e"):
            assert_close(r[k], ref[k], 1e-10, 1e-12, f"{name} {k}")
        assert det[name]["n"] == len(xr), (det[name]["n"], len(xr))
    (summary,) = records(doc, "layers_class_subset")
    assert summary["kept"] == len(kept)


def test_synth_token_dumps_with_a_student():
    """kdl-synth --sequence-length: with a student in another row order, X is the same samples
    (whole sequences do not depend on the row order)."""
    t, s = (os.path.join(TMP, x + ".h5") for x in ("st", "ss"))
    p = subprocess.run([SYNTH, "--n", "300", "--sequence-length", "25", "--permute-student",
                        "--no-gradients", t, s], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    with h5py.File(t) as f:
        seq, y = f["sequence_ids"][...], f["labels"][...]
    doc = run_json("layers", "-t", t, "-s", s, "--subsample", 100, "--sequences", "whole",
                   "--classes", "all")
    xr = draw(seq, 100, 0, 0)
    for r in records(doc, "layers_detail"):
        assert r["n"] == len(xr), (r["n"], len(xr))
    assert len(np.unique(y[xr])) > 1


def test_refusals():
    rng = np.random.default_rng(6)
    y, layers, logits, _ = make_teacher(rng)
    path = os.path.join(TMP, "plain.h5")
    write_dump(path, {"final": (0, layers, logits)}, y)
    st, _, err = run("layers", "-t", path, "--sequences", "whole")
    assert st == 2 and "--sequences: expected /sequence_ids" in err, (st, err)
    one_line_error(err, "--sequences")
    st, _, err = run("layers", "-t", path, "--plan", "--sequences", "2")
    assert st == 2 and "/sequence_ids" in err, (st, err)
    for bad in ("0", "some", "-3"):
        st, _, err = run("layers", "-t", path, "--sequences", bad)
        assert st == 2 and "--sequences" in err, (bad, st, err)


if __name__ == "__main__":
    kdltest.main(globals())
