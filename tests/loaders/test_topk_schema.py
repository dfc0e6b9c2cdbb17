#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Schema v1's sparse teacher logits (logits_topk/) and token datasets
(/sequence_ids, /positions): a dump that holds them correctly is read as before;
each departure is one problem line naming the file and the dataset, for
`inspect` (exit 1) and for an analysis (exit 1, one line)."""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

N, C, K = 40, 50, 6


def dump(path, role, z, topk=None, tokens=True, edit=None):
    """A dense dump; with topk, the teacher's top-k of z written beside it."""
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = role
        f.attrs["model"] = role
        f["labels"] = np.zeros(N, dtype=np.int32)
        if tokens:
            f["sequence_ids"] = np.repeat(np.arange(N // 8), 8).astype(np.int64)
            f["positions"] = np.tile(np.arange(8), N // 8).astype(np.int32)
        g = f.create_group("checkpoints/final")
        g.attrs["step"] = np.int64(1)
        g["logits"] = z
        if topk:
            ix = np.argsort(-z, axis=1)[:, :topk]
            g["logits_topk/indices"] = ix.astype(np.int32)
            g["logits_topk/values"] = np.take_along_axis(z, ix, 1).astype(np.float32)
            m = z.max(1)
            g["logits_topk/logsumexp"] = m + np.log(np.exp(z - m[:, None]).sum(1))
        if edit:
            edit(f, g)


def pair(edit=None, topk=K):
    rng = np.random.default_rng(2)
    d = kt.tmpdir()
    t, s = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
    z = rng.standard_normal((N, C))
    dump(t, "teacher", z, topk=topk, edit=edit)
    dump(s, "student", z + rng.standard_normal((N, C)), tokens=False)
    return t, s


def test_valid_dump_reads_as_before():
    t, s = pair()
    kt.run("inspect", t, check=0)
    a = kt.run_json("kl", "-t", t, "-s", s, "--topk", "1,6")
    b_t, b_s = pair(topk=None)
    b = kt.run_json("kl", "-t", b_t, "-s", b_s, "--topk", "1,6")
    # The same numbers with and without the sparse datasets (the dumps' paths differ).
    for table in ["kl", "kl_topk"]:
        ra, rb = kt.records(a, table), kt.records(b, table)
        assert ra and len(ra) == len(rb), table
        for x, y in zip(ra, rb):
            for key in ["student", "needs"]:
                x.pop(key, None), y.pop(key, None)
            assert x == y, (table, x, y)


def set_ds(name, value):
    def edit(f, g):
        if name in g:
            del g[name]
        g[name] = value
    return edit


def set_root(name, value):
    def edit(f, g):
        del f[name]
        f[name] = value
    return edit


def dup_row(f, g):
    ix = g["logits_topk/indices"][...]
    ix[7, 3] = ix[7, 1]
    g["logits_topk/indices"][...] = ix


def bad_index(f, g):
    ix = g["logits_topk/indices"][...]
    ix[12, 0] = C
    g["logits_topk/indices"][...] = ix


def negative_index(f, g):
    ix = g["logits_topk/indices"][...]
    ix[3, 2] = -1
    g["logits_topk/indices"][...] = ix


def wider(f, g):
    set_ds("logits_topk/indices", np.tile(np.arange(C + 1), (N, 1)).astype(np.int32))(f, g)
    set_ds("logits_topk/values", np.zeros((N, C + 1), "f4"))(f, g)


def both(f, g):
    g["logits_topk/logprobs"] = g["logits_topk/values"][...]


def no_values(f, g):
    del g["logits_topk/values"]


BAD = {
    "duplicate index": (dup_row, "logits_topk/indices", "twice at sample 7"),
    "index = C": (bad_index, "logits_topk/indices", "found 50 at sample 12"),
    "negative index": (negative_index, "logits_topk/indices", "found -1 at sample 3"),
    "k > C": (wider, "logits_topk/indices", "expected k in [1, 50]"),
    "float indices": (set_ds("logits_topk/indices", np.zeros((N, K))), "logits_topk/indices",
                      "expected integer class indices"),
    "values shape": (set_ds("logits_topk/values", np.zeros((N, K + 1))), "logits_topk/values",
                     "expected [40, 6]"),
    "values and logprobs": (both, "logits_topk", "found both"),
    "no values": (no_values, "logits_topk/values", "found none"),
    "logsumexp rows": (set_ds("logits_topk/logsumexp", np.zeros(N - 1)),
                       "logits_topk/logsumexp", "expected 40 samples"),
    "positions floats": (set_root("positions", np.zeros(N)), "/positions", "integer positions"),
    "sequence_ids rows": (set_root("sequence_ids", np.zeros(N + 2, dtype=np.int64)),
                          "/sequence_ids", "expected 40 samples"),
}


def test_each_departure_is_one_problem():
    for name, (edit, where, needle) in BAD.items():
        t, s = pair(edit)
        st, out, err = kt.run("inspect", t)
        assert st == 1, (name, st, out, err)
        assert needle in out + err, (name, out, err)
        st, out, err = kt.run("kl", "-t", t, "-s", s)
        assert st == 1, (name, st, err)
        kt.one_line_error(err, t, where, needle)


def test_sparse_only_needs_classes():
    # Without dense logits the vocabulary comes from logits_topk's attribute 'classes'.
    def sparse(f, g):
        del g["logits"]
        g["logits_topk"].attrs["classes"] = np.int64(C)

    def sparse_no_classes(f, g):
        del g["logits"]

    def classes_disagree(f, g):
        g["logits_topk"].attrs["classes"] = np.int64(C + 3)

    t, s = pair(sparse)
    kt.run("inspect", t, check=0)
    doc = kt.run_json("inspect", t)
    kinds = {r["kind"] for r in kt.records(doc, "datasets")}
    assert {"topk_indices", "topk_values", "topk_logsumexp", "sequence_ids",
            "positions"} <= kinds and "logits" not in kinds, kinds

    def nan_value(f, g):
        v = g["logits_topk/values"][...]
        v[5, 2] = np.nan
        g["logits_topk/values"][...] = v

    t, s = pair(nan_value)
    st, out, err = kt.run("inspect", t)
    assert st == 1 and "logits_topk/values: expected finite values, found NaN at sample 5" in err
    # kl against the dense logits does not read the sparse values.
    kt.run("kl", "-t", t, "-s", s, "--topk", "3", check=0)
    for edit, needle in [(sparse_no_classes, "attribute 'classes' on logits_topk"),
                         (classes_disagree, "expected 50 as the logits, found 53")]:
        t, s = pair(edit)
        st, out, err = kt.run("kl", "-t", t, "-s", s)
        assert st == 1, (st, err)
        kt.one_line_error(err, t, "logits_topk", needle)


kt.main(globals())
