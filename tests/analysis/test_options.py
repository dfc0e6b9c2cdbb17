#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Every option a verb accepts changes its result, or is refused with exit status 2.

One test per verb runs it with and without each option on small dumps made here
(spatial [N, C, H, W] features, so that --spatial matters; NaN rows, so that
--nonfinite matters; three checkpoints, so that -c and --teacher-checkpoint
matter) and checks the output changes as the option says, or that the verb
refuses it.  --block-rows cannot change a number: the results stay equal (the
report's passes table counts the blocks) and 0 is refused.  For report the
documents in DIR/data are compared; for demo, KDL_EXAMPLE_DIR points at the
dumps.
"""
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

N, C = 120, 5
CKS = ("c0", "c1", "c2")
GNUPLOT = os.environ.get("KDL_GNUPLOT", "")
DIR = kt.tmpdir()


def write_dump(path, role, seed, wide, nan=(), layers=("conv", "pen"), cks=CKS):
    """A dump whose head input "pen" is [N, wide, 2, 2] (the head reads its average) and
    "conv" [N, 3, 2, 2]; @nan: (dataset, row) pairs set to NaN at every checkpoint."""
    rng = np.random.default_rng(seed)
    y = (np.arange(N) % C).astype(np.int64)
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = role
        f.attrs["model"] = role
        f["labels"] = y
        f["sample_ids"] = np.arange(N, dtype=np.int64) + 100
        for step, ck in enumerate(cks):
            g = f.create_group("checkpoints/" + ck)
            g.attrs["step"] = np.int64(10 * step)
            feats = {}
            for depth, name in enumerate(layers):
                w = wide if name == "pen" else 3
                x = rng.standard_normal((N, w, 2, 2)) * rng.uniform(0.5, 2.0, (1, 1, 2, 2))
                x += (1 + step) * np.eye(C, w)[y][:, :, None, None]
                feats[name] = x
                g.create_dataset("features/" + name, data=x).attrs["depth"] = depth
            w = rng.standard_normal((C, wide))
            b = rng.standard_normal(C)
            z = feats["pen"].mean((2, 3)) @ w.T + b
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            gz = p - np.eye(C)[y]
            g["logits"] = z
            g["gradients/logits"] = gz
            g["gradients/features/pen"] = np.repeat(np.repeat(
                (gz @ w)[:, :, None, None] / 4, 2, 2), 2, 3)
            h = g.create_group("head")
            h["weight"] = w
            h["bias"] = b
            h.attrs["input"] = "pen"
            for ds, row in nan:
                g[ds][row, ...] = np.nan


T, S = os.path.join(DIR, "t.h5"), os.path.join(DIR, "s.h5")
TN, SN = os.path.join(DIR, "tn.h5"), os.path.join(DIR, "sn.h5")
write_dump(T, "teacher", 1, 6)
write_dump(S, "student", 2, 4)
write_dump(TN, "teacher", 1, 6, nan=(("features/conv", 11),))
write_dump(SN, "student", 2, 4, nan=(("logits", 7), ("features/conv", 7)))


def doc(*args):
    """The results and notes of kdlens ARGS --format json."""
    d = kt.run_json(*args)
    return d["results"], d["notes"]


def rows(results, table):
    return [r for r in results if r["table"] == table]


def differs(base, extra):
    """kdlens BASE EXTRA gives other results or notes than kdlens BASE; returns both."""
    a, b = doc(*base), doc(*base, *extra)
    assert a != b, f"{' '.join(extra)} changed nothing in kdlens {' '.join(base)}"
    return a, b


def refused(args, needle):
    st, out, err = kt.run(*args)
    assert st == 2 and out == "" and needle in err, (args, st, out, err)


def close(a, b, tol=1e-6, where="results"):
    """@a and @b are the same JSON up to rounding: other blocks add in another order.  The
    tolerance is absolute too, for dims' GCV ridge penalty on a flat curve near 0."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), (where, a, b)
        assert abs(a - b) <= tol * (1 + max(abs(a), abs(b))) or (a != a and b != b), \
            (where, a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), (where, a.keys(), b.keys())
        for k in a:
            close(a[k], b[k], tol, f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), (where, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, tol, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def block_rows_change_nothing(base):
    close(doc(*base), doc(*base, "--block-rows", "7"))
    refused(list(base) + ["--block-rows", "0"], "--block-rows: expected a whole number")


def nonfinite_skip(base):
    """Without --nonfinite skip a NaN is an error (exit 1, one line); with it, the samples
    go."""
    st, _, err = kt.run(*base)
    assert st == 1, (base, st, err)
    kt.one_line_error(err, "NaN")
    r = doc(*base, "--nonfinite", "skip")
    assert r[0], base
    return r


def pairs_and_temperatures(base, table):
    """-c, --teacher-checkpoint and -T choose what the rows of @table are about."""
    for opt, key, want in ((("-c", "c1"), "checkpoint", {"c1"}),
                           (("--teacher-checkpoint", "c0"), "teacher_checkpoint", {"c0"}),
                           (("-T", "1,2"), "tau", {1, 2})):
        r, _ = differs(base, opt)[1]
        assert {x[key] for x in rows(r, table)} == want, (base, opt)


def test_kl_options():
    base = ("kl", "-t", T, "-s", S)
    pairs_and_temperatures(base, "kl")
    (a, _), (b, notes) = differs(base, ("--spatial", "max"))
    feat = lambda rs: [x["mean"] for x in rows(rs, "kl") if x["approximation"] == "feature_l2"]
    assert feat(a) != feat(b)
    (a, _), (b, _) = differs(base, ("--spearman-samples", "10"))
    assert [x["spearman"] for x in rows(a, "kl")] != [x["spearman"] for x in rows(b, "kl")]
    differs(base + ("--spearman-samples", "10"), ("--seed", "7"))
    r, _ = nonfinite_skip(("kl", "-t", T, "-s", SN))
    assert {x["samples"] for x in rows(r, "kl")} == {N - 1}, rows(r, "kl")[:1]
    out = os.path.join(DIR, "kl-per-sample.h5")
    doc(*base, "--per-sample", out)
    with h5py.File(out) as f:
        assert f["students/0/checkpoints/c2/kl"].shape == (N, 1)
    block_rows_change_nothing(base)


def test_split_options():
    base = ("split", "-t", T, "-s", S)
    pairs_and_temperatures(base, "split")
    for opt in (("--lambda", "0.5"), ("--omega-max", "1.5"), ("--w-eps", "0.5")):
        differs(base, opt)
    differs(base, ("--bins", "10"))  # json: the histograms
    refused(base + ("--bins", "10", "-f", "md"), "--bins: the histograms are in the json")
    refused(base + ("--spatial", "max"), "--spatial: split reads only logits")
    r, _ = nonfinite_skip(("split", "-t", T, "-s", SN))
    assert {(x["samples"], x["skipped"]) for x in rows(r, "split")} == {(N - 1, 1)}
    out = os.path.join(DIR, "split-per-sample.h5")
    doc(*base, "--per-sample", out)
    with h5py.File(out) as f:
        assert f["students/0/checkpoints/c2/kl"].shape == (N, 1), list(f)
    block_rows_change_nothing(base)


def test_dims_options():
    base = ("dims", "-t", T, "-s", S)
    r, _ = differs(base, ("-c", "c1"))[1]
    assert {x["checkpoint"] for x in rows(r, "verdict")} == {"c1"}
    r, _ = differs(base, ("--teacher-checkpoint", "c0"))[1]
    assert "c0" in {x["checkpoint"] for x in rows(r, "dims") if x["role"] == "teacher"}
    differs(base, ("-T", "1"))
    (a, _), (b, _) = differs(base, ("--spatial", "max"))
    assert rows(a, "dims") != rows(b, "dims")
    r, _ = differs(base, ("--layer", "conv"))[1]
    assert {x["layer"] for x in rows(r, "dims") if x["kind"] == "features"} == {"conv"}
    for opt in (("--tolerance", "0.5"), ("--rank-rtol", "0.1"), ("--lambda", "5")):
        differs(base, opt)
    table = lambda *extra: kt.run(*base, *extra, check=0)[1]
    assert "Covariance spectra" not in table() and "Covariance spectra" in table("--curves")
    refused(base + ("--curves", "-f", "json"), "--curves: only the table format")
    refused(base + ("--per-sample", "x.h5"), "--per-sample: dims has no per-sample")
    nonfinite_skip(("dims", "-t", T, "-s", SN))
    block_rows_change_nothing(base)


def test_cka_options():
    base = ("cka", T, S)
    r, _ = differs(base, ("-c", "c1"))[1]
    assert {x["checkpoint"] for x in rows(r, "cka")} == {"c1"}
    differs(base, ("--spatial", "max"))
    for opt in (("--kernel", "rbf"), ("--estimator", "debiased"), ("--precision", "mixed"),
                ("--subsample", "50"), ("--seed", "3")):
        differs(base, opt)
    r, _ = differs(base, ("--bootstrap", "20"))[1]
    differs(base + ("--bootstrap", "20"), ("--seed", "3"))
    differs(base + ("--kernel", "rbf"), ("--theta", "2"))
    differs(base + ("--estimator", "minibatch", "--batch", "16"), ("--batch", "32"))
    refused(base + ("--theta", "2"), "--theta: the bandwidth of the RBF kernel needs")
    refused(base + ("--batch", "16"), "--batch: the minibatch size needs")
    refused(base + ("-T", "2"), "cka has no temperature")
    refused(base + ("--teacher-checkpoint", "c0"), "pairs checkpoints by name")
    refused(base + ("--block-rows", "7"), "--block-rows: cka sizes its blocks")
    refused(base + ("--per-sample", "x.h5"), "the dumps are arguments")
    nonfinite_skip(("cka", TN, SN))


def test_layers_options():
    base = ("layers", "-t", T)
    r, _ = differs(base, ("-c", "c1"))[1]
    assert {x["checkpoint"] for x in rows(r, "layers")} == {"c1"}
    differs(base, ("--spatial", "max"))
    (a, _), (b, _) = differs(base, ("-k", "2"))
    assert len(rows(a, "layers_recommended")) == 1 and len(rows(b, "layers_recommended")) == 2
    for opt in (("--subsample", "40"), ("--per-class", "10"), ("--variant", "per-class")):
        differs(base, opt)
    differs(base + ("--subsample", "40"), ("--seed", "5"))
    r, _ = differs(base, ("-s", S))[1]
    assert rows(r, "layers_cka")
    refused(base + ("-T", "2"), "layers has no temperature")
    refused(base + ("--teacher-checkpoint", "c0"), "pairs checkpoints by name")
    refused(base + ("--block-rows", "7"), "--block-rows: layers sizes its blocks")
    refused(base + ("--per-sample", "x.h5"), "--per-sample")
    nonfinite_skip(("layers", "-t", TN))


def test_layers_and_report_share_the_default_k():
    """k = min(4, ceil(n/2)) of the teacher's n feature layers, in layers and the report."""
    for n, k in ((2, 1), (5, 3), (9, 4)):
        t = os.path.join(DIR, f"t{n}.h5")
        s = os.path.join(DIR, f"s{n}.h5")
        names = ["pen"] + [f"l{i}" for i in range(n - 1)]
        write_dump(t, "teacher", 3, 6, layers=names, cks=("c0",))
        write_dump(s, "student", 4, 4, cks=("c0",))
        r, _ = doc("layers", "-t", t)
        assert len(rows(r, "layers")) == n and len(rows(r, "layers_recommended")) == k, (n, k)
        if not GNUPLOT or n != 5:
            continue
        out = os.path.join(DIR, f"rep-k{n}")
        kt.run("report", "-t", t, "-s", s, "-o", out, "--quiet", "--gnuplot", GNUPLOT, check=0)
        got = json.load(open(os.path.join(out, "data", "layers.json")))["results"]
        assert len(rows(got, "layers_recommended")) == k
        assert f"The top k = {k} of its {n} feature layers" in open(
            os.path.join(out, "index.html")).read()


def test_inspect_options():
    st, _, err = kt.run("inspect", SN)
    assert st == 1 and "NaN" in err, err
    st, _, _ = kt.run("inspect", "--quick", SN)
    assert st == 0
    assert kt.run("inspect", "-f", "csv", "--table", "files", S, check=0)[1] != \
        kt.run("inspect", "--table", "files", S, check=0)[1]


def test_every_format_is_taken():
    for base in (("kl", "-t", T, "-s", S), ("split", "-t", T, "-s", S),
                 ("dims", "-t", T, "-s", S), ("cka", T, S), ("layers", "-t", T)):
        outs = {f: kt.run(*base, "-f", f, check=0)[1] for f in ("table", "md", "tex")}
        first = kt.run_json(*base)["results"][0]["table"]  # CSV on stdout is one table
        outs["csv"] = kt.run(*base, "-f", "csv", "--table", first, check=0)[1]
        assert len(set(outs.values())) == 4, base
        assert "\\toprule" in outs["tex"] and outs["md"].startswith("### "), base


# ---- report ------------------------------------------------------------------------------

def report(name, *extra, t=T, s=S, check=0):
    out = os.path.join(DIR, name)
    st, so, se = kt.run("report", "-t", t, "-s", s, "-o", out, "--gnuplot", GNUPLOT, *extra)
    assert check is None or st == check, (extra, st, se)
    return out, st, so, se


def data(out, name):
    return json.load(open(os.path.join(out, "data", name + ".json")))


def results(out, name):
    return data(out, name)["results"]


def test_report_options():
    if not GNUPLOT:
        return
    base, _, said, _ = report("rep-base")
    assert "report written to" in said
    assert report("rep-quiet", "--quiet")[2] == ""
    assert {x["tau"] for x in rows(results(base, "kl"), "kl")} == {4}
    out = report("rep-T", "-T", "2", "--quiet")[0]
    assert {x["tau"] for x in rows(results(out, "kl"), "kl")} == {2}
    assert {x["tau"] for x in rows(results(out, "split"), "split")} == {2}
    out = report("rep-c", "-c", "c1", "--quiet")[0]
    assert sorted(f for f in os.listdir(os.path.join(out, "data")) if f.startswith("cka")) \
        == ["cka_s1_c1.dat", "cka_s1_c1.json"]
    for name in ("kl", "split"):
        assert {x["checkpoint"] for x in rows(results(out, name), name)} == {"c1"}
    assert {x["checkpoint"] for x in rows(results(out, "passes"), "passes")} == set(CKS)
    out = report("rep-tc", "--teacher-checkpoint", "c0", "--quiet")[0]
    assert {x["teacher_checkpoint"] for x in rows(results(out, "kl"), "kl")} == {"c0"}
    assert {x["checkpoint"] for x in rows(results(out, "layers"), "layers")} == {"c0"}
    assert {x["checkpoint"] for x in rows(results(out, "cka_s1_c2"), "cka")} == {"c0"}
    assert "compared with the teacher's checkpoint c0" in open(
        os.path.join(out, "index.html")).read()
    out = report("rep-spatial", "--spatial", "max", "--quiet")[0]
    for name in ("kl", "dims", "layers", "cka_s1_c2"):
        assert results(out, name) != results(base, name), name
    assert any("'max'" in n for n in data(out, "layers")["notes"])
    out = report("rep-k", "-k", "2", "--quiet")[0]
    assert len(rows(results(base, "layers"), "layers_recommended")) == 1
    assert len(rows(results(out, "layers"), "layers_recommended")) == 2
    out = report("rep-blocks", "--block-rows", "7", "--quiet")[0]
    for name in ("kl", "split", "dims", "layers", "cka_s1_c0"):
        close(results(out, name), results(base, name), where=name)
    passes = lambda o: rows(results(o, "passes"), "passes")
    assert {p["blocks"] for p in passes(out)} == {math.ceil(N / 7)}
    assert {p["blocks"] for p in passes(base)} == {1}
    assert report("rep-gnuplot", "--gnuplot", "/bin/false", check=1)[1] == 1
    refused(("report", "-t", T, "-s", S, "-o", "x", "--per-sample", "y.h5"),
            "report has no per-sample")
    refused(("report", "-t", T, "-s", S, "-o", "x", "-f", "json"), "report writes every format")


def test_report_nonfinite_and_options_match_the_commands():
    """With the common options, the report's kl and split are the commands' own; with
    --nonfinite skip a sample is dropped from every analysis of the stream that reads a
    NaN of it (the passes table counts them)."""
    if not GNUPLOT:
        return
    st, _, err = report("rep-nan", t=TN, s=SN, check=1)[1:]
    kt.one_line_error(err, "NaN")
    out = report("rep-nan-skip", "--nonfinite", "skip", "--quiet", t=TN, s=SN)[0]
    skipped = {p["model"]: p["skipped"] for p in rows(results(out, "passes"), "passes")}
    assert skipped == {TN: 1, SN: 2}, skipped  # the teacher's row 11, the student's row 7
    assert {x["samples"] for x in rows(results(out, "kl"), "kl")} == {N - 2}
    assert any("--nonfinite skip" in n for n in data(out, "passes")["notes"])
    opts = ("--nonfinite", "skip", "-T", "2", "-c", "c1", "--teacher-checkpoint", "c0")
    out = report("rep-opts", *opts, "--spatial", "max", "--quiet", s=SN)[0]
    for verb, extra in (("kl", ("--spatial", "max")), ("split", ())):
        alone = kt.run_json(verb, "-t", T, "-s", SN, *opts, *extra)
        assert alone["results"] == results(out, verb), verb
        assert alone["notes"] == data(out, verb)["notes"], verb


def test_demo_options():
    if not GNUPLOT:
        return
    ex = os.path.join(DIR, "example")
    os.makedirs(ex, exist_ok=True)
    for src, dst in ((T, "teacher.h5"), (S, "student_a.h5")):
        if not os.path.exists(os.path.join(ex, dst)):
            os.symlink(src, os.path.join(ex, dst))
    env = dict(os.environ, KDL_EXAMPLE_DIR=ex)
    demo = lambda *a: subprocess.run([kt.KDLENS, "demo", "--gnuplot", GNUPLOT, *a], env=env,
                                     capture_output=True, text=True, timeout=600)
    out = os.path.join(DIR, "demo")
    p = demo("-o", out)
    assert p.returncode == 0 and "report written to " + out in p.stdout, p.stderr
    assert demo("-o", out, "--quiet").stdout == ""
    junk = os.path.join(DIR, "demo-junk")
    os.makedirs(junk)
    open(os.path.join(junk, "keep"), "w").close()
    p = demo("-o", junk, "--quiet")
    assert p.returncode == 2 and os.path.exists(os.path.join(junk, "keep")), p.stderr
    assert demo("-o", junk, "--quiet", "--force").returncode == 0
    assert not os.path.exists(os.path.join(junk, "keep"))
    assert demo("-o", os.path.join(DIR, "demo2"), "--gnuplot", "/bin/false").returncode == 1


if __name__ == "__main__":
    kt.main(globals())
