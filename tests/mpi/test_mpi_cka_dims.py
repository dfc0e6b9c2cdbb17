# SPDX-License-Identifier: MIT
"""cka and dims under mpirun give the single-process answer (docs/mpi.md).

Each case runs on the bundled example and on kdl-synth pairs with P = 1, 2,
3, 4 processes, with block sizes that give every rank rows (and some cases
an empty rank at P = 4), and its JSON document is compared with the one of
a run without mpirun, both with one BLAS thread (a threaded BLAS rounds
differently from run to run of the same product):

- exactly equal: what is computed once from rows gathered by sample id
  (CKA's robust, RBF and minibatch columns on the seeded subsample; every
  value in Gram space, where all rows are gathered), strings, counts, rows;
- within 1e-12 relative: what comes from sums merged in rank order (linear
  CKA and its bootstrap replicates, whose weights are a function of the
  sample id and the seed; the covariances, Gram rows and sketches of dims);
  a bootstrap bias (mean of the replicates minus the point value, a
  difference of numbers near 1) within 1e-12 absolute;
- eigenvalues and residual curves within 1e-12 of the largest value of
  their spectrum (rounding puts the numerically zero ones anywhere below);
- dims' ridge penalty chosen by GCV: the minimiser of a flat curve moves
  under rounding (one process alone moves it from 6.2e-6 to 2.9e-4 on the
  synthetic pair between --block-rows 37 and 1000), so lambda and its
  degrees of freedom are only checked finite, and R^2 within 1e-8; with a
  given --lambda every ridge column is held to 1e-12 (test_dims_fixed_lambda).

Needs MPIRUN (the mpirun program) in the environment (tests/mpi/mpitest.py);
registered only in an MPI build.
"""
import json
import math
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402
from mpitest import ENV, EXAMPLE, PS, SYNTH, mpirun, ours  # noqa: E402

RTOL = 1e-12
# Columns computed once from the gathered subsample: equal bit for bit.
EXACT = {"cka_linear_robust", "cka_logits_robust", "cka_labels_robust", "cka_rbf",
         "cka_rbf_debiased", "cka_minibatch", "batches", "subsample"}
SPECTRA = {"spectrum", "logit_residual"}
GCV = {"ridge_lambda", "ridge_df"}
# cka --measure: from eigendecompositions and SVDs of the merged sums.
SIM = {"cca_mean_rho", "cca_mean_rho2", "svcca", "pwcca", "procrustes", "procrustes_angular"}
SIM_TABLES = {"cca", "svcca", "pwcca", "procrustes"}
SIM_RTOL = 1e-9
R2 = {"ridge_r2", "ridge_r2_gcv"}
_work = kt.tmpdir()


def one(*args):
    r = subprocess.run([kt.KDLENS, *map(str, args)], capture_output=True, text=True,
                       timeout=600, env=ENV)
    assert r.returncode == 0, f"kdlens {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr}"
    return json.loads(r.stdout)


def synth(name, *opts):
    t, s = os.path.join(_work, f"{name}-t.h5"), os.path.join(_work, f"{name}-s.h5")
    if not os.path.exists(s):
        subprocess.run([SYNTH, "--checkpoints", "1", *map(str, opts), t, s], check=True,
                       capture_output=True)
    return t, s


def pair():
    """The synthetic pair of tests/mpi/test_mpi.py."""
    return synth("pair", "--n", 1000, "--chunk-rows", 64, "--teacher-widths", "32,48",
                 "--student-widths", "16,24")


def wide():
    """A teacher layer wider than the 300 samples (CKA in Gram space), the
    student's samples stored shuffled (joined on /sample_ids)."""
    return synth("wide", "--n", 300, "--classes", 5, "--chunk-rows", 32, "--teacher-widths",
                 "2000,32", "--student-widths", "16", "--permute-student")


def ex(*students):
    return [os.path.join(EXAMPLE, f) for f in ("teacher.h5", *students)]


def is_nan(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def scales(doc):
    """Per spectrum (table, model, checkpoint, layer) and column: the largest |value|."""
    out = {}
    for r in doc["results"]:
        if r["table"] in SPECTRA:
            for k, v in r.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and not is_nan(v):
                    key = (r["table"], r.get("model"), r.get("checkpoint"), r.get("layer"), k)
                    out[key] = max(out.get(key, 0.0), abs(v))
    return out


def number(a, b, table, key, scale, exact):
    if is_nan(a) or is_nan(b):
        return is_nan(a) and is_nan(b)
    if exact or key in EXACT:
        return a == b
    if table in SPECTRA:
        return abs(a - b) <= RTOL * scale
    if key in GCV:
        return math.isfinite(a) and math.isfinite(b)
    if key in R2:
        return abs(a - b) <= 1e-8
    if key in SIM or table in SIM_TABLES:
        return abs(a - b) <= SIM_RTOL * max(abs(a), abs(b), 1e-3)
    if key.endswith("_bias"):
        return abs(a - b) <= RTOL
    return abs(a - b) <= RTOL * max(abs(a), abs(b))


def same(a, b, exact=False):
    """Raise unless the documents agree as the module's docstring says."""
    assert list(a) == list(b), f"keys {list(a)} vs {list(b)}"
    for k in a:
        if k != "results":
            assert a[k] == b[k], f"{k}: {a[k]!r} vs {b[k]!r}"
    ra, rb, sc = a["results"], b["results"], scales(a)
    assert len(ra) == len(rb), f"{len(ra)} vs {len(rb)} rows"
    for i, (x, y) in enumerate(zip(ra, rb)):
        assert list(x) == list(y), f"row {i}: columns {list(x)} vs {list(y)}"
        t = x["table"]
        for k in x:
            u, v = x[k], y[k]
            if isinstance(u, (int, float)) and not isinstance(u, bool) or u is None:
                s = sc.get((t, x.get("model"), x.get("checkpoint"), x.get("layer"), k), 0.0)
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) or v is None
                ok = ok and number(u, v, t, k, s, exact or (k in EXACT))
            else:
                ok = u == v
            assert ok, f"row {i} ({t}) {k}: {u!r} vs {v!r}"


def check(verb, args, exact=False, ps=PS):
    full = [verb, *args, "--format", "json"]
    ref = one(*full)
    for p in ps:
        st, out, err = mpirun(p, *full)
        assert st == 0, f"{' '.join(map(str, full))} P={p}: exit {st}\n{err[-2000:]}"
        assert not err.strip(), f"P={p}: stderr {err!r}"
        try:
            same(ref, json.loads(out), exact)
        except AssertionError as e:
            raise AssertionError(f"{' '.join(map(str, full))} P={p}: {e}") from None
    return ref


# Budgets small enough that the stream's blocks (a sixteenth of --memory)
# spread the rows over every rank: the example in 10 blocks at 16M, the
# synthetic pair in 3 at 8M (an empty rank at P = 4).
CKA_EXAMPLE = ["--memory", "16M", "--subsample", 200]
CKA_PAIR = ["--memory", "8M", "--subsample", 150]


def test_cka_default():
    check("cka", [*ex("student_kd.h5"), *CKA_EXAMPLE])
    check("cka", [*pair(), *CKA_PAIR])


def test_cka_rbf():
    """The matrix shows RBF CKA on the subsample: exact, as the robust column."""
    for args in ([*ex("student_kd.h5"), *CKA_EXAMPLE], [*pair(), *CKA_PAIR]):
        doc = check("cka", [*args, "--kernel", "rbf"])
        assert all("cka_rbf" in r for r in kt.records(doc, "cka_pairs"))


def test_cka_bootstrap():
    check("cka", [*ex("student_kd.h5"), "--memory", "32M", "--subsample", 200,
                  "--bootstrap", 20, "--seed", 3])
    check("cka", [*ex("student_kd.h5"), "--memory", "64M", "--subsample", 200,
                  "--bootstrap", 10, "--interval", "bca", "--seed", 5])
    check("cka", [*pair(), "--memory", "12M", "--subsample", 200, "--bootstrap", 20])


def test_cka_minibatch_every_checkpoint():
    check("cka", [*ex("student_kd.h5"), *CKA_EXAMPLE, "--estimator", "minibatch",
                  "--batch", 16, "--checkpoint", "all"])


def test_cka_one_model():
    check("cka", [ex()[0], *CKA_EXAMPLE])


def test_cka_gram_space():
    """Every row gathered by sample id and computed once, the bootstrap by
    weighted HSIC with the same weights: the whole document exactly."""
    doc = check("cka", [*wide(), "--memory", "16M", "--subsample", 100, "--bootstrap", 20,
                        "--kernel", "rbf"], exact=True)
    assert any("Gram space" in n for n in doc["notes"]), doc["notes"]


def test_cka_wide_sketch_and_strips():
    """Vocabulary-wide sources forced on the example (--wide-max 12: the
    logits, the labels and every layer are wide): the sketches and the class
    sums merge like the state; the exact strips are refused on P > 1."""
    doc = check("cka", [*ex("student_kd.h5"), *CKA_EXAMPLE, "--wide-max", 12,
                        "--wide-rank", 8])
    assert any(r.get("method") == "sketch" for r in kt.records(doc, "cka_pairs"))
    full = ["cka", *ex("student_kd.h5"), *CKA_EXAMPLE, "--wide-max", 12, "--wide", "exact"]
    assert one(*full, "--format", "json")
    st, out, err = mpirun(2, *full)
    assert st == 2, f"exit {st}: {err}"
    kt.one_line_error(ours(err), "--wide exact")
    assert out == "", out


def test_cka_measures():
    """--measure all: the CCA family comes from the merged sums, like linear CKA; each rank
    cut (an integer) the same, the values within SIM_RTOL (eigendecompositions of sums that
    agree to rounding)."""
    for args in ([*ex("student_kd.h5"), *CKA_EXAMPLE], [*pair(), *CKA_PAIR]):
        doc = check("cka", [*args, "--measure", "all"], ps=(2, 3))
        rows = kt.records(doc, "cka_pairs")
        assert rows and all(not is_nan(r["pwcca"]) for r in rows), rows
    # Gram space: from the rows gathered on every rank (32M: the measures' Gram-space
    # decompositions are a part of the need).
    doc = check("cka", [*wide(), "--memory", "32M", "--subsample", 100, "--measure",
                        "cca,procrustes"], ps=(2,))
    assert any(r["method"] == "gram" and not is_nan(r["procrustes"])
               for r in kt.records(doc, "cka_pairs"))


def test_dims_default():
    check("dims", ["-t", *ex(), "-s", ex("student_kd.h5")[1], "-s",
                   ex("student_narrow.h5")[1], "--block-rows", 37])
    t, s = pair()
    check("dims", ["-t", t, "-s", s, "--block-rows", 37])
    check("dims", ["-t", t, "-s", s, "--block-rows", 400])  # an empty rank at P = 4


def test_dims_sketch():
    """The centred logits by the Nystrom sketch (a sum: the same test matrix,
    a function of the seed, on every rank) and by the exact Gram (rows
    appended in rank order)."""
    k, n = ex("student_kd.h5")
    t, s = pair()
    for args in (["-t", k, "-s", n], ["-t", t, "-s", s]):
        for method in (["sketch", "--sketch-rank", 4, "--sketch-oversample", 2, "--seed", 9],
                       ["exact-gram"]):
            doc = check("dims", [*args, "--block-rows", 37, "--logit-spectrum", *method])
            assert any(r.get("spectrum_method") == method[0]
                       for r in kt.records(doc, "verdict")), method


def test_dims_fixed_lambda():
    """A given ridge penalty: R^2 and the degrees of freedom are smooth
    functions of the sums, held to 1e-12 like them."""
    global GCV, R2
    keep = GCV, R2
    GCV, R2 = set(), set()
    try:
        t, s = pair()
        check("dims", ["-t", t, "-s", s, "--block-rows", 37, "--lambda", 0.5])
    finally:
        GCV, R2 = keep


def nan_in_last_rows(src, name, rows):
    """A copy of @src with NaN in the first logit of its last @rows rows."""
    import h5py
    bad = os.path.join(_work, name)
    shutil.copy(src, bad)
    with h5py.File(bad, "r+") as f:
        names = []
        f.visit(lambda n: names.append(n) if n.endswith("/logits") and "gradients" not in n
                and isinstance(f[n], h5py.Dataset) and f[n].ndim == 2 else None)
        ds = f[names[0]]
        block = ds[-rows:]
        block[:, 0] = float("nan")
        ds[-rows:] = block
    return bad


def test_dims_skip_counts_every_rank():
    """--nonfinite skip: the note counts the samples every rank skipped."""
    t, s = pair()
    bad = nan_in_last_rows(s, "skip.h5", 5)
    doc = check("dims", ["-t", t, "-s", bad, "--block-rows", 37, "--nonfinite", "skip"])
    assert any("5 samples with NaN/Inf skipped" in n for n in doc["notes"]), doc["notes"]


def test_error_on_one_rank():
    """A NaN only the last rank reads: every rank stops, one line, exit 1."""
    t, s = pair()
    bad = nan_in_last_rows(s, "bad.h5", 1)
    for verb, args in (("cka", [t, bad, *CKA_PAIR]), ("dims", ["-t", t, "-s", bad,
                                                                 "--block-rows", 37])):
        st1, _, err1 = kt.run(verb, *args)
        assert st1 == 1, err1
        for p in (2, 3):
            st, out, err = mpirun(p, verb, *args)
            assert st == 1, f"{verb} P={p}: exit {st}: {err}"
            kt.one_line_error(ours(err))
            assert ours(err) == err1.strip(), f"{verb} P={p}: {err!r} vs {err1!r}"
            assert out == "", out


if __name__ == "__main__":  # importable: test_mpi_summary_report.py compares with same()
    kt.main(globals())
