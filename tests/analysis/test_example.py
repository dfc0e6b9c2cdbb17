#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The bundled Fashion-MNIST example: it loads cleanly, and the findings it
exists to show are there (the narrow student is flagged by dims; the demo
report is written)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

EX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "datasets", "example")
T = os.path.join(EX, "teacher.h5")
S = {k: os.path.join(EX, f"student_{k}.h5") for k in ("ce", "kd", "narrow")}


def test_example_has_no_problems_and_fits_the_budget():
    doc = kt.run_json("inspect", T, *S.values())
    assert not kt.records(doc, "problems")
    assert [r["samples"] for r in kt.records(doc, "files")] == [2000] * 4
    size = sum(os.path.getsize(os.path.join(EX, f)) for f in os.listdir(EX))
    assert size <= 10 * 1024 * 1024, size


def test_narrow_student_is_flagged():
    doc = kt.run_json("dims", "-t", T, *[a for k in ("ce", "kd", "narrow") for a in ("-s", S[k])])
    verdicts = {r["model"]: r for r in kt.records(doc, "verdict")}
    assert sorted(verdicts) == ["student_ce", "student_kd", "student_narrow"], verdicts
    narrow = verdicts["student_narrow"]
    assert narrow["verdict"] == "insufficient (architectural, realised)", narrow
    assert narrow["d_s"] == 4 and narrow["d_needed"] == 8, narrow
    assert narrow["reason"].startswith("d_s = 4 < d_needed = 8"), narrow
    for k in ("student_ce", "student_kd"):
        v = verdicts[k]
        # Wide enough, but their features explain 91 % / 96 % of the teacher's logits.
        assert v["architectural"] == "sufficient" and v["d_s"] == 32, v
        assert v["verdict"] == "insufficient (realised)", v


def test_demo_writes_the_report():
    out = os.path.join(kt.tmpdir(), "demo")
    st, stdout, err = kt.run("demo", "-o", out, "--gnuplot", os.environ.get("KDL_GNUPLOT", ""))
    assert st == 0, err
    assert f"report written to {out}/index.html" in stdout
    html = open(os.path.join(out, "index.html")).read()
    for k in ("student_ce", "student_kd", "student_narrow"):
        assert k in html
    assert os.path.getsize(os.path.join(out, "figures", "kl_sources.png")) > 5000
    # the demo is report --measure all: the measures' figure for each of the 3 students
    for s in (1, 2, 3):
        assert os.path.getsize(os.path.join(out, "figures", f"measures_s{s}.png")) > 5000


if __name__ == "__main__":
    if not os.environ.get("KDL_GNUPLOT"):
        print("gnuplot not found: skipped")
        sys.exit(77)
    kt.main(globals())
