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
    for rel in re.findall(r"\]\(([^)#][^)]*)\)", md):  # in-page anchors: test_summary_...
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
    kl, split, dims, cka and summary, the cka of all the checkpoints (compared with the same
    teacher checkpoint) in one pass on the first one's stream, and each analysis's data is
    the document its command writes alone."""
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
        first = [r for r in rows if r["model"] == S][0]["checkpoint"]
        for r in rows:
            if r["model"] == T:
                # dims, one pass per checkpoint: the features and the logits (the ridge
                # targets) of every teacher sample; summary's at the checkpoint the student
                # is compared with (the last) on the same stream: the logits and the labels.
                ck = tc[r["checkpoint"]]
                want = sum(columns(ck["features"], l) for l in ck["features"])
                want += columns(ck, "logits")
                summary = "/checkpoints/" + r["checkpoint"] == last
                want += summary
                assert (r["analyses"], r["datasets"], r["passes"]) == \
                    (1 + summary, 4 + summary, 1), r
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
            if r["checkpoint"] == first:
                # cka of every checkpoint: the other checkpoints' layers and logits are
                # read here too.
                others = [c for c in scks if c != first]
                pass0 += sum(columns(s, f"/checkpoints/{c}/features/{l}")
                             for c in others for l in s[f"/checkpoints/{c}/features"])
                pass0 += sum(columns(s, f"/checkpoints/{c}/logits") for c in others)
                want = (5, 12 + len(others) * (len(sf) + 1), 2)
            else:
                # No cka here: the teacher's layers are not read but for kl's "pen".
                pass0 -= sum(columns(t, f"{last}/features/{l}") for l in tf if l != "pen")
                want = (4, 12 - (len(tf) - 1), 2)
            assert (r["analyses"], r["datasets"], r["passes"]) == want, r
            assert r["values_read"] == n * (pass0 + pass1), (r, n, pass0, pass1)
    common = ("-t", T, "-s", S, "-c", "all", "-T", "4")
    for name, args in (("kl", ("kl",) + common), ("split", ("split",) + common),
                       ("dims", ("dims",) + common), ("summary", ("summary",) + common),
                       ("cka_s1_final", ("cka", T, S, "-c", "final"))):
        alone, shared = kt.run_json(*args), data(name)
        assert alone["results"], name
        assert alone["results"] == shared["results"], name
        assert alone["notes"] == shared["notes"], name


def test_report_at_100_classes_shows_the_top_classes():
    """C = 100: the class figures show the 20 classes of the strongest relations, not the
    whole matrix, and their captions say so; no values in the cells, every class label
    readable; the student's head shows the teacher's head's classes."""
    base = kt.tmpdir()
    t, s = os.path.join(base, "t.h5"), os.path.join(base, "s.h5")
    p = subprocess.run([os.environ.get("KDL_SYNTH", "kdl-synth"), "--n", "600", "--classes",
                        "100", "--teacher-widths", "16,32", "--student-widths", "8,16",
                        "--checkpoints", "1", t, s], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    out = os.path.join(base, "rep")
    st, _, err = kt.run("report", "-t", t, "-s", s, "-o", out, "--quiet", "--gnuplot", GNUPLOT)
    assert st == 0, err
    md = open(os.path.join(out, "index.md")).read()
    for name, what in (("classes_teacher_confusion", "confusion"),
                       ("classes_teacher_head", "head cosine")):
        cap = md[md.index(f"figures/{name}.png"):].split("\n\n")[1]
        assert f"Only the 20 of the 100 classes with the strongest {what} are shown" in cap, cap
        assert "every class is in data/split.json" in cap, cap
    cap = md[md.index("figures/classes_s1_head.png"):].split("\n\n")[1]
    assert "Only 20 of the 100 classes are shown: the same as in the teacher's" in cap, cap
    for name in ("classes_teacher_confusion", "classes_teacher_head", "classes_s1_head"):
        cells = [line for line in open(os.path.join(out, "data", name + ".dat"))
                 if not line.startswith("#")]
        assert len(cells) == 20 * 20, (name, len(cells))
        gp = open(os.path.join(out, "scripts", name + ".gp")).read()
        assert "with labels" not in gp
        tics = re.search(r"set ytics \((.*)\)", gp).group(1)
        assert tics.count(",") == 19, tics  # all 20 classes named
    shown = lambda name: re.search(r"set ytics \((.*)\)", open(
        os.path.join(out, "scripts", name + ".gp")).read()).group(1)
    assert shown("classes_s1_head") == shown("classes_teacher_head")
    # The whole matrices are in the data.
    doc = json.load(open(os.path.join(out, "data", "split.json")))
    assert len(kt.records(doc, "confusion_teacher")) == 100 * 100
    # The worst 20 classes by mean KL, worst first, from split_classes (every class there).
    rows = [r for r in kt.records(doc, "split_classes") if r["checkpoint"] == "final"]
    assert len(rows) == 100
    worst = sorted(rows, key=lambda r: (-r["kl"], r["class"]))[:20]
    dat = [line.split() for line in open(os.path.join(out, "data", "split_classes_s1.dat"))
           if not line.startswith("#")]
    assert [int(d[0].strip('"')) for d in dat] == [r["class"] for r in worst]
    assert [float(d[1]) for d in dat] == [float("%.10g" % r["kl"]) for r in worst]
    cap = md[md.index("figures/split_classes_s1.png"):].split("\n\n")[1]
    assert "The 20 of the 100 classes whose samples carry the largest mean KD loss" in cap, cap
    assert "computed by: kdlens split -t " in cap, cap


def test_group_of_three_seeds_has_error_bars():
    """--group NAME=S1,S2,S3 on three seeds of one student (kdl-synth's, its logits plus
    seeded noise): the summary shows summary_groups, kl_sources draws the group as one
    series of mean ± sd with error bars (the script's errorbars style, the sd column the
    numpy sd of the three runs' Pearson r) and says so in its caption."""
    import h5py
    import numpy as np
    base = kt.tmpdir()
    t, s = os.path.join(base, "t.h5"), os.path.join(base, "s.h5")
    p = subprocess.run([os.environ.get("KDL_SYNTH", "kdl-synth"), "--n", "600", "--classes",
                        "10", "--checkpoints", "2", "--no-gradients", t, s],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    seeds = []
    for seed in (1, 2, 3):
        q = os.path.join(base, f"seed{seed}.h5")
        shutil.copy(s, q)
        with h5py.File(q, "r+") as f:
            rng = np.random.default_rng(seed)
            for ck in f["checkpoints"]:
                z = f["checkpoints"][ck]["logits"]
                z[...] = z[...] + 0.5 * rng.standard_normal(z.shape).astype(z.dtype)
        seeds.append(q)
    out = os.path.join(base, "rep")
    st, _, err = kt.run("report", "-t", t, *sum((["-s", q] for q in seeds), []), "-o", out,
                        "--group", "seeds=" + ",".join(seeds), "--quiet", "--gnuplot", GNUPLOT)
    assert st == 0, err
    doc = json.load(open(os.path.join(out, "data", "summary.json")))
    g = [r for r in kt.records(doc, "summary_groups") if r["group"] == "seeds"]
    assert g and all(r["runs"] == 3 for r in g), g
    html = open(os.path.join(out, "index.html")).read()
    assert 'id="tab-summary_groups"' in html
    gp = open(os.path.join(out, "scripts", "kl_sources.gp")).read()
    assert "set style histogram errorbars" in gp and "using 2:3 " in gp, gp
    assert "'seeds (n = 3)'" in gp, gp
    kl = [json.load(open(os.path.join(out, "data", "kl.json")))]
    r = {(x["student"], x["approximation"]): x.get("pearson") for x in kt.records(kl[0], "kl")
         if x["checkpoint"] == "final"}
    r2 = {(x["student"], x["checkpoint"]): x["mean"] for x in kt.records(kl[0], "kl")
          if x["approximation"] == "kl"}
    dat = [line.split() for line in open(os.path.join(out, "data", "kl_sources.dat"))
           if not line.startswith("#")]
    for d in dat:
        x = [r[(q, d[0].strip('"'))] for q in seeds]
        if any(v is None for v in x):
            assert d[1] == "NaN", d
            continue
        assert abs(float(d[1]) - np.mean(x)) <= 1e-9 * abs(np.mean(x)) + 1e-12, (d, x)
        assert abs(float(d[2]) - np.std(x, ddof=1)) <= 1e-8 * np.std(x, ddof=1) + 1e-12, (d, x)
    md = open(os.path.join(out, "index.md")).read()
    cap = md[md.index("figures/kl_sources.png"):].split("\n\n")[1]
    assert "the mean over its n runs with an error bar of one standard deviation" in cap, cap
    # One curve figure for the group (named after its first run), mean ± sd per checkpoint.
    assert not os.path.exists(os.path.join(out, "figures", "kl_curves_s2.png"))
    gp = open(os.path.join(out, "scripts", "kl_curves_s1.gp")).read()
    assert "using 1:3:13 with yerrorlines" in gp, gp
    dat = [line.split() for line in open(os.path.join(out, "data", "kl_curves_s1.dat"))
           if not line.startswith("#")]
    for d in dat:
        x = [r2[(q, d[1].strip('"'))] for q in seeds]
        assert abs(float(d[2]) - np.mean(x)) <= 1e-9 * np.mean(x), (d, x)
        assert abs(float(d[12]) - np.std(x, ddof=1)) <= 1e-8 * np.std(x, ddof=1) + 1e-12, (d, x)
    cap = md[md.index("figures/kl_curves_s1.png"):].split("\n\n")[1]
    assert "over the training of group seeds (n = 3)" in cap, cap


def start_slow_report(base, out):
    """kdlens report into @out with a gnuplot that hangs, so that it is surely killed
    mid-way; in a session of its own (os.killpg)."""
    slow = os.path.join(base, "slow-gnuplot")
    with open(slow, "w") as fh:
        fh.write(f"#!/bin/sh\nsleep 30\nexec {GNUPLOT} \"$@\"\n")
    os.chmod(slow, 0o755)
    return subprocess.Popen([kt.KDLENS, "report", "-t", T, "-s", S, "-o", out, "--quiet",
                             "--gnuplot", slow], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def test_killed_report_leaves_previous_intact():
    base = kt.tmpdir()
    out = os.path.join(base, "rep")
    st, _, err = make_report(out)
    assert st == 0, err
    before = tree_digest(out)
    p = start_slow_report(base, out)
    time.sleep(1.0)
    assert p.poll() is None, "the report finished before it could be interrupted"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert tree_digest(out) == before, "the interrupted run changed the previous report"


def test_killed_report_leaves_a_temporary_the_next_run_removes():
    """kill -9 leaves DIR.tmp-<pid>-XXXXXX (stamped); the next run into DIR removes it
    (issue #22)."""
    base = kt.tmpdir()
    out = os.path.join(base, "rep")
    p = start_slow_report(base, out)
    prefix = f"rep.tmp-{p.pid}-"
    for _ in range(1200):  # until the temporary exists and is stamped as kdlens's
        left = [f for f in os.listdir(base) if f.startswith(prefix)]
        if left and os.path.exists(os.path.join(base, left[0], ".kdlens-report")):
            break
        time.sleep(0.05)
    assert left and p.poll() is None, (os.listdir(base), p.poll())
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert os.path.isdir(os.path.join(base, left[0])) and not os.path.exists(out)
    assert len(left[0]) == len(prefix) + 6
    st, _, err = make_report(out)
    assert st == 0, err
    assert sorted(os.listdir(base)) == ["rep", "slow-gnuplot"], os.listdir(base)


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


# Names a dump may hold: spaces, non-ASCII letters (a Cyrillic o in the second), '%',
# quotes, and attempts at gnuplot and HTML injection.
ODD_CKS = ["init 0", "épоque", "50%", "a\"b'c", "<img src=x onerror=alert(1)>"]
ODD_LAYERS = ["init 0", "épоque", "50%", "a\"b'c", "q'.system('touch PWNED').'"]


def write_odd_dump(path, role, seed, width):
    import h5py
    import numpy as np
    rng = np.random.default_rng(seed)
    n, c = 80, 4
    y = np.arange(n) % c
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = role
        f.attrs["model"] = role + " 50% é"
        f["labels"] = y
        for step, ck in enumerate(ODD_CKS):
            g = f.create_group("checkpoints/" + ck)
            g.attrs["step"] = np.int64(step)
            for depth, name in enumerate(ODD_LAYERS):
                x = rng.standard_normal((n, width)) + (depth + 1) * np.eye(c, width)[y]
                g.create_dataset("features/" + name, data=x).attrs["depth"] = depth
            w = rng.standard_normal((c, width))
            g["logits"] = x @ w.T
            g["head/weight"] = w
            g["head/bias"] = np.zeros(c)
            g["head"].attrs["input"] = ODD_LAYERS[-1]


def test_any_name_a_dump_may_hold():
    """Checkpoint and layer names with spaces, non-ASCII letters, '%' and quotes work in
    every command and in the report (issue #22): names round-trip exactly through the
    JSON, every figure renders, labels are escaped, nothing is injected."""
    import html
    base = kt.tmpdir()
    t, s = os.path.join(base, "t.h5"), os.path.join(base, "s.h5")
    write_odd_dump(t, "teacher", 1, 6)
    write_odd_dump(s, "student", 2, 5)
    doc = kt.run_json("kl", "-t", t, "-s", s, "-c", "all")
    assert [r["checkpoint"] for r in kt.records(doc, "kl_features")] == ODD_CKS
    doc = kt.run_json("cka", t, s, "-c", "all")
    pairs = kt.records(doc, "cka_pairs")
    assert sorted({r["checkpoint"] for r in pairs}) == sorted(ODD_CKS)
    assert {r["layer_a"] for r in pairs} == set(ODD_LAYERS) | {"logits"}
    doc = kt.run_json("layers", "-t", t, "-s", s, "-c", "all")
    assert {r["layer"] for r in kt.records(doc, "layers")} == set(ODD_LAYERS)
    assert {r["checkpoint"] for r in kt.records(doc, "layers")} == set(ODD_CKS)
    out = os.path.join(base, "rep")
    p = subprocess.run([kt.KDLENS, "report", "-t", t, "-s", s, "-o", out, "--quiet",
                        "--gnuplot", GNUPLOT], capture_output=True, text=True, cwd=base)
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(os.path.join(base, "PWNED"))
    assert not os.path.exists(os.path.join(out, "PWNED"))
    page = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    figs = re.findall(r'<img src="figures/([^"]+)\.png"', page)
    assert len([f for f in figs if f.startswith("cka_s1_")]) == len(ODD_CKS), figs
    for name in figs:
        png = os.path.join(out, "figures", name + ".png")
        assert open(png, "rb").read(4) == b"\x89PNG", png
    for name in ODD_CKS + ODD_LAYERS:
        assert html.escape(name, quote=True).replace("&#x27;", "'") in page, name
    assert "<img src=x" not in page
    for ck in ODD_CKS:
        cka = [f for f in os.listdir(os.path.join(out, "data")) if f.startswith("cka_s1_")
               and f.endswith(".json") and json.load(open(os.path.join(out, "data", f)))
               ["results"][0]["checkpoint_b"] == ck]
        assert len(cka) == 1, (ck, cka)


EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "example")


def summary_cells(html):
    """The rows of the summary table at the top of index.html: lists of (text, href)."""
    table = re.search(r'<table class="summary">(.*?)</table>', html, re.S).group(1)
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]:
        cells = []
        for td in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S):
            m = re.match(r'<a href="#([^"]+)">(.*)</a>$', td)
            cells.append((m.group(2), m.group(1)) if m else (td, None))
        rows.append(cells)
    return rows


def test_summary_at_the_top_equals_kdlens_summary_and_links_resolve():
    """The bundled example: the summary table at the top shows kdlens summary's numbers
    (data/summary.json is its document), every number links to an anchor of the page, and
    the table of contents lists every section and figure."""
    teacher = os.path.join(EXAMPLE, "teacher.h5")
    students = [os.path.join(EXAMPLE, f"student_{s}.h5") for s in ("kd", "ce", "narrow")]
    out = os.path.join(kt.tmpdir(), "example")
    args = ["-t", teacher] + [a for s in students for a in ("-s", s)]
    st, _, err = kt.run("report", *args, "-o", out, "--quiet", "--gnuplot", GNUPLOT)
    assert st == 0, err
    html = open(os.path.join(out, "index.html")).read()
    md = open(os.path.join(out, "index.md")).read()
    alone = kt.run_json("summary", *args, "-c", "all", "-T", "4")
    shared = json.load(open(os.path.join(out, "data", "summary.json")))
    assert alone["results"] == shared["results"]
    assert "kdlens summary -t " in html and os.path.getsize(os.path.join(out, "tables",
                                                                           "summary.csv")) > 100
    want = kt.records(alone, "summary")
    rows = summary_cells(html)
    assert len(rows) == len(want) == 1 + 3 * 4, (len(rows), len(want))
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    for cells, w in zip(rows, want):
        assert cells[1][0] == w["checkpoint"], (cells, w)
        assert (cells[0][0] == "teacher") == (w["role"] == "teacher"), (cells, w)
        for j, key in enumerate(("accuracy", "fidelity", "ece", "classwise_ece", "kl")):
            assert cells[2 + j][0] == fmt(w.get(key)), (key, cells, w)
    # The other analyses' numbers: the best source by Pearson r in the kl table, the verdict.
    kl = kt.records(json.load(open(os.path.join(out, "data", "kl.json"))), "kl")
    verdict = kt.records(json.load(open(os.path.join(out, "data", "dims.json"))), "verdict")
    for cells, w in zip(rows[1:], want[1:]):
        cand = [r for r in kl if r["student"] == w["model"] and r["checkpoint"] ==
                w["checkpoint"] and r["approximation"] != "kl" and r.get("pearson") is not None]
        best = max(cand, key=lambda r: r["pearson"])
        assert cells[7][0] == f"{best['approximation']} (r = {best['pearson']:.3f})", cells
        (v,) = [r for r in verdict if r["checkpoint"] == w["checkpoint"] and
                w["model"].endswith(r["model"] + ".h5")]
        assert cells[8][0] == v["verdict"], (cells, v)
    rec = kt.records(json.load(open(os.path.join(out, "data", "layers.json"))),
                     "layers_recommended")
    assert rows[0][9][0] == ", ".join(r["layer"] for r in rec), (rows[0], rec)
    # Every anchor linked to exists, in both pages.
    ids = set(re.findall(r'\bid="([^"]+)"', html))
    hrefs = set(re.findall(r'href="#([^"]+)"', html))
    assert hrefs and hrefs <= ids, hrefs - ids
    assert {c[1] for r in rows for c in r if c[1]} >= {"tab-summary", "sec-knowledge-sources",
                                                       "sec-feature-dimensions",
                                                       "fig-kl_sources", "sec-teacher-layers"}
    md_ids = set(re.findall(r'<a id="([^"]+)"></a>', md))
    md_hrefs = set(re.findall(r"\]\(#([^)]+)\)", md))
    assert md_hrefs and md_hrefs <= md_ids, md_hrefs - md_ids
    # The table of contents lists every section and every figure, in order.
    toc = re.search(r'<nav id="contents">(.*?)</nav>', html, re.S).group(1)
    sections = re.findall(r'<section id="([^"]+)">', html)
    figures = re.findall(r'<figure id="([^"]+)">', html)
    assert sections[0] == "sec-summary" and len(figures) > 20, (sections, len(figures))
    listed = re.findall(r'href="#([^"]+)"', toc)
    assert listed == [a for a in re.findall(r'<(?:section|figure) id="([^"]+)">', html)], listed
    assert html.index('<table class="summary">') < html.index('<nav id="contents">')


if __name__ == "__main__":
    if not GNUPLOT:
        print("gnuplot not found: skipped")
        sys.exit(77)
    kt.main(globals())
