# SPDX-License-Identifier: MIT
"""kdlens under mpirun gives the single-process answer (docs/mpi.md).

Every covered command runs on the bundled example and on a kdl-synth pair
with P = 1, 2, 3, 4 processes; its JSON document is compared with the one
of a run without mpirun: numbers within 1e-12 relative (sums merged in rank
order), everything else (table names, rows, strings, subsample-based numbers
are numbers too, but see test_spearman_exact) identical.  Every command runs
under mpirun (summary and report: test_mpi_summary_report.py).
Needs MPIRUN (the mpirun program) in the environment; registered only in an
MPI build.
"""
import json
import math
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

from mpitest import EXAMPLE, PS, SYNTH, mpirun, ours  # noqa: E402

RTOL = 1e-12
COVERED = ("kl",)
# cka, dims: test_mpi_cka_dims.py; split, layers, --per-sample: test_mpi_split_layers.py;
# summary, report: test_mpi_summary_report.py
_work = kt.tmpdir()


def synth_pair():
    t, s = os.path.join(_work, "t.h5"), os.path.join(_work, "s.h5")
    if not os.path.exists(s):
        subprocess.run([SYNTH, "--n", "1000", "--chunk-rows", "64", "--checkpoints", "1",
                        "--teacher-widths", "32,48", "--student-widths", "16,24", t, s],
                       check=True, capture_output=True)
    return t, s


def inputs():
    yield "example", ["-t", os.path.join(EXAMPLE, "teacher.h5"),
                      "-s", os.path.join(EXAMPLE, "student_kd.h5"),
                      "-s", os.path.join(EXAMPLE, "student_narrow.h5")]
    t, s = synth_pair()
    yield "synth", ["-t", t, "-s", s]


def same(a, b, path="$"):
    """Raise unless the documents agree: numbers within RTOL, all else equal."""
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or a is None:
        if a != b:
            raise AssertionError(f"{path}: {a!r} != {b!r}")
    elif isinstance(a, (int, float)):
        if not isinstance(b, (int, float)):
            raise AssertionError(f"{path}: {a!r} vs {b!r}")
        if isinstance(a, float) and math.isnan(a):
            if not math.isnan(b):
                raise AssertionError(f"{path}: NaN vs {b!r}")
        elif not abs(a - b) <= RTOL * max(abs(a), abs(b)):
            raise AssertionError(f"{path}: {a!r} vs {b!r} (relative {RTOL})")
    elif isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            raise AssertionError(f"{path}: lists of different lengths")
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        if not isinstance(b, dict) or list(a) != list(b):
            raise AssertionError(f"{path}: keys {list(a)} vs {list(b) if isinstance(b, dict) else b}")
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    else:
        raise AssertionError(f"{path}: unexpected {a!r}")


def check_command(verb, extra=()):
    for name, args in inputs():
        # Small blocks, so that every rank has some of the rows.
        full = [verb, *args, "--block-rows", "37", *extra, "--format", "json"]
        one = json.loads(kt.run(*full, check=0)[1])
        for p in PS:
            st, out, err = mpirun(p, *full)
            if st != 0:
                raise AssertionError(f"{verb} {name} P={p}: exit {st}\n{err[-2000:]}")
            try:
                same(one, json.loads(out))
            except AssertionError as e:
                raise AssertionError(f"{verb} {name} P={p}: {e}") from None
            if err.strip():
                raise AssertionError(f"{verb} {name} P={p}: stderr {err!r}")


def test_kl():
    check_command("kl")


def test_kl_topk():
    """kl --topk's job merges its states as kl's: its table kl_topk (the draws of sampled
    are a function of the sample index, the reservoir of the sample's hash) is the one of
    a single process."""
    check_command("kl", ("--topk", "1,3,7", "-T", "1,2"))


def test_kl_small_reservoir():
    """Spearman on a subsample: the reservoir keeps the samples of smallest
    hash(seed, sample index), so the same ones whatever P: exact."""
    for name, args in inputs():
        full = ["kl", *args, "--block-rows", "37", "--spearman-samples", "50", "--seed", "7",
                "--format", "json"]
        one = json.loads(kt.run(*full, check=0)[1])
        for p in PS:
            st, out, err = mpirun(p, *full)
            assert st == 0, err
            two = json.loads(out)
            for a, b in zip(kt.records(one, "kl"), kt.records(two, "kl")):
                sa, sb = a.get("spearman"), b.get("spearman")
                assert sa == sb or (sa is None and sb is None) or (
                    isinstance(sa, float) and math.isnan(sa) and math.isnan(sb)), \
                    f"{name} P={p}: spearman {sa!r} vs {sb!r}"


def test_more_ranks_than_rows():
    t = os.path.join(_work, "tiny-t.h5")
    s = os.path.join(_work, "tiny-s.h5")
    subprocess.run([SYNTH, "--n", "3", "--checkpoints", "1", "--chunk-rows", "1", t, s],
                   check=True, capture_output=True)
    st, _, err = mpirun(4, "kl", "-t", t, "-s", s)
    assert st == 2, f"exit {st}: {err}"
    kt.one_line_error(ours(err), "4 MPI processes for 3 samples")


def test_error_on_one_rank():
    """A NaN only the last rank reads: every rank stops, one line, exit 1."""
    import h5py
    t, s = synth_pair()
    bad = os.path.join(_work, "bad.h5")
    shutil.copy(s, bad)
    with h5py.File(bad, "r+") as f:
        names = []
        f.visit(lambda n: names.append(n) if n.endswith("logits") and
                isinstance(f[n], h5py.Dataset) and f[n].ndim == 2 else None)
        ds = f[names[0]]
        row = ds[-1]
        row[0] = float("nan")
        ds[-1] = row
    st1, _, err1 = kt.run("kl", "-t", t, "-s", bad, "--block-rows", "37")
    assert st1 == 1, err1
    for p in (2, 3):
        st, out, err = mpirun(p, "kl", "-t", t, "-s", bad, "--block-rows", "37")
        assert st == 1, f"P={p}: exit {st}: {err}"
        kt.one_line_error(ours(err))
        assert ours(err) == err1.strip(), f"P={p}: {err!r} vs {err1!r}"


if __name__ == "__main__":  # importable: test_mpi_summary_report.py uses inputs()
    kt.main(globals())
