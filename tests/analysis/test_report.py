#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens report: a complete directory whose pages reference only files that
exist, every figure rendered, and atomic replacement (a killed or failed run
leaves the previous report as it was)."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

FX = kt.FIXTURES
GNUPLOT = os.environ.get("KDL_GNUPLOT", "")
T, S = os.path.join(FX, "teacher.h5"), os.path.join(FX, "student.h5")


def make_report(out, *extra):
    return kt.run("report", "-t", T, "-s", S, "-o", out, "--quiet", "--gnuplot", GNUPLOT, *extra)


def tree_digest(d):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(d)):
        for f in sorted(files):
            p = os.path.join(root, f)
            h.update(p[len(d):].encode())
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_report_is_complete_and_links_resolve():
    out = os.path.join(kt.tmpdir(), "rep")
    st, _, err = make_report(out)
    assert st == 0, err
    html = open(os.path.join(out, "index.html")).read()
    md = open(os.path.join(out, "index.md")).read()
    links = set(re.findall(r'(?:src|href)="([^"#]+)"', html))
    assert len(links) > 20, links
    for rel in links:
        assert os.path.isfile(os.path.join(out, rel)), f"index.html references missing {rel}"
    for rel in re.findall(r"\]\(([^)]+)\)", md):
        assert os.path.isfile(os.path.join(out, rel)), f"index.md references missing {rel}"
    figs = re.findall(r'<img src="figures/([^"]+)\.png"', html)
    for want in ("split_stacked", "confidence_s1", "kl_sources", "kl_curves_s1", "dims_residual",
                 "layers_quality", "cka_s1_init", "cka_s1_final"):
        assert want in figs, (want, figs)
    for name in figs:
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xml")):
            p = os.path.join(out, "figures", f"{name}.{ext}")
            data = open(p, "rb").read()
            assert data.startswith(magic) and len(data) > 2000, (p, len(data))
        assert os.path.isfile(os.path.join(out, "data", name + ".dat"))
        assert os.path.isfile(os.path.join(out, "scripts", name + ".gp"))
    # CKA heatmaps: the trained teacher (its last checkpoint) against each student checkpoint.
    for ck in ("init", "final"):
        doc = __import__("json").load(open(os.path.join(out, "data", f"cka_s1_{ck}.json")))
        rows = [r for r in doc["results"] if r["table"] == "cka"]
        assert rows and all(r["checkpoint"] == "final" and r["checkpoint_b"] == ck
                            for r in rows), rows[:1]
    for table in ("split", "inputs_files"):
        for ext in ("tex", "md", "csv"):
            assert os.path.getsize(os.path.join(out, "tables", f"{table}.{ext}")) > 50
    assert "\\toprule" in open(os.path.join(out, "tables", "split.tex")).read()
    # The exact command and the inputs are in the report.
    assert f"-o {out}" in html and T in html and "kdlens 0." in html
    # Scripts re-render from the report directory as the page says.
    p = subprocess.run([GNUPLOT, "-e", "fmt='svg'", "scripts/split_stacked.gp"], cwd=out,
                       capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def columns(f, path):
    """Values per sample kdlens reads from dataset @path (spatial average: C of
    [N,C,H,W], D of [N,T,D])."""
    shape = f[path].shape
    return 1 if len(shape) == 1 else shape[2] if len(shape) == 3 else shape[1]


def test_analyses_share_one_stream_and_match_the_commands():
    """The report reads each student checkpoint once per pass on a stream shared by
    kl, split, dims and cka, and each analysis's data is the document its command
    writes alone."""
    import h5py
    import numpy as np
    out = os.path.join(kt.tmpdir(), "rep")
    st, _, err = make_report(out)
    assert st == 0, err
    data = lambda name: json.load(open(os.path.join(out, "data", name + ".json")))
    rows = kt.records(data("passes"), "passes")
    with h5py.File(T) as t, h5py.File(S) as s:
        n = len(np.intersect1d(t["sample_ids"][:], s["sample_ids"][:]))
        tck = sorted(t["checkpoints"], key=lambda c: t["checkpoints"][c].attrs.get("step", 0))
        scks = list(s["checkpoints"])
        tc, last = t["checkpoints"], "/checkpoints/" + tck[-1]
        assert [r["checkpoint"] for r in rows if r["model"] == T] == tck, rows
        assert sorted(r["checkpoint"] for r in rows if r["model"] == S) == sorted(scks), rows
        for r in rows:
            if r["model"] == T:
                # dims alone, one pass per checkpoint: the features and the logits
                # (the ridge targets) of every teacher sample.
                ck = tc[r["checkpoint"]]
                want = sum(columns(ck["features"], l) for l in ck["features"])
                want += columns(ck, "logits")
                assert (r["analyses"], r["datasets"], r["passes"]) == (1, 4, 1), r
                assert r["values_read"] == len(t["sample_ids"]) * want, r
                continue
            sc = "/checkpoints/" + r["checkpoint"]
            tf, sf = list(t[last + "/features"]), list(s[sc + "/features"])
            # Pass 0, every dataset once although analyses share them: all features
            # (cka, dims, kl), logits (all four), the gradients kl uses, the teacher's
            # labels (split), and both dumps' labels for the pairing check (pass 0 only).
            pass0 = (sum(columns(t, f"{last}/features/{l}") for l in tf)
                     + sum(columns(s, f"{sc}/features/{l}") for l in sf)
                     + columns(t, last + "/logits") + columns(s, sc + "/logits")
                     + columns(t, last + "/gradients/features/pen")
                     + columns(t, last + "/gradients/logits")
                     + columns(s, sc + "/gradients/logits") + 1 + 2)
            # Pass 1 only what is still running: split (w_n) and kl, whose projector
            # (head widths 8 and 4) was fitted in pass 0; not cka's or dims' layers.
            assert columns(t, last + "/features/pen") != columns(s, sc + "/features/pen")
            pass1 = pass0 - sum(columns(t, f"{last}/features/{l}") for l in tf if l != "pen") \
                - sum(columns(s, f"{sc}/features/{l}") for l in sf if l != "pen") - 2
            assert (r["analyses"], r["datasets"], r["passes"]) == (4, 12, 2), r
            assert r["values_read"] == n * (pass0 + pass1), (r, n, pass0, pass1)
    common = ("-t", T, "-s", S, "-c", "all", "-T", "4")
    for name, args in (("kl", ("kl",) + common), ("split", ("split",) + common),
                       ("dims", ("dims",) + common),
                       ("cka_s1_final", ("cka", T, S, "-c", "final"))):
        alone, shared = kt.run_json(*args), data(name)
        assert alone["results"], name
        assert alone["results"] == shared["results"], name
        assert alone["notes"] == shared["notes"], name


def test_killed_report_leaves_previous_intact():
    base = kt.tmpdir()
    out = os.path.join(base, "rep")
    st, _, err = make_report(out)
    assert st == 0, err
    before = tree_digest(out)
    # A gnuplot that hangs, so the second run is surely killed mid-way.
    slow = os.path.join(base, "slow-gnuplot")
    with open(slow, "w") as fh:
        fh.write(f"#!/bin/sh\nsleep 30\nexec {GNUPLOT} \"$@\"\n")
    os.chmod(slow, 0o755)
    p = subprocess.Popen([kt.KDLENS, "report", "-t", T, "-s", S, "-o", out, "--quiet",
                          "--gnuplot", slow], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(1.0)
    assert p.poll() is None, "the report finished before it could be interrupted"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert tree_digest(out) == before, "the interrupted run changed the previous report"


def test_failed_gnuplot_is_one_line_and_keeps_previous():
    base = kt.tmpdir()
    out = os.path.join(base, "rep")
    assert make_report(out)[0] == 0
    before = tree_digest(out)
    st, out_text, err = kt.run("report", "-t", T, "-s", S, "-o", out, "--quiet",
                               "--gnuplot", "/bin/false")
    assert st == 1 and out_text == ""
    kt.one_line_error(err, "kdlens report:", "gnuplot failed")
    assert tree_digest(out) == before
    assert sorted(os.listdir(base)) == ["rep"], os.listdir(base)  # no temporary left behind


def test_report_usage_and_bad_inputs():
    st, _, err = kt.run("report", "-t", T, "-o", "x")
    assert st == 2 and "expected -t TEACHER.h5, at least one -s" in err
    out = os.path.join(kt.tmpdir(), "rep")
    st, _, err = kt.run("report", "-t", T, "-s", os.path.join(FX, "bad/no-logits.h5"), "-o", out)
    assert st == 1 and not os.path.exists(out)
    kt.one_line_error(err, "no-logits.h5", "/checkpoints/final/logits")
    st, _, err = kt.run("report", "-t", T, "-s", S, "-o", "/nonexistent/dir/rep")
    assert st == 1
    kt.one_line_error(err, "/nonexistent/dir/rep")


if __name__ == "__main__":
    if not GNUPLOT:
        print("gnuplot not found: skipped")
        sys.exit(77)
    kt.main(globals())
