#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Teacher/student alignment, roles and the inner join, through every command.

Dumps are written here with h5py.  A student whose rows are in another order
is refused (exit 1, one line naming the student file, the row and both
labels) when nothing can pair it but the row order; with /sample_ids it gives
the numbers of the student written in the teacher's order; with a subset of
the ids, --join inner gives the numbers of the teacher restricted to those
ids (and a numpy reference of the exact KL mean).  A -t/-s pair whose role
attributes say the opposite is a usage error unless --ignore-roles, and a
pairing that no labels can check is said in a note.
"""
import json
import math
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

TMP = kt.tmpdir()
N, C, D_T, D_S, TAU = 240, 4, 8, 5, 4.0
RNG = np.random.default_rng(20260716)
LABELS = RNG.permutation(np.arange(N) % C)
IDS = 5000 + 7 * np.arange(N)


def model(d, teacher=None):
    h = RNG.standard_normal((N, d)) * 1.2 + 0.3
    h[np.arange(N), LABELS % d] += 2.5  # some class structure for the layer quality
    if teacher is not None:
        h[:, :3] += teacher["h"][:, :3]
    w = RNG.standard_normal((C, d)) * 0.7
    b = RNG.standard_normal(C) * 0.2
    z = h @ w.T + b
    if teacher is not None:
        z = 0.5 * z + teacher["z"] + 0.8 * RNG.standard_normal((N, C))
    return dict(h=h, early=h[:, :3] * 0.5 + RNG.standard_normal((N, 3)), w=w, b=b, z=z)


TEACHER = model(D_T)
STUDENT = model(D_S, TEACHER)


def write(name, role, m, rows=None, labels=True, ids=True):
    """A dump holding the samples @rows (default all), stored in that order."""
    rows = np.arange(N) if rows is None else np.asarray(rows)
    path = os.path.join(TMP, name)
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = role
        f.attrs["model"] = role + "-align"
        if labels:
            f["labels"] = LABELS[rows].astype(np.int32)
        if ids:
            f["sample_ids"] = IDS[rows].astype(np.int64)
        g = f.create_group("checkpoints/final")
        g.attrs["step"] = np.int64(100)
        g["logits"] = m["z"][rows]
        g["features/pen"] = m["h"][rows]
        g["features/pen"].attrs["depth"] = 2
        g["features/early"] = m["early"][rows]
        g["features/early"].attrs["depth"] = 1
        g["head/weight"] = m["w"]
        g["head/bias"] = m["b"]
        g["head"].attrs["input"] = "pen"
    return path


PERM = np.random.default_rng(3).permutation(N)
KEEP = np.sort(np.random.default_rng(5).choice(N, 160, replace=False))
T = write("teacher.h5", "teacher", TEACHER)
T_NOIDS = write("teacher-noids.h5", "teacher", TEACHER, ids=False)
S = write("student.h5", "student", STUDENT)
S_PERM_NOIDS = write("student-perm-noids.h5", "student", STUDENT, rows=PERM, ids=False)
S_PERM = write("student-perm.h5", "student", STUDENT, rows=PERM)
S_SUB = write("student-sub.h5", "student", STUDENT, rows=np.random.default_rng(9).permutation(KEEP))
T_SUB = write("teacher-sub.h5", "teacher", TEACHER, rows=KEEP)
S_NOLABELS = write("student-nolabels.h5", "student", STUDENT, labels=False, ids=False)


def commands(t, s, *extra):
    """Every command that pairs a student with the teacher, on @t and @s."""
    return {
        "kl": ["kl", "-t", t, "-s", s, *extra],
        "split": ["split", "-t", t, "-s", s, *extra],
        "cka": ["cka", t, s, *extra],
        "dims": ["dims", "-t", t, "-s", s, *extra],
        "layers": ["layers", "-t", t, "-s", s, "--subsample", "120", *extra],
    }


def numbers_equal(a, b, what, rtol=1e-12, atol=1e-12):
    """Two JSON documents with the same records, every number within rtol/atol."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{what}: keys {a.keys()} {b}"
        for k in a:
            numbers_equal(a[k], b[k], f"{what}.{k}", rtol, atol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{what}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            numbers_equal(x, y, f"{what}[{i}]", rtol, atol)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(
            a, bool) and not isinstance(b, bool) and float in (type(a), type(b)):
        kt.assert_close(a, b, rtol=rtol, atol=atol, what=what)
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


def doc(args, rename=()):
    """kdlens ARGS --format json, parsed after renaming paths (old, new) in its text."""
    _, out, _ = kt.run(*args, "--format", "json", check=0)
    for old, new in rename:
        out = out.replace(old, new)
    return json.loads(out)


def first_mismatch():
    """The first row where the permuted student's label differs from the teacher's."""
    i = int(np.nonzero(LABELS[PERM] != LABELS)[0][0])
    return i, int(LABELS[i]), int(LABELS[PERM][i])


# ---- (a) rows in another order, no ids: refused everywhere ------------------------

def test_misaligned_rows_are_refused_by_every_command():
    i, yt, ys = first_mismatch()
    want = (S_PERM_NOIDS, f"row {i} has label {ys}", f"teacher '{T_NOIDS}' has {yt}")
    runs = dict(commands(T_NOIDS, S_PERM_NOIDS))
    runs["report"] = ["report", "-t", T_NOIDS, "-s", S_PERM_NOIDS, "-o",
                      os.path.join(TMP, "report-misaligned"), "--quiet"]
    runs["inspect"] = ["inspect", T_NOIDS, S_PERM_NOIDS]
    runs["inspect --quick"] = ["inspect", "--quick", T_NOIDS, S_PERM_NOIDS]
    for name, args in runs.items():
        st, _, err = kt.run(*args)
        assert st == 1, f"{name}: exit {st}, expected 1; stderr {err!r}"
        kt.one_line_error(err, *want)
    assert not os.path.exists(os.path.join(TMP, "report-misaligned"))


def test_misaligned_rows_are_refused_with_ids_when_labels_differ():
    """Joined on ids, the labels must still agree: the id names the sample."""
    bad = os.path.join(TMP, "student-badlabel.h5")
    write("student-badlabel.h5", "student", STUDENT, rows=PERM)
    with h5py.File(bad, "a") as f:
        y = f["labels"][...]
        y[17] = (y[17] + 1) % C
        f["labels"][...] = y
    st, _, err = kt.run("kl", "-t", T, "-s", bad)
    assert st == 1
    kt.one_line_error(err, bad, "row 17", f"sample id {IDS[PERM[17]]}",
                      f"has label {(LABELS[PERM[17]] + 1) % C}",
                      f"'{T}' has {LABELS[PERM[17]]} (row {PERM[17]})")


# ---- (b) the same student with /sample_ids: the numbers of the aligned one ---------

def test_permuted_student_with_ids_gives_the_aligned_numbers():
    plain, perm = commands(T, S), commands(T, S_PERM)
    for name in plain:
        want = doc(plain[name])
        got = doc(perm[name], rename=[(S_PERM, S)])
        numbers_equal(got, want, name)


# ---- (c) --join inner: the shared ids only -----------------------------------------

def log_softmax(x):
    m = x.max(1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(1, keepdims=True))


def teacher_alone(d):
    """dims without what describes the teacher alone, which uses all its samples."""
    # softmax_bottleneck is the teacher's spectrum over its samples, at the student's width.
    d["results"] = [r for r in d["results"]
                    if r.get("role") != "teacher" and r["table"] != "softmax_bottleneck"]
    for r in d["results"]:  # the teacher's curve and rank, at the student's width
        r.pop("teacher_logit_effective_rank", None)
        r.pop("logit_residual_at_width", None)
    return d


def test_inner_join_equals_the_teacher_restricted_to_the_shared_ids():
    inner, restricted = commands(T, S_SUB, "--join", "inner"), commands(T_SUB, S_SUB)
    for name in inner:
        got = doc(inner[name], rename=[(T, T_SUB)])
        joins = kt.records(got, "join")
        assert [(r["student"], r["teacher_samples"], r["student_samples"],
                 r["shared_samples"]) for r in joins] == [(S_SUB, N, len(KEEP), len(KEEP))], joins
        assert any(n.startswith(f"--join inner: the teacher '{T_SUB}' has {N} samples, "
                                f"'{S_SUB}' {len(KEEP)}; the {len(KEEP)} sample ids they share")
                   for n in got["notes"]), got["notes"]
        got["results"] = [r for r in got["results"] if r["table"] != "join"]
        got["notes"] = [n for n in got["notes"] if "--join inner" not in n]
        want = doc(restricted[name])
        if name == "dims":
            got, want = teacher_alone(got), teacher_alone(want)
        numbers_equal(got, want, name)


def test_inner_join_kl_mean_matches_numpy():
    got = doc(["kl", "-t", T, "-s", S_SUB, "--join", "inner"])
    lpt = log_softmax(TEACHER["z"][KEEP] / TAU)
    lps = log_softmax(STUDENT["z"][KEEP] / TAU)
    ref = TAU ** 2 * (np.exp(lpt) * (lpt - lps)).sum(1)
    row = [r for r in kt.records(got, "kl") if r["approximation"] == "kl"]
    assert len(row) == 1, row
    assert row[0]["samples"] == len(KEEP)
    kt.assert_close(row[0]["mean"], math.fsum(ref) / len(ref), rtol=1e-12, what="mean KL")


def test_strict_join_refuses_a_subset_of_ids():
    st, _, err = kt.run("kl", "-t", T, "-s", S_SUB)
    assert st == 1
    kt.one_line_error(err, T, S_SUB, f"{N - len(KEEP)} samples differ",
                      f"{N - len(KEEP)} of the teacher's are not in the student",
                      f"--join inner analyses the {len(KEEP)} they share")


def test_inner_join_without_ids_is_a_usage_error():
    for args in (["kl", "-t", T_NOIDS, "-s", S], ["dims", "-t", T, "-s", S_NOLABELS],
                 ["cka", T, S_NOLABELS], ["inspect", T_NOIDS, S]):
        st, _, err = kt.run(*args, "--join", "inner")
        assert st == 2, f"{args}: exit {st}"
        kt.one_line_error(err, "--join inner", "has no /sample_ids")
    st, _, err = kt.run("cka", T, "--join", "inner")
    assert st == 2
    kt.one_line_error(err, "--join inner", "found one dump")
    st, _, err = kt.run("kl", "-t", T, "-s", S, "--join", "outer")
    assert st == 2
    assert "--join: expected strict or inner, found 'outer'" in err


# ---- (d) roles --------------------------------------------------------------------

def test_swapped_roles_are_a_usage_error_naming_both_files():
    runs = dict(commands(S, T))
    del runs["cka"]  # positional: no roles implied
    runs["report"] = ["report", "-t", S, "-s", T, "-o", os.path.join(TMP, "report-roles"),
                      "--quiet"]
    for name, args in runs.items():
        st, _, err = kt.run(*args)
        assert st == 2, f"{name}: exit {st}, expected 2; stderr {err!r}"
        kt.one_line_error(err, f"-t '{S}' has role \"student\"",
                          f"-s '{T}' has role \"teacher\"", "--ignore-roles")
    st, _, err = kt.run("layers", "-t", S)
    assert st == 2
    kt.one_line_error(err, f"-t '{S}' has role \"student\"")
    st, _, err = kt.run("dims", "-s", T)
    assert st == 2
    kt.one_line_error(err, f"-s '{T}' has role \"teacher\"")


def test_ignore_roles_runs_and_says_so():
    for name, args in commands(S, T, "--ignore-roles").items():
        if name == "cka":
            continue
        got = doc(args)
        assert any(n.startswith("--ignore-roles: the dumps' roles were not checked") and
                   f"-t '{S}' (role student)" in n and f"-s '{T}' (role teacher)" in n
                   for n in got["notes"]), (name, got["notes"])
    got = doc(["cka", S, T])  # positional dumps: nothing checked, nothing said
    assert not any("role" in n for n in got["notes"]), got["notes"]
    st, _, err = kt.run("cka", S, T, "--ignore-roles")
    assert st == 2 and "--ignore-roles" in err


# ---- (e) a pairing by row order that no labels can check --------------------------

def test_unchecked_pairing_is_noted():
    note = (f"'{S_NOLABELS}' is paired with the teacher '{T_NOIDS}' by row order, unchecked: "
            f"'{S_NOLABELS}' has no /labels")
    for name, args in commands(T_NOIDS, S_NOLABELS).items():
        got = doc(args)
        assert any(n.startswith(note) for n in got["notes"]), (name, got["notes"])
    for extra in ([], ["--quick"]):
        got = doc(["inspect", *extra, T_NOIDS, S_NOLABELS])
        assert any(n.startswith(note) for n in got["notes"]), got["notes"]
    got = doc(["kl", "-t", T_NOIDS, "-s", S])
    assert not any("unchecked" in n for n in got["notes"]), got["notes"]


if __name__ == "__main__":
    kt.main(globals())
