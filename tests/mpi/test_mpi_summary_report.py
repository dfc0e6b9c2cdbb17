# SPDX-License-Identifier: MIT
"""summary and report under mpirun give the single-process answer (docs/mpi.md).

summary: the bundled example and the synthetic pair of test_mpi.py, P = 1,
2, 3, 4, its JSON document against a run without mpirun.  Its sums add the
samples one by one in their order; under MPI rank 0 adds the ranks' partial
sums, so the numbers agree within 1e-12 relative, not bit for bit.

report: the bundled example with blocks of 300 rows (every rank reads some),
P = 1, 2, 3 against one process, and a kdl-synth pair of two checkpoints at
P = 2 and 4:
- data/*.json: the rules of the commands they come from (cka_*.json and
  dims.json as test_mpi_cka_dims.py: sums within 1e-12 relative, the
  gathered subsample's columns exactly, spectra within 1e-12 of their
  largest value, the GCV ridge penalty only finite, R^2 within 1e-8; the
  others as test_mpi_split_layers.py: sums within 1e-12 relative,
  quantiles and top-K exactly); the passes table (blocks, samples skipped,
  values read, summed over the ranks) exactly;
- tables/*.csv: numbers within 1e-12 relative, all else identical; the
  rounded tables (*.md, *.tex) identical; data/*.dat (plot data printed to
  10 digits, residual curves among them) within 1e-8 relative; all but the
  dims tables, whose GCV penalty moves under rounding (checked in dims.json);
- index.md and index.html identical but for the line naming the time and
  the command's directory, and the rounded tables' numbers in them (one unit
  of the last digit; dims' GCV penalty and its degrees of freedom anywhere); the same files, and nothing else beside the directory (only
  rank 0 makes the temporary directory and renames it);
- a NaN only the last rank reads stops every rank with one process's
  message, exit 1, and leaves no directory.
Needs MPIRUN (tests/mpi/mpitest.py); registered only in an MPI build.
"""
import csv
import json
import math
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402
from mpitest import ENV, EXAMPLE, PS, mpirun, ours  # noqa: E402

import test_mpi_cka_dims as cd  # noqa: E402
import test_mpi_split_layers as sl  # noqa: E402
from test_mpi import inputs  # noqa: E402

_work = kt.tmpdir()
EX = ["-t", os.path.join(EXAMPLE, "teacher.h5"), "-s", os.path.join(EXAMPLE, "student_kd.h5"),
      "-s", os.path.join(EXAMPLE, "student_narrow.h5")]


def test_summary():
    for name, args in inputs():
        full = ["summary", *args, "--block-rows", "37", "--format", "json"]
        ref = cd.one(*full)
        for p in PS:
            st, out, err = mpirun(p, *full)
            assert st == 0, f"{name} P={p}: exit {st}\n{err[-2000:]}"
            assert not err.strip(), f"{name} P={p}: stderr {err!r}"
            try:
                sl.same(ref, json.loads(out))
            except AssertionError as e:
                raise AssertionError(f"summary {name} P={p}: {e}") from None


def numbers(a, b, rtol, what):
    """Whitespace/comma-separated tokens: numbers within @rtol, all else equal."""
    assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} fields"
    for x, y in zip(a, b):
        try:
            u, v = float(x), float(y)
        except ValueError:
            assert x == y, f"{what}: {x!r} vs {y!r}"
            continue
        if math.isnan(u) or math.isnan(v):
            assert math.isnan(u) and math.isnan(v), f"{what}: {x} vs {y}"
        else:
            assert abs(u - v) <= rtol * max(abs(u), abs(v)), f"{what}: {x} vs {y}"


NUM = re.compile(r"(-?\d+(?:\.\d*)?(?:e[-+]?\d+)?)")


def rounded_row(x, y):
    """A row of a rounded table (6 digits): the same words, numbers within one
    unit of the last digit, but in a dims row (GCV) its penalty and degrees
    of freedom, which only need to be finite (see dims.json's rules)."""
    ta, tb = NUM.split(x), NUM.split(y)
    words = lambda t: ["".join(w.split()) for w in t[0::2]]  # a table pads to its widest cell
    if len(ta) != len(tb) or words(ta) != words(tb):
        return False
    moved = sum(1 for u, v in zip(ta[1::2], tb[1::2])
                if abs(float(u) - float(v)) > 2e-6 * max(abs(float(u)), abs(float(v))))
    return moved == 0 or ("gcv" in x and moved <= 2)


def same_site(one, two, p):
    files = lambda d: sorted(os.path.relpath(os.path.join(r, f), d)
                             for r, _, fs in os.walk(d) for f in fs)
    fa, fb = files(one), files(two)
    assert fa == fb, f"P={p}: files {set(fa) ^ set(fb)}"
    for f in fa:
        a, b = os.path.join(one, f), os.path.join(two, f)
        what = f"P={p} {f}"
        base = os.path.basename(f)
        if f.startswith("data/") and f.endswith(".json"):
            x, y = json.load(open(a)), json.load(open(b))
            try:
                if base.startswith(("cka_", "dims")):
                    cd.same(x, y)
                else:
                    sl.same(x, y)
            except AssertionError as e:
                raise AssertionError(f"{what}: {e}") from None
        elif base.startswith("dims_") or f.startswith(("figures/", "scripts/")) or \
                base == ".kdlens-report":
            continue  # GCV (above); gnuplot's output and the marker name the time, the pid
        elif f.endswith(".dat"):
            la, lb = open(a).read().splitlines(), open(b).read().splitlines()
            assert len(la) == len(lb), what
            for i, (x, y) in enumerate(zip(la, lb)):
                numbers(x.split(), y.split(), 1e-8, f"{what}:{i + 1}")
        elif f.endswith(".csv"):
            ra, rb = list(csv.reader(open(a))), list(csv.reader(open(b)))
            assert len(ra) == len(rb), what
            for i, (x, y) in enumerate(zip(ra, rb)):
                numbers(x, y, 1e-12, f"{what}:{i + 1}")
        elif base in ("index.md", "index.html"):
            la, lb = open(a).read().splitlines(), open(b).read().splitlines()
            diff = [(x, y) for x, y in zip(la, lb) if x != y]
            assert len(la) == len(lb) and all(
                " UTC" in x or one in x or rounded_row(x, y) for x, y in diff), \
                f"{what}: {diff[:3]}"
        else:
            assert open(a, "rb").read() == open(b, "rb").read(), what


def test_report():
    base = ["report", *EX, "--block-rows", "300"]
    one = os.path.join(_work, "one")
    r = subprocess.run([kt.KDLENS, *base, "-o", one], capture_output=True, text=True,
                       timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr
    for p in (1, 2, 3):
        two = os.path.join(_work, f"p{p}")
        st, out, err = mpirun(p, *base, "-o", two)
        assert st == 0, f"P={p}: exit {st}\n{err[-2000:]}"
        same_site(one, two, p)
        assert sorted(os.listdir(_work)) == sorted(["one", *(f"p{q}" for q in range(1, p + 1))]), \
            f"P={p}: stray entries {os.listdir(_work)}"



def test_report_language_model():
    """The bundled LM example: its section on sparse teacher targets (kl --topk, on by
    default for a language model's dump) at P = 2 and 3 is one process's."""
    lm = os.path.join(EXAMPLE, "..", "example-lm")
    work = kt.tmpdir()
    base = ["report", "-t", os.path.join(lm, "teacher.h5"), "-s", os.path.join(lm, "student.h5"),
            "--block-rows", "300"]
    one = os.path.join(work, "one")
    r = subprocess.run([kt.KDLENS, *base, "-o", one], capture_output=True, text=True,
                       timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(one, "data", "kl_topk.json"))
    for p in (2, 3):
        other = os.path.join(work, f"p{p}")
        st, out, err = mpirun(p, *base, "-o", other)
        assert st == 0, f"P={p}: exit {st}\n{err[-2000:]}"
        same_site(one, other, p)


def test_report_synthetic_four_ranks():
    """A kdl-synth pair (1,000 samples, 16 blocks of 64 rows), P = 2 and 4:
    every rank reads rows, and the site is one process's."""
    work = kt.tmpdir()
    t, s = os.path.join(work, "t.h5"), os.path.join(work, "s.h5")
    subprocess.run([os.environ["KDL_SYNTH"], "--n", "1000", "--chunk-rows", "64",
                    "--checkpoints", "2", "--teacher-widths", "32,48", "--student-widths",
                    "16,24", t, s], check=True, capture_output=True)
    base = ["report", "-t", t, "-s", s, "--block-rows", "64", "-c", "all"]
    one = os.path.join(work, "one")
    r = subprocess.run([kt.KDLENS, *base, "-o", one], capture_output=True, text=True,
                       timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr
    for p in (2, 4):
        other = os.path.join(work, f"p{p}")
        st, out, err = mpirun(p, *base, "-o", other)
        assert st == 0, f"P={p}: exit {st}\n{err[-2000:]}"
        same_site(one, other, p)


def test_report_error_on_one_rank():
    """A NaN only the last rank reads: every rank stops with one process's
    one-line message, exit 1, and no directory is left."""
    import h5py
    import shutil
    work = kt.tmpdir()
    bad = os.path.join(work, "bad.h5")
    shutil.copy(os.path.join(EXAMPLE, "student_kd.h5"), bad)
    with h5py.File(bad, "r+") as f:
        ds = f["checkpoints/middle/logits"]
        row = ds[-1]
        row[0] = float("nan")
        ds[-1] = row
    args = ["report", "-t", os.path.join(EXAMPLE, "teacher.h5"), "-s", bad, "--block-rows",
            "300", "--quiet"]
    st1, _, err1 = kt.run(*args, "-o", os.path.join(work, "one"))
    assert st1 == 1, err1
    st, out, err = mpirun(2, *args, "-o", os.path.join(work, "two"))
    assert st == 1, f"exit {st}: {err}"
    kt.one_line_error(ours(err))
    assert ours(err) == err1.strip(), f"{err!r} vs {err1!r}"
    assert os.listdir(work) == ["bad.h5"], os.listdir(work)


if __name__ == "__main__":
    kt.main(globals())
