#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens report --measure: the figure and table of the similarity measures of the teacher's
best layers, equal to kdlens cka --measure all on the same pairs, from the report's own pass;
absent without --measure; refused when bad; counted in --plan's need."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

GNUPLOT = os.environ.get("KDL_GNUPLOT", "")
MATRICES = {"cka": "cka", "cca_mean_rho": "cca", "svcca": "svcca", "pwcca": "pwcca",
            "procrustes": "procrustes"}
_pair = []


def pair():
    """A small synthetic teacher (4 layers) and student (2 layers, 2 checkpoints: the
    report's CKA of them shares one pass)."""
    if not _pair:
        d = kt.tmpdir()
        t, s = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
        p = subprocess.run([os.environ.get("KDL_SYNTH", "kdl-synth"), "--n", "400", "--classes",
                            "5", "--teacher-widths", "12,24,16,8", "--student-widths", "6,10",
                            "--checkpoints", "2", "--no-gradients", t, s],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        _pair.extend([d, t, s])
    return _pair


def report(out, *extra):
    _, t, s = pair()
    return kt.run("report", "-t", t, "-s", s, "-o", out, "--quiet", "--gnuplot", GNUPLOT,
                  *extra)


def test_values_equal_cka_measure_all():
    """From the pass both checkpoints share, and from the last checkpoint's own."""
    d, t, s = pair()
    cka = kt.run_json("cka", t, s, "--measure", "all")
    for i, extra in enumerate(((), ("--checkpoint", "final"))):
        check_values(cka, os.path.join(d, f"all{i}"), extra)


def check_values(cka, out, extra):
    st, _, err = report(out, "--measure", "all", *extra)
    assert st == 0, err
    rows = kt.records(json.load(open(os.path.join(out, "data", "measures.json"))), "measures")
    assert len(rows) == 3, rows
    ck = rows[0]["checkpoint"]
    # Only the last checkpoint's CKA computes the measures.
    docs = [f for f in os.listdir(os.path.join(out, "data"))
            if f.startswith("cka_s1_") and f.endswith(".json")]
    assert len(docs) == (1 if extra else 2), docs
    for f in docs:
        doc = json.load(open(os.path.join(out, "data", f)))
        assert bool(kt.records(doc, "cca")) == (f == f"cka_s1_{ck}.json"), f

    def cell(table, layer, col):
        hits = [r for r in kt.records(cka, table)
                if r["layer"] == layer and r["checkpoint_b"] == ck]
        assert len(hits) == 1, (table, layer, hits)
        return hits[0][col]

    for r in rows:
        for key, table in MATRICES.items():
            want = cell(table, r["teacher_layer"], r["student_layer"])
            kt.assert_close(r[key], want, rtol=0, atol=1e-10, what=f"{key} {r['teacher_layer']}")
        kt.assert_close(r["procrustes_nuclear"], 1 - r["procrustes"] / 2, rtol=0, atol=1e-12,
                        what="nuclear norm")
    # The best: the 3 teacher layers (not the logits) of highest CKA with the student's last.
    last = rows[0]["student_layer"]
    assert last == "layer2", last
    ranked = sorted((r for r in kt.records(cka, "cka")
                     if r["checkpoint_b"] == ck and r["layer"] != "logits"),
                    key=lambda r: -r[last])
    assert [r["teacher_layer"] for r in rows] == [r["layer"] for r in ranked[:3]], rows


def test_figure_and_tables_written():
    d, _, _ = pair()
    out = os.path.join(d, "fig")
    st, _, err = report(out, "--measure", "cca,procrustes")
    assert st == 0, err
    for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xml")):
        data = open(os.path.join(out, "figures", f"measures_s1.{ext}"), "rb").read()
        assert data.startswith(magic) and len(data) > 2000, ext
    for f in ("tables/measures.md", "tables/measures.csv", "tables/measures.tex",
              "data/measures.json", "data/measures_s1.dat"):
        assert os.path.isfile(os.path.join(out, f)), f
    md = open(os.path.join(out, "index.md")).read()
    cap = md[md.index("figures/measures_s1.png"):].split("\n\n")[1]
    assert "highest linear CKA" in cap and "||X^T Y||_*" in cap, cap
    assert "data/measures_s1.dat, computed by: kdlens cka " in cap, cap
    assert "--measure cka,cca,procrustes*" in cap, cap
    rows = kt.records(json.load(open(os.path.join(out, "data", "measures.json"))), "measures")
    assert "svcca" not in rows[0] and "cca_mean_rho" in rows[0], rows[0]
    html = open(os.path.join(out, "index.html")).read()
    assert "measures_s1.png" in html and "tables/measures.csv" in html


def test_gram_space_pwcca_has_no_bars():
    """N < width: Gram space, where kdlens cka leaves PWCCA NaN; the figure leaves it out."""
    d = kt.tmpdir()
    t, s = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
    p = subprocess.run([os.environ.get("KDL_SYNTH", "kdl-synth"), "--n", "60", "--classes", "5",
                        "--teacher-widths", "80,24,16", "--student-widths", "6,70",
                        "--checkpoints", "2", "--no-gradients", t, s],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    out = os.path.join(d, "rep")
    st, _, err = kt.run("report", "-t", t, "-s", s, "-o", out, "--quiet", "--gnuplot", GNUPLOT,
                        "--measure", "all")
    assert st == 0, err
    head = open(os.path.join(out, "data", "measures_s1.dat")).readline()
    assert "SVCCA" in head and "PWCCA" not in head, head
    assert open(os.path.join(out, "figures", "measures_s1.png"), "rb").read(4) == b"\x89PNG"
    rows = kt.records(json.load(open(os.path.join(out, "data", "measures.json"))), "measures")
    assert len(rows) == 3 and all(r["pwcca"] is None for r in rows), rows


def test_absent_without_measure():
    d, _, _ = pair()
    out = os.path.join(d, "none")
    st, _, err = report(out)
    assert st == 0, err
    assert not os.path.exists(os.path.join(out, "figures", "measures_s1.png"))
    assert not os.path.exists(os.path.join(out, "tables", "measures.md"))
    assert "Similarity measures" not in open(os.path.join(out, "index.md")).read()


def test_no_feature_layers_is_said():
    """The LM example's dumps hold logits only: --measure has no pair of feature layers to
    compare, and the section says so for the student instead of staying empty."""
    lm = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "example-lm")
    out = os.path.join(kt.tmpdir(), "lm")
    st, _, err = kt.run("report", "-t", os.path.join(lm, "teacher.h5"), "-s",
                        os.path.join(lm, "student.h5"), "-o", out, "--quiet", "--gnuplot",
                        GNUPLOT, "--measure", "all", "--topk", "8")
    assert st == 0, err
    md = open(os.path.join(out, "index.md")).read()
    assert "Similarity measures side by side" in md
    assert "no pair of feature layers to compare" in md, md[-2000:]
    assert not os.path.exists(os.path.join(out, "figures", "measures_s1.png"))


def test_bad_values_refused():
    d, _, _ = pair()
    for bad, needle in ((("--measure", "cka,foo"), "--measure"), (("--measure", ""), "--measure"),
                        (("--svcca-keep", "0.9"), "--svcca-keep"),
                        (("--measure", "svcca", "--svcca-keep", "1.5"), "--svcca-keep")):
        out = os.path.join(d, "bad")
        st, _, err = report(out, *bad)
        lines = [l for l in err.splitlines() if l.startswith("kdlens report:")]
        assert st == 2 and len(lines) == 1 and needle in lines[0], (bad, err)
        assert not os.path.exists(out)


def test_plan_need_grows():
    _, t, s = pair()

    def need(*extra):
        doc = kt.run_json("report", "-t", t, "-s", s, "--plan", *extra)
        parts = [p["part"] for p in kt.records(doc, "plan_parts")]
        return kt.records(doc, "plan")[0]["need_bytes"], parts

    base, parts = need()
    more, parts_m = need("--measure", "all")
    assert more > base, (base, more)
    assert not any("--measure" in p for p in parts)
    assert any("decompositions of --measure" in p for p in parts_m), parts_m
    # Refused over --memory like the rest: a budget of the need without it.  (Below the
    # shared pass's need the checkpoints each take a pass of their own: that need.)
    base = kt.records(kt.run_json("report", "-t", t, "-s", s, "--plan", "--memory",
                                  str(base - 1)), "plan")[0]["need_bytes"]
    doc = kt.run_json("report", "-t", t, "-s", s, "--plan", "--memory", str(base),
                      "--measure", "all")
    assert kt.records(doc, "plan")[0]["fits"] is False, doc
    out = os.path.join(pair()[0], "over")
    st, _, err = report(out, "--memory", str(base), "--measure", "all")
    assert st == 1 and "report needs " in err and not os.path.exists(out), (st, err)
    st, _, err = report(out, "--memory", str(base))
    assert st == 0, err


kt.main(globals())
