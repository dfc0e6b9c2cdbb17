#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens report's section "Sparse teacher targets" (kl --topk): on by default for the bundled
language-model example, its numbers those of kdlens kl --topk on the same files, chosen by
--topk, and absent on the Fashion-MNIST example."""
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

GNUPLOT = os.environ.get("KDL_GNUPLOT", "")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "datasets")
LM_T, LM_S = (os.path.join(DATA, "example-lm", f) for f in ("teacher.h5", "student.h5"))
FM_T, FM_S = (os.path.join(DATA, "example", f) for f in ("teacher.h5", "student_kd.h5"))


def report(t, s, *extra):
    out = os.path.join(kt.tmpdir(), "rep")
    kt.run("report", "-t", t, "-s", s, "-o", out, "--quiet", "--gnuplot", GNUPLOT, "-T", "2",
           *extra, check=0)
    return out, open(os.path.join(out, "index.html")).read()


def same_rows(out, topk):
    """data/kl_topk.json's kl_topk rows are kdlens kl --topk's, value for value."""
    shared = json.load(open(os.path.join(out, "data", "kl_topk.json")))
    alone = kt.run_json("kl", "-t", LM_T, "-s", LM_S, "-c", "all", "-T", "2", "--topk", topk)
    rows = kt.records(shared, "kl_topk")
    want = kt.records(alone, "kl_topk")
    assert rows and rows == want, (rows[:2], want[:2])
    ks = {r["k"] for r in rows if r["approximation"] != "hard"}
    assert sorted(ks) == sorted(int(k) for k in topk.split(",")), ks


def test_lm_example_shows_the_section_by_default():
    out, html = report(LM_T, LM_S)
    assert 'id="sec-sparse-teacher-targets"' in html, re.findall(r'<section id="([^"]+)"', html)
    fig = re.search(r'<figure id="fig-kl_topk_s1">(.*?)</figure>', html, re.S)
    assert fig, "no figure kl_topk_s1"
    caption = fig.group(1)
    assert "the default 1, 8, 32, 128 capped" in caption, caption
    assert "data/kl_topk_s1.dat" in caption and "--topk 1,8,32,128" in caption, caption
    for ext in ("png", "pdf", "svg"):
        assert os.path.getsize(os.path.join(out, "figures", "kl_topk_s1." + ext)) > 2000
    assert os.path.isfile(os.path.join(out, "tables", "kl_topk.csv")) or \
        any(f.startswith("kl_topk") for f in os.listdir(os.path.join(out, "tables")))
    same_rows(out, "1,8,32,128")
    # the LM example's teacher has logits only: the layers section says so, no "0 layers"
    assert "has no feature layers at its checkpoint final" in html
    assert "of its 0 feature layers" not in html


def test_topk_option_chooses_the_k():
    out, html = report(LM_T, LM_S, "--topk", "2,16")
    assert "--topk 2,16" in html and "as report --topk gave them" in html
    same_rows(out, "2,16")


def test_absent_on_the_fashion_mnist_example():
    out, html = report(FM_T, FM_S)
    assert "sec-sparse-teacher-targets" not in html
    assert not os.path.exists(os.path.join(out, "data", "kl_topk.json"))


if __name__ == "__main__":
    if not GNUPLOT:
        print("gnuplot not found: skipped")
        sys.exit(77)
    kt.main(globals())
