#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""`kdlens summary` against an independent numpy computation (docs/summary.md).

Every number of the "summary" and "summary_groups" tables is recomputed here
and compared with relative error <= 1e-12: softmax in long double from the
maximum, ECE and classwise ECE by their textbook form |B|/N |acc - conf| per
bin (bins found by comparing with the edges b/B), the KL as the textbook
sum p_t (log p_t - log p_s) in long double, the group spread with numpy's
std(ddof=1).  The data: the bundled example (datasets/example), a kdl-synth
pair, and three synthetic seeds of one student configuration written here.
"""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

RTOL = 1e-12
ATOL = 1e-15
Q = ("accuracy", "fidelity", "ece", "classwise_ece", "kl", "nll")
EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "datasets",
                       "example")
SYNTH = os.environ.get("KDL_SYNTH", "kdl-synth")
TMP = kt.tmpdir()


# ---- the reference -------------------------------------------------------------------

def log_softmax(z):
    z = np.asarray(z, dtype=np.longdouble)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def edge_bins(v, bins):
    """The bin of each v: b/B < v <= (b+1)/B, and 0 in bin 0."""
    edges = np.arange(1, bins + 1, dtype=np.float64) / bins
    return np.minimum(np.searchsorted(edges, v, side="left"), bins - 1)


def binned_error(hit, prob, bins):
    """sum_b |B_b|/N |mean hit - mean prob| over the bins of prob."""
    b = edge_bins(np.asarray(prob, dtype=np.float64), bins)
    total = np.longdouble(0)
    for k in np.unique(b):
        sel = b == k
        total += sel.sum() / len(hit) * abs(hit[sel].mean() - prob[sel].mean())
    return total


def reference(z, y, zt=None, tau=4.0, bins=15):
    """The row of a model with logits z [N, C] (float64) and labels y; zt: its teacher's."""
    n, c = z.shape
    lp = log_softmax(z)
    p = np.exp(lp)
    pred = np.argmax(z, axis=1)
    conf = p[np.arange(n), pred]
    hit = (pred == y).astype(np.longdouble)
    r = {"samples": n, "accuracy": float(hit.mean()),
         "ece": float(binned_error(hit, conf, bins)),
         "classwise_ece": float(sum(binned_error((y == j).astype(np.longdouble), p[:, j], bins)
                                    for j in range(c)) / c),
         "nll": float(-lp[np.arange(n), y].mean())}
    if zt is not None:
        r["fidelity"] = float(np.mean(pred == np.argmax(zt, axis=1)))
        lt, ls = log_softmax(np.asarray(zt) / tau), log_softmax(np.asarray(z) / tau)
        pt = np.exp(lt)
        terms = np.where(pt > 0, pt * (lt - ls), 0)
        r["kl"] = float(tau * tau * terms.sum(axis=1).mean())
    return r


def read_model(path):
    """{checkpoint: logits as float64}, labels, ids (None without) of a dump."""
    with h5py.File(path, "r") as f:
        cks = {name: g["logits"][()].astype(np.float64) for name, g in f["checkpoints"].items()}
        y = f["labels"][()].astype(np.int64) if "labels" in f else None
        ids = f["sample_ids"][()] if "sample_ids" in f else None
    return cks, y, ids


def by_step(path):
    """The checkpoint names of a dump in step order."""
    with h5py.File(path, "r") as f:
        return sorted(f["checkpoints"], key=lambda c: int(f["checkpoints"][c].attrs["step"]))


def teacher_order(t_ids, s_ids):
    """Rows of the student in the teacher's sample order (by id, or the same order)."""
    if t_ids is None or s_ids is None:
        return slice(None)
    where = {int(i): r for r, i in enumerate(s_ids)}
    return np.array([where[int(i)] for i in t_ids])


def check_row(got, want, what):
    for key, value in want.items():
        if key == "samples":
            assert got[key] == value, (what, key, got[key], value)
        else:
            kt.assert_close(got.get(key), value, RTOL, ATOL, f"{what} {key}")


def one(doc, table, **keys):
    rows = [r for r in kt.records(doc, table) if all(r.get(k) == v for k, v in keys.items())]
    assert len(rows) == 1, (table, keys, len(rows))
    return rows[0]


def check_document(doc, teacher, students, checkpoints, tau=4.0, bins=15):
    """Every row of @doc's summary table against the reference; @checkpoints: the student
    checkpoints compared (with the teacher's of the same name when in @same)."""
    tz, ty, tids = read_model(teacher)
    assert len(kt.records(doc, "summary")) == len(checkpoints["teacher"]) + sum(
        len(checkpoints[s]) for s in students)
    for ck in checkpoints["teacher"]:
        row = one(doc, "summary", role="teacher", checkpoint=ck)
        assert "fidelity" not in row and "kl" not in row and row["model"] == teacher
        check_row(row, reference(tz[ck], ty, bins=bins), f"teacher {ck}")
    for s in students:
        sz, _, sids = read_model(s)
        order = teacher_order(tids, sids)
        for ck, tck in checkpoints[s]:
            row = one(doc, "summary", model=s, checkpoint=ck)
            assert row["teacher_checkpoint"] == tck and row["tau"] == tau
            check_row(row, reference(sz[ck][order], ty, tz[tck], tau, bins), f"{s} {ck}")


# ---- the bundled example and a kdl-synth pair --------------------------------------------

def example(name):
    return os.path.join(EXAMPLE, name + ".h5")


def test_example_against_numpy():
    t = example("teacher")
    students = [example(n) for n in ("student_kd", "student_ce", "student_narrow")]
    steps = ("init", "early", "middle", "final")
    doc = kt.run_json("summary", "-t", t, *sum((["-s", s] for s in students), []), "-c", "all")
    check_document(doc, t, students,
                   {"teacher": ["final"], **{s: [(c, "final") for c in steps] for s in students}})
    assert [r["checkpoint"] for r in kt.records(doc, "summary")][:5] == \
        ["final", "init", "early", "middle", "final"]
    # the KD student's KL is kdlens kl's
    kl = kt.run_json("kl", "-t", t, "-s", students[0])
    mean = [r["mean"] for r in kt.records(kl, "kl") if r["approximation"] == "kl"][0]
    kt.assert_close(one(doc, "summary", model=students[0], checkpoint="final")["kl"], mean,
                    1e-13, 0.0, "kl as kdlens kl's")


def test_example_options():
    """-T, --bins, --teacher-checkpoint same and the default checkpoint, each against numpy;
    --block-rows changes no number, not even in the last bit."""
    t, s = example("teacher"), example("student_kd")
    doc = kt.run_json("summary", "-t", t, "-s", s, "-T", "2", "--bins", "10")
    check_document(doc, t, [s], {"teacher": ["final"], s: [("final", "final")]}, tau=2.0,
                   bins=10)
    assert "10 equal-width bins" in doc["notes"][0] and "tau = 2" in doc["notes"][0]
    doc = kt.run_json("summary", "-t", t, "-s", s, "-c", "all", "--teacher-checkpoint", "same")
    cks = ["init", "early", "middle", "final"]
    check_document(doc, t, [s], {"teacher": cks, s: [(c, c) for c in cks]})
    a = kt.run_json("summary", "-t", t, "-s", s, "-c", "middle")
    b = kt.run_json("summary", "-t", t, "-s", s, "-c", "middle", "--block-rows", "77")
    assert a["results"] == b["results"]
    check_document(a, t, [s], {"teacher": ["final"], s: [("middle", "final")]})


def synth(*opts):
    d = os.path.join(TMP, "synth%d" % len(os.listdir(TMP)))
    os.mkdir(d)
    t, s = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
    subprocess.run([SYNTH, *map(str, opts), t, s], check=True, capture_output=True, timeout=300)
    return t, s


def test_synth_pair_against_numpy():
    """A shuffled student (joined on /sample_ids), 20 classes, two checkpoints."""
    t, s = synth("--n", 3000, "--classes", 20, "--checkpoints", 2, "--permute-student",
                 "--no-gradients", "--seed", 4)
    cks, tck = by_step(s), by_step(t)
    doc = kt.run_json("summary", "-t", t, "-s", s, "-c", "all", "--block-rows", 500)
    check_document(doc, t, [s], {"teacher": [tck[-1]], s: [(c, tck[-1]) for c in cks]})
    for r in kt.records(doc, "summary"):
        assert 0 < r["accuracy"] <= 1 and r["ece"] > 0 and r["nll"] > 0, r


# ---- groups of seeds ---------------------------------------------------------------------

def write_student(path, teacher, seed, noise):
    """A student of @teacher's samples and labels: its logits plus seeded noise, at every
    teacher checkpoint, rows in reverse order (joined on /sample_ids)."""
    tz, y, ids = read_model(teacher)
    rng = np.random.default_rng(seed)
    rev = np.arange(len(y))[::-1]
    with h5py.File(teacher, "r") as tf, h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = "student"
        f["labels"] = y[rev]
        f["sample_ids"] = ids[rev]
        for ck, z in tz.items():
            g = f.create_group("checkpoints/" + ck)
            g.attrs["step"] = tf["checkpoints"][ck].attrs["step"]
            g["logits"] = (0.7 * z + noise * rng.standard_normal(z.shape))[rev]


def group_dumps():
    t, _ = synth("--n", 1200, "--classes", 12, "--checkpoints", 2, "--no-gradients", "--seed", 9)
    seeds = []
    for seed in (11, 12, 13):
        p = os.path.join(os.path.dirname(t), "seed%d.h5" % seed)
        write_student(p, t, seed, 2.0)
        seeds.append(p)
    other = os.path.join(os.path.dirname(t), "other.h5")
    write_student(other, t, 99, 4.0)
    return t, seeds, other


def test_group_of_three_seeds():
    t, seeds, other = group_dumps()
    cks = by_step(t)
    args = ["summary", "-t", t, *sum((["-s", s] for s in seeds + [other]), []),
            "--group", "seeds=" + ",".join(seeds), "--group", "alone=" + other, "-c", "all"]
    doc = kt.run_json(*args)
    check_document(doc, t, seeds + [other],
                   {"teacher": [cks[-1]],
                    **{s: [(c, cks[-1]) for c in cks] for s in seeds + [other]}})
    rows = kt.records(doc, "summary")
    assert {r["group"] for r in rows if r["role"] == "student"} == {"seeds", "alone"}
    for ck in cks:
        g = one(doc, "summary_groups", group="seeds", checkpoint=ck)
        assert g["runs"] == 3
        for q in Q:
            x = np.array([one(doc, "summary", model=s, checkpoint=ck)[q] for s in seeds])
            kt.assert_close(g[q + "_mean"], float(np.mean(x)), RTOL, ATOL, f"{ck} {q} mean")
            kt.assert_close(g[q + "_sd"], float(np.std(x, ddof=1)), RTOL, ATOL, f"{ck} {q} sd")
            assert g[q + "_sd"] > 0, (ck, q)
        a = one(doc, "summary_groups", group="alone", checkpoint=ck)
        assert a["runs"] == 1 and a["accuracy_sd"] is None, a
        assert a["accuracy_mean"] == one(doc, "summary", model=other, checkpoint=ck)["accuracy"]
    assert any("group seeds: 3 runs" in n for n in doc["notes"])

    # the terminal shows mean ± sd with the number of runs; csv has both numbers
    _, out, _ = kt.run(*args, check=0)
    g = one(doc, "summary_groups", group="seeds", checkpoint=cks[-1])
    cell = "%.6g ± %.2g" % (g["accuracy_mean"], g["accuracy_sd"])
    line = [l for l in out.splitlines() if l.startswith("seeds") and cks[-1] in l][0]
    assert cell in line and " 3 " in line, (cell, line)
    _, out, _ = kt.run(*args, "--format", "csv", "--table", "summary_groups", check=0)
    assert out.startswith("group,") and "accuracy_mean,accuracy_sd" in out.splitlines()[0]

    # the default checkpoint: each run's last
    doc = kt.run_json("summary", "-t", t, *sum((["-s", s] for s in seeds), []),
                      "--group", "seeds=" + ",".join(seeds))
    g = kt.records(doc, "summary_groups")
    assert len(g) == 1 and g[0]["checkpoint"] == cks[-1] and g[0]["runs"] == 3


# ---- bad inputs --------------------------------------------------------------------------

def test_bad_inputs():
    t, seeds, other = group_dumps()
    d = os.path.dirname(t)
    base = ["summary", "-t", t, "-s", seeds[0], "-s", seeds[1]]
    for extra, needle in ((["--group", "g=" + other], "is not a student"),
                          (["--group", "g=" + seeds[0] + "," + seeds[0]], "named twice"),
                          (["--group", "g=" + seeds[0], "--group", "g=" + seeds[1]],
                           "given twice"),
                          (["--group", "g"], "expected NAME=FILE"),
                          (["-T", "1,2"], "one temperature"),
                          (["--bins", "0"], "--bins"),
                          (["--spatial", "max"], "no feature"),
                          (["--per-sample", os.path.join(d, "x.h5")], "no per-sample"),
                          (["-c", "nope"], "nope")):
        st, out, err = kt.run(*base, *extra)
        assert st == 2 and out == "" and needle in err, (extra, st, err)
    st, out, err = kt.run("summary", "-t", t)
    assert st == 2 and "at least one student" in err

    # no labels in either dump: one line naming the file and /labels
    nolab_t, nolab_s = os.path.join(d, "nolab-t.h5"), os.path.join(d, "nolab-s.h5")
    for src, dst in ((t, nolab_t), (seeds[0], nolab_s)):
        shutil.copy(src, dst)
        with h5py.File(dst, "a") as f:
            del f["labels"]
    st, out, err = kt.run("summary", "-t", nolab_t, "-s", nolab_s)
    assert st == 1 and out == ""
    kt.one_line_error(err, "kdlens summary:", nolab_t, "/labels", "found none")

    # a teacher without labels is measured against the student's, and says so
    doc = kt.run_json("summary", "-t", nolab_t, "-s", seeds[0])
    tz, ty, tids = read_model(t)
    check_row(one(doc, "summary", role="teacher"), reference(tz[by_step(t)[-1]], ty), "teacher")
    assert any("has no /labels" in n for n in doc["notes"])

    # NaN: an error naming the dataset and sample, or skipped and counted
    nan = os.path.join(d, "nan.h5")
    shutil.copy(seeds[0], nan)
    with h5py.File(nan, "a") as f:
        ck = by_step(t)[-1]
        z = f["checkpoints/" + ck + "/logits"][()]
        z[5, 3] = np.nan
        f["checkpoints/" + ck + "/logits"][...] = z
    st, out, err = kt.run("summary", "-t", t, "-s", nan)
    assert st == 1 and out == ""
    kt.one_line_error(err, "kdlens summary:", "logits", "NaN")
    doc = kt.run_json("summary", "-t", t, "-s", nan, "--nonfinite", "skip")
    assert one(doc, "summary", model=nan)["samples"] == 1199
    assert any("1 samples with NaN/Inf skipped" in n for n in doc["notes"])


def test_plan_and_memory():
    t, s = example("teacher"), example("student_kd")
    doc = kt.run_json("summary", "-t", t, "-s", s, "--plan")
    plan = kt.records(doc, "plan")
    assert len(plan) == 1 and plan[0]["analysis"] == "summary" and plan[0]["fits"]
    parts = [p["part"] for p in kt.records(doc, "plan_parts")]
    assert any("10 classes x 15 bins" in p for p in parts), parts
    st, out, err = kt.run("summary", "-t", t, "-s", s, "--memory", "64K")
    assert st == 1 and out == ""
    kt.one_line_error(err, "kdlens summary:", "summary needs", "--memory")


kt.main(globals())
