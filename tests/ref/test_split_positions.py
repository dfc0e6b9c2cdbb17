#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens split's per-position table (split_positions, docs/split.md#per-position) against
numpy float64: token dumps with /positions, the means over the tokens at each position."""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import kdltest as kt  # noqa: E402
from test_split import C, reference  # noqa: E402  (per-sample KL, TCKD, NCKD, 1 - p_y)

TMP = kt.tmpdir()
TAUS = [1.0, 3.0]


def tokens(seed, nseq=40, maxlen=25):
    """Sequences of random lengths: each token's sequence id and position."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, maxlen + 1, nseq)
    seq = np.repeat(np.arange(nseq), lens)
    pos = np.concatenate([np.arange(n) for n in lens])
    return rng, seq.astype(np.int64), pos.astype(np.int32)


def write(name, rng, seq, pos, where="teacher", pos_override=None):
    """A teacher and a student on the tokens (the student's rows in another order, joined
    on /sample_ids); /positions in @where ('teacher', 'student' or None)."""
    n = len(seq)
    y = rng.integers(0, C, n)
    # Later positions: a sharper teacher, so the curves are not flat.
    zt = rng.standard_normal((n, C)) * (1 + 0.2 * pos[:, None]) + 2.0 * np.eye(C)[y]
    zs = 0.6 * zt + rng.standard_normal((n, C))
    perm = rng.permutation(n)
    p = pos if pos_override is None else pos_override
    tp, sp = os.path.join(TMP, name + "-t.h5"), os.path.join(TMP, name + "-s.h5")
    for path, role, order, z in ((tp, "teacher", np.arange(n), zt), (sp, "student", perm, zs)):
        with h5py.File(path, "w") as f:
            f.attrs["kdlens_format"] = 1
            f.attrs["role"] = role
            f["labels"] = y[order].astype(np.int64)
            f["sample_ids"] = np.arange(n, dtype=np.int64)[order] + 7
            f["sequence_ids"] = seq[order]
            if where == role:
                f["positions"] = p[order]
            g = f.create_group("checkpoints/final")
            g.attrs["step"] = np.int64(1)
            g["logits"] = z[order]
    return tp, sp, y, zt, zs, p


def expected(y, zt, zs, pos, tau):
    """{position: (samples, kl, tckd, nckd, nckd_coupled, explicit, implicit)}."""
    r = reference(zt, zs, y, tau)
    out = {}
    for q in np.unique(pos):
        if q < 0 or q >= 8192:
            continue
        m = pos == q
        kl, tckd, nckd = r["kl"][m].mean(), r["tckd"][m].mean(), r["nckd"][m].mean()
        coupled = (r["rest"][m] * r["nckd"][m]).mean()
        out[int(q)] = (int(m.sum()), kl, tckd, nckd, coupled, tckd / kl, coupled / kl)
    return out


def check(doc, y, zt, zs, pos):
    rows = kt.records(doc, "split_positions")
    assert len(rows) == len(TAUS) * len(expected(y, zt, zs, pos, 1.0)), len(rows)
    for tau in TAUS:
        ref = expected(y, zt, zs, pos, tau)
        got = {r["position"]: r for r in rows if r["tau"] == tau}
        assert sorted(got) == sorted(ref), (sorted(got), sorted(ref))
        for q, e in ref.items():
            r = got[q]
            assert r["samples"] == e[0] and r["checkpoint"] == "final", r
            for k, v in zip(("kl", "tckd", "nckd", "nckd_coupled", "explicit_share",
                             "implicit_share"), e[1:]):
                kt.assert_close(r[k], v, 1e-9, 1e-13, f"tau {tau} position {q} {k}")
    return rows


def run_split(tp, sp, *extra):
    return kt.run_json("split", "-t", tp, "-s", sp, "-T", ",".join(map(str, TAUS)),
                       "--block-rows", "37", *extra)


def test_means_per_position_against_numpy():
    rng, seq, pos = tokens(1)
    tp, sp, y, zt, zs, p = write("pos", rng, seq, pos)
    doc = run_split(tp, sp)
    rows = check(doc, y, zt, zs, p)
    # The curve is over positions 0 .. 24, and the whole-table means are the token means.
    assert max(r["position"] for r in rows) == 24
    split = [r for r in kt.records(doc, "split") if r["tau"] == 1.0][0]
    per = [r for r in rows if r["tau"] == 1.0]
    kt.assert_close(sum(r["kl"] * r["samples"] for r in per) / len(y), split["kl"], 1e-12)
    # --per-sample on the same pass gives the same table.
    ps = os.path.join(TMP, "pos-per-sample.h5")
    again = run_split(tp, sp, "--per-sample", ps)
    assert kt.records(again, "split_positions") == rows


def test_positions_from_the_student():
    rng, seq, pos = tokens(2)
    tp, sp, y, zt, zs, p = write("spos", rng, seq, pos, where="student")
    check(run_split(tp, sp), y, zt, zs, p)


def test_positions_out_of_range_are_counted():
    rng, seq, pos = tokens(3, nseq=10)
    bad = pos.copy()
    bad[:3] = [8192, 100000, -1]
    tp, sp, y, zt, zs, p = write("cap", rng, seq, pos, pos_override=bad)
    doc = run_split(tp, sp)
    check(doc, y, zt, zs, p)
    assert any("3 tokens at a position outside 0 to 8191" in n for n in doc["notes"]), \
        doc["notes"]
    assert [r for r in kt.records(doc, "split") if r["tau"] == 1.0][0]["samples"] == len(y)


def test_without_positions_no_table():
    rng, seq, pos = tokens(4, nseq=8)
    tp, sp, *_ = write("nopos", rng, seq, pos, where=None)
    assert not kt.records(run_split(tp, sp), "split_positions")


def test_csv():
    rng, seq, pos = tokens(5, nseq=6, maxlen=4)
    tp, sp, *_ = write("csv", rng, seq, pos)
    _, out, _ = kt.run("split", "-t", tp, "-s", sp, "-f", "csv", "--table", "split_positions",
                       check=0)
    head = out.splitlines()[0].split(",")
    for k in ("tau", "position", "samples", "kl", "tckd", "nckd", "explicit_share",
              "implicit_share"):
        assert k in head, head


if __name__ == "__main__":
    kt.main(globals())
