# SPDX-License-Identifier: MIT
"""split, layers and --per-sample under mpirun give the single-process answer
(docs/mpi.md).

Each run on P = 1, 2, 3, 4 processes is compared with the run without mpirun:
sums (means, standard deviations, correlations, soft counts) within 1e-12
relative; what is not a sum exactly: quantiles, extrema and histograms (their
counts add exactly), p̄^t_y (an exact sum), the confused pairs' ranks and
classes, whatever a subsample gives (layers' Q and its parts, the robust
CKA, kl's Spearman), and every string, count and table row.  The --per-sample
files hold the same datasets, attributes and rows: split's values to the bit,
kl's to the bit except the values of the feature sources, which go through a
projector fitted on merged sums (1e-12 of the dataset's largest value);
both in the one per-sample layout of every command.
Needs MPIRUN (the mpirun program) in the environment; registered only in an
MPI build.
"""
import json
import math
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

from mpitest import EXAMPLE, PS, SYNTH, mpirun  # noqa: E402

RTOL = 1e-12
# Columns that are not sums: equal to the bit whatever P.
EXACT = {"p05", "p25", "p50", "p75", "p95", "min", "max", "eps_p50", "nt_entropy_p50",
         "w_p05", "w_p25", "w_p50", "w_p75", "w_p95", "w_p25_unguarded", "w_p50_unguarded",
         "w_p75_unguarded", "pt_mean", "lo", "hi", "identity_residual", "spearman",
         # layers: the subsamples' quality and robust CKA
         "q", "s", "i", "e", "ncm_accuracy", "nc1", "effective_rank", "intra", "inter",
         "min_intra", "entropy", "entropy_norm", "k_mean", "dmin", "norm", "packing",
         "cka_logits_robust", "cka_labels_robust", "cka_linear_robust"}
# kl's per-sample values through the fitted projector (when the widths differ).
PROJECTED = ("feature_l2", "feature_head", "gradient_fisher", "gradient_empirical")
# One BLAS thread in the one-process runs too, as mpitest's mpirun() has:
# OpenBLAS's order of summation depends on its threads, and so would the
# last bits of the subsamples' products.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
_work = kt.tmpdir()


def synth(name, *opts):
    t, s = os.path.join(_work, name + "-t.h5"), os.path.join(_work, name + "-s.h5")
    if not os.path.exists(s):
        subprocess.run([SYNTH, "--chunk-rows", "64", "--checkpoints", "1", *opts, t, s],
                       check=True, capture_output=True)
    return t, s


def example(*students):
    """The bundled example's teacher and its students student_NAME.h5."""
    args = ["-t", os.path.join(EXAMPLE, "teacher.h5")]
    for name in students:
        args += ["-s", os.path.join(EXAMPLE, f"student_{name}.h5")]
    return args


def inputs():
    yield "example", example("kd", "narrow")
    # Tokens in sequences of 60: split's per-position sums are merged too.
    t, s = synth("pair", "--n", "1000", "--teacher-widths", "32,48", "--student-widths", "16,24",
                 "--sequence-length", "60")
    yield "synth", ["-t", t, "-s", s]


def nonfinite():
    """The example's student with NaN and Inf logits in rows every rank reads
    (the first and last of blocks of 37, the first and last of the dump)."""
    bad = os.path.join(_work, "nonfinite.h5")
    if not os.path.exists(bad):
        shutil.copy(os.path.join(EXAMPLE, "student_kd.h5"), bad)
        with h5py.File(bad, "r+") as f:
            for ck in f["checkpoints"]:
                ds = f["checkpoints"][ck]["logits"]
                for r in (0, 5, 36, 37, 500, 1000, 1001, 1500, ds.shape[0] - 2, ds.shape[0] - 1):
                    row = ds[r]
                    row[r % ds.shape[1]] = math.nan if r % 2 else math.inf
                    ds[r] = row
    return [*example(), "-s", bad]


def real(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def same(a, b, path="$", key=None):
    """Raise unless the documents agree: sums within RTOL, EXACT columns and
    everything else equal."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or list(a) != list(b):
            got = list(b) if isinstance(b, dict) else b
            raise AssertionError(f"{path}: keys {list(a)} vs {got}")
        for k in a:
            same(a[k], b[k], f"{path}.{k}", k)
    elif isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            raise AssertionError(f"{path}: lists of different lengths")
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]", key)
    elif real(a) and real(b) and (isinstance(a, float) or isinstance(b, float)):
        # A float that prints without a fraction ("1") reads back as an int.
        if math.isnan(a) or math.isnan(b):
            if not (math.isnan(a) and math.isnan(b)):
                raise AssertionError(f"{path}: {a!r} vs {b!r}")
        elif key in EXACT and a != b:
            raise AssertionError(f"{path}: {a!r} != {b!r} (exact)")
        elif not abs(a - b) <= RTOL * max(abs(a), abs(b)):
            raise AssertionError(f"{path}: {a!r} vs {b!r} (relative {RTOL})")
    elif type(a) is not type(b) or a != b:
        raise AssertionError(f"{path}: {a!r} != {b!r}" + (" (exact)" if key in EXACT else ""))


def h5_contents(path):
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = dict(f.attrs)
        f.visititems(lambda n, o: out.__setitem__(
            n, (o[()] if isinstance(o, h5py.Dataset) else None, dict(o.attrs))))
    return out


def same_file(one, two, what):
    """The per-sample files: the same datasets, attributes, NaN rows; values
    equal, those through kl's projector within 1e-12 of their largest.  Both
    in the one layout (docs/conventions.md#per-sample-files): /sample_ids,
    /tau, and every value [N, T] under /students/<k>/checkpoints/<ck>."""
    a, b = h5_contents(one), h5_contents(two)
    assert list(a) == list(b), f"{what}: {sorted(set(a) ^ set(b))}"
    n, t = len(a["sample_ids"][0]), len(a["tau"][0])
    values = [k for k in a if k.startswith("students/") and a[k][0] is not None]
    assert values and all(k.split("/")[2] == "checkpoints" and a[k][0].shape == (n, t)
                          for k in values), f"{what}: not the per-sample layout"
    for name in a:
        if name == "/":
            assert a[name] == b[name], what
            continue
        (x, xa), (y, ya) = a[name], b[name]
        assert xa == ya, f"{what}: {name} attributes"
        if x is None:
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what}: {name}"
        if x.dtype.kind != "f":
            assert np.array_equal(x, y), f"{what}: {name}"
            continue
        assert np.array_equal(np.isnan(x), np.isnan(y)), f"{what}: {name} NaN rows"
        ok = ~np.isnan(x)
        if name.rsplit("/", 1)[-1] in PROJECTED and os.path.basename(one).startswith("kl"):
            scale = np.abs(x[ok]).max() if ok.any() else 0.0
            assert np.all(np.abs(x[ok] - y[ok]) <= 1e-12 * scale), f"{what}: {name}"
        else:
            assert np.array_equal(x[ok], y[ok]), f"{what}: {name} not bit for bit"


def check(verb, name, args, per_sample=False):
    """@verb with @args on one process, then on every P: the same document
    and per-sample file; one line of stderr at most (none)."""
    full = [verb, *args, "--format", "json"]
    ps = os.path.join(_work, f"{verb}-{name}-1.h5")
    st, out, err = kt.run(*full, *(["--per-sample", ps] if per_sample else []))
    assert st == 0, f"{verb} {name}: {err}"
    one = json.loads(out)
    for p in PS:
        mine = os.path.join(_work, f"{verb}-{name}-np{p}.h5")
        st, out, err = mpirun(p, *full, *(["--per-sample", mine] if per_sample else []))
        if st != 0:
            raise AssertionError(f"{verb} {name} P={p}: exit {st}\n{err[-2000:]}")
        assert not err.strip(), f"{verb} {name} P={p}: stderr {err!r}"
        try:
            same(one, json.loads(out))
        except AssertionError as e:
            raise AssertionError(f"{verb} {name} P={p}: {e}") from None
        if per_sample:
            same_file(ps, mine, f"{verb} {name} P={p}")
            assert not [f for f in os.listdir(_work) if f.startswith(".") or "tmp" in f], \
                "a temporary file was left"
    return one


def test_split():
    """Both passes (p̄^t_y between them), the full domain level, per sample."""
    for name, args in inputs():
        doc = check("split", name, [*args, "--block-rows", "37", "-T", "1,4"], per_sample=True)
        assert kt.records(doc, "instance") and kt.records(doc, "domain")
        assert kt.records(doc, "split_classes")  # per-class sums merged across ranks
        assert name != "synth" or len(kt.records(doc, "split_positions")) == 2 * 60


def test_split_blocked():
    """The domain level in blocks of classes (a low --domain-max-c): one
    block on the example; eight at C = 1500 and two temperatures under
    --memory 8M, so eight passes over the logits, each block merged on rank
    0; the confused pairs exact."""
    e = next(inputs())[1]
    t, s = synth("wide", "--n", "600", "--classes", "1500", "--teacher-widths", "32,48",
                 "--student-widths", "16,24", "--no-gradients")
    for name, args, blocks in (
            ("example-blocked", [*e, "--domain-max-c", "4"], 1),
            ("wide-blocked", ["-t", t, "-s", s, "--domain-max-c", "1000", "--memory", "8M",
                              "-T", "1,4"], 8)):
        doc = check("split", name, [*args, "--block-rows", "37"], per_sample=True)
        assert any(f"{blocks} block{'s' if blocks > 1 else ''} of classes, the logits read "
                   f"{max(blocks, 2)} times" in n for n in doc["notes"]), doc["notes"]
        assert kt.records(doc, "confused_pairs")


def test_kl_per_sample():
    for name, args in inputs():
        check("kl", name, [*args, "--block-rows", "37"], per_sample=True)


def test_ranks_without_rows():
    """Two blocks of 1500 rows: with P = 3 and 4 some ranks read nothing, and
    kl and split (their per-sample files too) are still one process's."""
    for verb in ("kl", "split"):
        check(verb, "two-blocks", [*example("kd", "narrow"), "--block-rows", "1500"],
              per_sample=True)


def test_inner_join_per_sample():
    """A student without some of the teacher's ids, on several ranks: the
    per-sample rows are still the teacher's, NaN where the student has no
    sample, as one process writes them."""
    part = os.path.join(_work, "student-part.h5")
    if not os.path.exists(part):
        gone = [0, 5, 36, 600, 1001, 1500, 1999]
        with h5py.File(os.path.join(EXAMPLE, "student_kd.h5"), "r") as f, \
                h5py.File(part, "w") as g:
            n = f["sample_ids"].shape[0]
            keep = np.setdiff1d(np.arange(n), gone)

            def copy(name, obj):
                target = g.require_group(name) if isinstance(obj, h5py.Group) else None
                if target is None:
                    data = obj[...]
                    g[name] = data[keep] if data.ndim and data.shape[0] == n else data
                    target = g[name]
                for k, v in obj.attrs.items():
                    target.attrs[k] = v
            g.attrs.update(dict(f.attrs))
            f.visititems(copy)
    for verb in ("kl", "split"):
        check(verb, "inner", [*example(), "-s", part, "--join", "inner", "--block-rows", "37"],
              per_sample=True)


def test_nonfinite_skip():
    """--nonfinite skip on a dump with NaN/Inf rows on every rank: the same
    samples skipped, counted over every rank (the note and the tables), and
    NaN at the same rows of kl's per-sample file."""
    args = [*nonfinite(), "--nonfinite", "skip", "--block-rows", "37"]
    doc = check("kl", "nonfinite", args, per_sample=True)
    assert any("10 samples with NaN/Inf skipped" in n for n in doc["notes"]), doc["notes"]
    doc = check("split", "nonfinite", args, per_sample=True)
    assert {r["skipped"] for r in kt.records(doc, "split")} == {10}


def test_kl_spearman_subsample():
    """kl's Spearman on a subsample of 50: the samples of smallest hash(seed,
    sample index), the same whatever P, also when samples are skipped."""
    args = [*nonfinite(), "--nonfinite", "skip", "--block-rows", "37",
            "--spearman-samples", "50", "--seed", "7"]
    doc = check("kl", "spearman", args)
    assert any("spearman on a uniform subsample of 50" in n for n in doc["notes"])


def test_layers():
    """One CKA pass over every sample (its sums merged in rank order, sent
    back to every rank), then per teacher layer its class-balanced subsamples,
    chosen by sample id and seed and gathered in sample order on every rank:
    Q and its parts exactly, the CKA columns within 1e-12.  layers sizes its
    blocks from a 64 MiB budget, so the example is one block (rank 0 reads
    every row); the synthetic teacher's first layer is stored [N, 512, 4, 4]
    and averaged, 70 kB a row for the stream, so its 3000 samples take four
    blocks and every rank reads some."""
    check("layers", "example", example("kd"))
    t, s = synth("spatial", "--n", "3000", "--spatial", "--teacher-widths", "512,16",
                 "--student-widths", "8,12", "--dtype", "float16", "--no-gradients")
    doc = check("layers", "spatial", ["-t", t, "-s", s, "--subsample", "600"])
    assert kt.records(doc, "layers") and kt.records(doc, "layers_cka")


def test_per_sample_error_on_every_rank():
    """A per-sample file that cannot be written: one line, exit 1, on every P."""
    _, args = next(inputs())
    bad = os.path.join(_work, "no-such-dir", "ps.h5")
    st1, _, err1 = kt.run("split", *args, "--per-sample", bad)
    assert st1 == 1, err1
    for p in (2, 3):
        st, out, err = mpirun(p, "split", *args, "--per-sample", bad)
        assert st == 1 and out == "", f"P={p}: exit {st}: {err}"
        assert err1.strip() in err, f"P={p}: {err!r} vs {err1!r}"


if __name__ == "__main__":  # importable: test_mpi_summary_report.py compares with same()
    kt.main(globals())
