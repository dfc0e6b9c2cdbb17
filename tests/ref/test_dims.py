#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens dims against numpy float64 on dumps written here with h5py.

Planted structure: a teacher layer of exact rank 5 plus small noise; teacher
logits that span all C-1 centred directions; a student narrower than C-1
(stored float32, in another sample order, joined on /sample_ids) and a wide
one.  References: covariance spectra (numpy.linalg.eigvalsh), the residual
curve from the singular values of the doubly centred teacher logits, ridge
by the closed form on the centred data, GCV minimised on a numpy grid, the
rank of W^T F W formed explicitly for sampled rows.
"""
import atexit
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

N, C = 400, 10
D_T, R_PLANT, D_PLANT = 24, 5, 20
WIDTHS = {"narrow": 4, "wide": 16}
RTOL_RANK = 1e-6
TAU = 4.0

TMP = kt.tmpdir()
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
RNG = np.random.default_rng(20261122)


def write(path, role, model, cks, order=None):
    """cks: {name: dict(step, layers={name: (array, depth, dtype)}, w, b, logits)}"""
    n = next(iter(cks.values()))["logits"].shape[0]
    order = np.arange(n) if order is None else order
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = role
        f.attrs["model"] = model
        f.create_dataset("labels", data=(np.arange(n) % C).astype(np.int32)[order])
        f.create_dataset("sample_ids", data=(5000 + np.arange(n)).astype(np.int64)[order])
        for name, ck in cks.items():
            g = f.create_group("checkpoints/" + name)
            g.attrs["step"] = np.int64(ck["step"])
            for lname, (arr, depth, dtype) in ck["layers"].items():
                d = g.create_dataset("features/" + lname, data=arr[order].astype(dtype))
                d.attrs["depth"] = depth
            g.create_dataset("logits", data=ck["logits"][order])
            if "w" in ck:
                g.create_dataset("head/weight", data=ck["w"])
                g.create_dataset("head/bias", data=ck["b"])
                g["head"].attrs["input"] = ck["head_input"]


def build():
    data = {}
    tck = {}
    for step, name in enumerate(["early", "final"]):
        # Teacher penultimate features of rank 12 (>= C-1) with a large offset.
        pen = RNG.standard_normal((N, 12)) @ RNG.standard_normal((12, D_T)) + 3.0
        planted = (RNG.standard_normal((N, R_PLANT)) @ RNG.standard_normal((R_PLANT, D_PLANT))
                   + 1e-4 * RNG.standard_normal((N, D_PLANT)))
        conv = RNG.standard_normal((N, 6, 3, 3)).astype(np.float32)
        w = RNG.standard_normal((C, D_T))
        b = RNG.standard_normal(C)
        z = pen @ w.T + b
        tck[name] = dict(step=100 * step, w=w, b=b, logits=z, head_input="pen",
                         layers={"conv": (conv, 0, np.float32), "planted": (planted, 1, np.float64),
                                 "pen": (pen, 2, np.float64)})
        data[("teacher", name)] = dict(pen=pen, planted=planted,
                                       conv=conv.astype(np.float64).mean(axis=(2, 3)), z=z, w=w)
    write(os.path.join(TMP, "teacher.h5"), "teacher", "T", tck)

    for sname, width in WIDTHS.items():
        sck = {}
        for step, name in enumerate(["early", "final"]):
            tpen = data[("teacher", name)]["pen"]
            h = np.tanh(tpen @ RNG.standard_normal((D_T, width)) / 5.0) \
                + 0.05 * RNG.standard_normal((N, width))
            h32 = h.astype(np.float32)
            w = RNG.standard_normal((C, width))
            b = RNG.standard_normal(C)
            z = h32.astype(np.float64) @ w.T + b
            sck[name] = dict(step=100 * step, w=w, b=b, logits=z, head_input="pen",
                             layers={"pen": (h32, 0, np.float32)})
            data[(sname, name)] = dict(pen=h32.astype(np.float64), z=z, w=w)
        order = np.random.default_rng(len(sname)).permutation(N)
        write(os.path.join(TMP, sname + ".h5"), "student", sname, sck, order)
    return data


DATA = build()
T, NARROW, WIDE = (os.path.join(TMP, n + ".h5") for n in ("teacher", "narrow", "wide"))
# Each student checkpoint against the teacher checkpoint of the same name, so
# that every teacher checkpoint has partners to check.
DOC = kt.run_json("dims", "-t", T, "-s", NARROW, "-s", WIDE, "--checkpoint", "all",
                  "--teacher-checkpoint", "same")


def rows(table, **match):
    return [r for r in kt.records(DOC, table) if all(r.get(k) == v for k, v in match.items())]


def one(table, **match):
    r = rows(table, **match)
    assert len(r) == 1, f"{table} {match}: {len(r)} rows"
    return r[0]


def spectrum(x):
    return np.maximum(np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1], 0)


def centred_logits(z):
    zc = z - z.mean(axis=1, keepdims=True)
    return zc - zc.mean(axis=0)


def summary(lam):
    p = lam / lam.sum()
    nz = p[p > 0]
    cum = np.cumsum(lam) / lam.sum()
    return dict(numerical_rank=int(np.sum(lam > RTOL_RANK * lam[0])),
                effective_rank=float(np.exp(-np.sum(nz * np.log(nz)))),
                participation_ratio=float(lam.sum() ** 2 / np.sum(lam ** 2)),
                dims_90=int(np.argmax(cum >= 0.90) + 1), dims_95=int(np.argmax(cum >= 0.95) + 1),
                dims_99=int(np.argmax(cum >= 0.99) + 1), total_variance=float(lam.sum()))


def ridge(x, y, lam):
    xc = x - x.mean(axis=0)
    yc = centred_logits(y)
    b = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ yc)
    rss = np.sum((yc - xc @ b) ** 2)
    sv = np.linalg.svd(xc, compute_uv=False) ** 2
    df = np.sum(sv / (sv + lam))
    n = x.shape[0]
    gcv = rss / n / (1 - (1 + df) / n) ** 2
    return 1 - rss / np.sum(yc ** 2), gcv, df


def test_planted_rank_found():
    r = one("dims", model="T", checkpoint="final", layer="planted")
    assert r["numerical_rank"] == R_PLANT, r
    assert r["dims_95"] <= R_PLANT and r["dims_99"] <= R_PLANT, r
    assert r["width"] == D_PLANT and r["samples"] == N


def test_spectra_and_summaries_match_numpy():
    for (model, ck), d in DATA.items():
        for layer in ("conv", "planted", "pen"):
            if layer not in d:
                continue
            lam = spectrum(d[layer])
            got = [s["eigenvalue"] for s in rows("spectrum", model="T" if model == "teacher"
                                                 else model, checkpoint=ck, layer=layer)]
            assert len(got) == len(lam), (model, ck, layer, len(got))
            for a, b in zip(got, lam):
                kt.assert_close(a, b, rtol=1e-9, atol=1e-11 * lam[0], what=f"{model} {layer} eig")
            r = one("dims", model="T" if model == "teacher" else model, checkpoint=ck, layer=layer)
            for key, want in summary(lam).items():
                if isinstance(want, int):
                    assert r[key] == want, (model, ck, layer, key, r[key], want)
                else:
                    kt.assert_close(r[key], want, rtol=1e-9, what=f"{model} {layer} {key}")
            kt.assert_close(r["top_eigenvalue"], lam[0], rtol=1e-10, what="lambda1")


def test_residual_curve_matches_svd():
    for ck in ("early", "final"):
        zc = centred_logits(DATA[("teacher", ck)]["z"])
        s2 = np.linalg.svd(zc, compute_uv=False) ** 2
        curve = sorted(rows("logit_residual", checkpoint=ck), key=lambda r: r["d"])
        assert [r["d"] for r in curve] == list(range(1, C + 1))
        for r in curve:
            want = s2[r["d"]:].sum() / s2.sum()
            kt.assert_close(r["residual"], want, rtol=1e-9, atol=1e-13, what=f"residual({r['d']})")
        assert curve[C - 2]["residual"] < 1e-13 and curve[C - 1]["residual"] == 0
        assert all(a["residual"] >= b["residual"] for a, b in zip(curve, curve[1:]))
        marks = {r["d"]: r["students"] for r in curve}
        assert marks[WIDTHS["narrow"]] == "narrow@" + ck, marks
        assert marks[C] == "wide@" + ck, marks  # wider than C: marked at C


def expected_verdict(s2, d_s, r2, tol):
    """The two answers from numpy: d_needed from the singular values s2 of the
    teacher's doubly centred logits, realised from the ridge R2."""
    tail = [s2[d:].sum() / s2.sum() for d in range(len(s2) + 1)]
    d_needed = next(d for d, t in enumerate(tail) if t <= tol)
    fails = [name for name, bad in (("architectural", d_s < d_needed),
                                    ("realised", r2 is not None and r2 < 1 - tol)) if bad]
    if fails:
        verdict = "insufficient (" + ", ".join(fails) + ")"
    else:
        verdict = "sufficient" if r2 is not None else "sufficient (architectural only)"
    return d_needed, verdict


def check_verdict(v, z_teacher, x_student, tol):
    """Row v of "verdict" against numpy: d_needed, the residual, R2 at the
    row's GCV lambda (closed form) and the verdict text."""
    s2 = np.linalg.svd(centred_logits(z_teacher), compute_uv=False) ** 2
    d_s = x_student.shape[1]
    assert v["d_s"] == d_s and v["tolerance"] == tol, v
    kt.assert_close(v["residual_at_d_s"], s2[min(d_s, len(s2)):].sum() / s2.sum(), rtol=1e-9,
                    atol=1e-15, what="residual at d_s")
    r2 = v["ridge_r2"]
    d_needed, verdict = expected_verdict(s2, d_s, r2, tol)
    assert v["d_needed"] == d_needed, (v, d_needed)
    assert v["verdict"] == verdict, (v, verdict)
    assert v["architectural"] == ("insufficient" if d_s < d_needed else "sufficient"), v
    assert v["realised"] == ("insufficient" if r2 < 1 - tol else "sufficient"), v
    return d_needed


def test_narrow_student_is_flagged_with_reason():
    for ck in ("early", "final"):
        nar = one("verdict", model="narrow", checkpoint=ck)
        assert nar["c_minus_1"] == C - 1 and nar["r2_layer"] == "pen"
        assert nar["ridge_r2"] == one("dims", model="narrow", checkpoint=ck, layer="pen")["ridge_r2"]
        d_needed = check_verdict(nar, DATA[("teacher", ck)]["z"], DATA[("narrow", ck)]["pen"],
                                 0.01)
        assert d_needed > WIDTHS["narrow"], d_needed
        assert nar["verdict"].startswith("insufficient (architectural"), nar
        assert nar["reason"].startswith(f"d_s = {WIDTHS['narrow']} < d_needed = {d_needed}"), nar
        wide = one("verdict", model="wide", checkpoint=ck)
        check_verdict(wide, DATA[("teacher", ck)]["z"], DATA[("wide", ck)]["pen"], 0.01)
        assert wide["architectural"] == "sufficient" and wide["teacher_checkpoint"] == ck


def test_tolerance_changes_the_verdict():
    """The width verdict used to be "d_s >= C-1" whatever the tolerance."""
    seen = set()
    for tol in (0.01, 0.3, 0.99):
        doc = kt.run_json("dims", "-t", T, "-s", NARROW, "-s", WIDE, "--tolerance", str(tol))
        for v in kt.records(doc, "verdict"):
            check_verdict(v, DATA[("teacher", "final")]["z"], DATA[(v["model"], "final")]["pen"],
                          tol)
            seen.add((v["model"], v["verdict"]))
        assert any(f"at tolerance {tol:g}" in n for n in doc["notes"]), doc["notes"]
    # The narrow student (d_s = 4 < C-1 = 9) is insufficient at 1 % and sufficient at 99 %.
    assert ("narrow", "sufficient") in seen and \
        ("narrow", "insufficient (architectural, realised)") in seen, seen


def test_wide_student_with_poor_features_is_insufficient_realised():
    """d_s >= C-1, so the old verdict said sufficient; its features explain
    little of the teacher's logits (the ridge R2), so it is insufficient (realised)."""
    path = os.path.join(TMP, "poor.h5")
    width = C + 2
    tpen = DATA[("teacher", "final")]["pen"]
    rng = np.random.default_rng(7)
    h = 0.3 * np.tanh(tpen @ rng.standard_normal((D_T, width)) / 5.0) \
        + rng.standard_normal((N, width))
    w = rng.standard_normal((C, width))
    write(path, "student", "poor",
          {"final": dict(step=0, w=w, b=np.zeros(C), logits=h @ w.T, head_input="pen",
                         layers={"pen": (h, 0, np.float64)})})
    doc = kt.run_json("dims", "-t", T, "-s", path, "--lambda", "0")
    v = kt.records(doc, "verdict")[0]
    r2, _, _ = ridge(h, DATA[("teacher", "final")]["z"], 0.0)
    assert 0.05 < r2 < 0.9, r2
    kt.assert_close(v["ridge_r2"], r2, rtol=1e-9, what="R2 of the poor student")
    assert v["d_s"] >= C - 1 and v["architectural"] == "sufficient", v
    assert v["verdict"] == "insufficient (realised)", v
    assert v["reason"] == f"R2 = {r2:.3g} < 0.99", v
    check_verdict(v, DATA[("teacher", "final")]["z"], h, 0.01)
    # At a tolerance above 1 - R2 it passes.
    doc = kt.run_json("dims", "-t", T, "-s", path, "--lambda", "0", "--tolerance", "0.95")
    assert kt.records(doc, "verdict")[0]["verdict"] == "sufficient"


def test_default_partner_is_the_teachers_last_checkpoint():
    """Ordinary KD: a trained teacher; every student checkpoint faces its last one."""
    doc = kt.run_json("dims", "-t", T, "-s", NARROW, "--checkpoint", "all")
    verdicts = kt.records(doc, "verdict")
    assert {r["checkpoint"] for r in verdicts} == {"early", "final"}, verdicts
    assert all(r["teacher_checkpoint"] == "final" for r in verdicts), verdicts
    for r in verdicts:
        check_verdict(r, DATA[("teacher", "final")]["z"], DATA[("narrow", r["checkpoint"])]["pen"],
                      0.01)


def test_ridge_given_lambda_matches_closed_form():
    doc = kt.run_json("dims", "-t", T, "-s", NARROW, "--lambda", "3.5", "--layer", "pen")
    for r in [r for r in kt.records(doc, "dims") if r["layer"] == "pen"]:
        key = ("teacher" if r["model"] == "T" else r["model"], r["checkpoint"])
        r2, gcv, df = ridge(DATA[key]["pen"], DATA[("teacher", r["checkpoint"])]["z"], 3.5)
        assert r["ridge_lambda_by"] == "given" and r["ridge_lambda"] == 3.5
        kt.assert_close(r["ridge_r2"], r2, rtol=1e-9, what="ridge R2")
        kt.assert_close(r["ridge_df"], df, rtol=1e-9, what="ridge df")
        zc = centred_logits(DATA[("teacher", r["checkpoint"])]["z"])
        kt.assert_close(r["ridge_r2_gcv"], 1 - N * gcv / np.sum(zc ** 2), rtol=1e-8,
                        what="ridge R2 gcv")


def test_gcv_lambda_minimises_gcv():
    for model in ("narrow", "wide"):
        r = one("dims", model=model, checkpoint="final", layer="pen")
        assert r["ridge_lambda_by"] == "gcv"
        x, z = DATA[(model, "final")]["pen"], DATA[("teacher", "final")]["z"]
        r2, gcv_at, _ = ridge(x, z, r["ridge_lambda"])
        kt.assert_close(r["ridge_r2"], r2, rtol=1e-9, what=f"{model} R2 at GCV lambda")
        xc = x - x.mean(axis=0)
        s1 = np.linalg.eigvalsh(xc.T @ xc)[-1]
        grid = [ridge(x, z, s1 * 10.0 ** e)[1] for e in np.linspace(-10, 5, 151)]
        assert gcv_at <= min(grid) * (1 + 1e-9), (model, gcv_at, min(grid))
        assert 0 < r["ridge_r2"] <= 1 and r["ridge_r2_gcv"] <= r["ridge_r2"]


def test_head_rank_is_rank_of_wfw():
    for (model, ck), d in DATA.items():
        w = d["w"]
        z = d["z"]
        name = "T" if model == "teacher" else model
        h = one("heads", model=name, checkpoint=ck)
        for i in (0, 7, 123):  # W^T F W formed explicitly for a few samples
            p = np.exp((z[i] - z[i].max()) / TAU)
            p /= p.sum()
            m = w.T @ (np.diag(p) - np.outer(p, p)) @ w
            ev = np.linalg.eigvalsh(m)
            assert h["wfw_rank"] == int(np.sum(ev > 1e-10 * ev[-1])), (model, ck, i)
        assert h["wfw_rank"] == min(w.shape[1], C - 1)
        assert h["kl_blind_dims"] == w.shape[1] - h["wfw_rank"]
        logp = (z - z.max(axis=1, keepdims=True)) / TAU
        support = np.sum(logp >= np.log(RTOL_RANK), axis=1)
        kt.assert_close(h["wfw_support_rank_mean"],
                        np.mean(np.minimum(support - 1, h["wfw_rank"])), rtol=1e-12,
                        what="support rank mean")


def test_default_is_last_checkpoint_and_terminal_output():
    doc = kt.run_json("dims", "-t", T, "-s", NARROW)
    assert {r["checkpoint"] for r in kt.records(doc, "dims")} == {"final"}
    _, out, _ = kt.run("dims", "-t", T, "-s", NARROW, check=0)
    assert "insufficient (architectural" in out and "< d_needed" in out
    assert "--curves adds it" in out and "Covariance spectra" not in out
    _, out, _ = kt.run("dims", "-t", T, "--curves", check=0)
    assert "Covariance spectra" in out


def test_students_only():
    doc = kt.run_json("dims", "-s", WIDE, "--layer", "pen")
    assert kt.records(doc, "verdict") == [] and kt.records(doc, "logit_residual") == []
    r = [r for r in kt.records(doc, "dims") if r["layer"] == "pen"][0]
    assert "ridge_r2" not in r and r["numerical_rank"] == WIDTHS["wide"]


def test_bad_input():
    st, out, err = kt.run("dims")
    assert st == 2 and out == "" and "expected a teacher (-t) and/or students (-s)" in err
    st, out, err = kt.run("dims", "-t", T, "--layer", "nope")
    assert st == 2 and out == ""
    kt.one_line_error(err, "kdlens dims:", "no input has a layer 'nope'")
    st, _, err = kt.run("dims", "-t", T, "--tolerance", "1.5")
    assert st == 2 and "--tolerance" in err
    st, _, err = kt.run("dims", "-t", T, "--lambda", "nan")
    assert st == 2 and "--lambda" in err
    st, _, err = kt.run("dims", "-t", T, "-c", "nope")
    assert st == 2 and "no checkpoint 'nope'" in err
    st, out, err = kt.run("dims", "-t", os.path.join(TMP, "missing.h5"))
    assert st == 1 and out == ""
    kt.one_line_error(err, "missing.h5")


def test_nonfinite_error_and_skip():
    bad = os.path.join(TMP, "nan.h5")
    x = DATA[("teacher", "final")]["pen"].copy()
    x[17, 3] = np.nan
    clean = DATA[("teacher", "final")]["planted"]
    z = DATA[("teacher", "final")]["z"]
    write(bad, "teacher", "T", {"final": dict(step=0, logits=z,
                                              layers={"pen": (x, 0, np.float64),
                                                      "planted": (clean, 1, np.float64)})})
    st, out, err = kt.run("dims", "-t", bad)
    assert st == 1 and out == ""
    kt.one_line_error(err, "features/pen")
    doc = kt.run_json("dims", "-t", bad, "--nonfinite", "skip")
    # One pass reads every layer and the logits: the sample is dropped for all of them.
    rs = {r["layer"]: r for r in kt.records(doc, "dims")}
    assert sorted(rs) == ["logits", "pen", "planted"]
    assert all(r["samples"] == N - 1 for r in rs.values())
    skips = [n for n in doc["notes"] if "samples with NaN/Inf skipped" in n]
    assert len(skips) == 1 and "checkpoint final: 1 samples with NaN/Inf skipped" in skips[0]
    assert "for every layer and the logits" in skips[0]
    for layer, arr in (("pen", x), ("planted", clean)):
        lam = spectrum(np.delete(arr, 17, axis=0))
        kt.assert_close(rs[layer]["top_eigenvalue"], lam[0], rtol=1e-10,
                        what=layer + " lambda1 after skip")
    zc = np.delete(z, 17, axis=0)
    lam = spectrum(zc - zc.mean(axis=1, keepdims=True))
    kt.assert_close(rs["logits"]["top_eigenvalue"], lam[0], rtol=1e-10,
                    what="logits lambda1 after skip")


def test_block_size_does_not_change_results():
    """Blocks of 7 rows (many exact merges) against the default single block."""
    doc = kt.run_json("dims", "-t", T, "-s", NARROW, "--checkpoint", "all", "--block-rows", "7",
                      "--teacher-checkpoint", "same")
    for table in ("dims", "verdict", "logit_residual", "spectrum", "heads"):
        a, b = kt.records(doc, table), rows(table)
        b = [r for r in b if r["model"] in ("T", "narrow")]
        assert len(a) == len(b) and a, table
        for ra, rb in zip(a, b):
            assert ra.keys() == rb.keys(), table
            for k, v in ra.items():
                if k == "students":  # the reference run also marks the wide student
                    continue
                if k in ("ridge_lambda", "ridge_df"):
                    continue  # GCV is flat at its minimum (rank-deficient layers): compare R2s
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    tol = 1e-8 if k.startswith("ridge_r2") else 1e-12
                    kt.assert_close(v, rb[k], rtol=1e-9, atol=tol, what=f"{table}.{k}")
                else:
                    assert v == rb[k], (table, k, v, rb[k])
    st, _, err = kt.run("dims", "-t", T, "--block-rows", "0")
    assert st == 2 and "--block-rows" in err


def test_student_without_head_is_judged_by_its_deepest_layer():
    path = os.path.join(TMP, "headless.h5")
    h = DATA[("wide", "final")]["pen"]
    write(path, "student", "headless",
          {"final": dict(step=0, logits=DATA[("wide", "final")]["z"],
                         layers={"a": (h[:, :3], 0, np.float64), "b": (h[:, :12], 1, np.float64)})})
    doc = kt.run_json("dims", "-t", T, "-s", path)
    v = [r for r in kt.records(doc, "verdict") if r["model"] == "headless"]
    assert len(v) == 1 and v[0]["d_s"] == 12 and v[0]["d_s_from"] == "deepest layer", v
    # The realised test reads the same layer.
    assert v[0]["r2_layer"] == "b", v
    check_verdict(v[0], DATA[("teacher", "final")]["z"], h[:, :12], 0.01)
    assert v[0]["architectural"] == "sufficient"
    doc = kt.run_json("dims", "-t", T, "-s", path, "--layer", "a")
    v = [r for r in kt.records(doc, "verdict") if r["model"] == "headless"][0]
    assert v["realised"] == "untested" and "ridge_r2" not in v, v
    assert v["verdict"] in ("sufficient (architectural only)", "insufficient (architectural)")
    assert v["reason"].endswith("realised untested: layer 'b' not analysed"), v
    assert not [r for r in kt.records(doc, "heads") if r["model"] == "headless"]


def test_too_few_samples():
    path = os.path.join(TMP, "one.h5")
    z = DATA[("teacher", "final")]["z"][:1]
    write(path, "teacher", "one", {"final": dict(step=0, logits=z, layers={})})
    st, out, err = kt.run("dims", "-t", path)
    assert st == 1 and out == ""
    kt.one_line_error(err, "one.h5", "logits", "expected at least 2 usable samples, found 1")


def test_report_has_the_dims_section():
    if not (os.environ.get("KDL_GNUPLOT") or shutil.which("gnuplot")):
        print("skipped: no gnuplot")
        return
    out = os.path.join(TMP, "report")
    kt.run("report", "-t", T, "-s", NARROW, "-s", WIDE, "-o", out, "--quiet", check=0)
    for name in ("dims_residual", "dims_spectrum"):
        for ext in ("pdf", "png", "svg"):
            assert os.path.getsize(os.path.join(out, "figures", f"{name}.{ext}")) > 0
    import json
    doc = json.load(open(os.path.join(out, "data", "dims.json")))
    v = {(r["model"], r["checkpoint"]): r for r in kt.records(doc, "verdict")}
    assert v[("narrow", "final")]["architectural"] == "insufficient"
    assert v[("wide", "final")]["architectural"] == "sufficient"
    script = open(os.path.join(out, "scripts", "dims_residual.gp")).read()
    assert f"set arrow from {WIDTHS['narrow']}, graph 0" in script, script
    assert "Feature dimensions" in open(os.path.join(out, "index.md")).read()


# ---- wide logits: exact features, exact Gram and the sketch -----------------

WN, WC, W_RANK, W_S = 1000, 200, 24, 16


def build_wide():
    """A teacher with C = 200 classes whose centred logits hold W_RANK strong
    directions and a decaying tail over all C - 1 (so every method has work),
    a student of width W_S; and a 120-sample teacher (N < C)."""
    h = RNG.standard_normal((WN, W_RANK)) * np.linspace(3.0, 0.5, W_RANK)
    w = RNG.standard_normal((WC, W_RANK))
    tail = RNG.standard_normal((WN, WC)) * (0.3 * np.exp(-np.arange(WC) / 40.0))
    z = h @ w.T + tail + 5.0 * RNG.standard_normal((WN, 1)) + np.arange(WC) / 50.0
    hs = (h[:, :W_S] + 0.1 * RNG.standard_normal((WN, W_S))).astype(np.float64)
    ws = RNG.standard_normal((WC, W_S))
    zs = hs @ ws.T
    write(os.path.join(TMP, "wide_t.h5"), "teacher", "WT",
          {"final": dict(step=1, logits=z, layers={"pen": (h, 1, np.float64)})})
    write(os.path.join(TMP, "wide_s.h5"), "student", "WS",
          {"final": dict(step=1, logits=zs, w=ws, b=np.zeros(WC), head_input="pen",
                         layers={"pen": (hs, 1, np.float64)})})
    write(os.path.join(TMP, "few_t.h5"), "teacher", "FT",
          {"final": dict(step=1, logits=z[:120], layers={"pen": (h[:120], 1, np.float64)})})
    return z


WZ = build_wide()
WT, WS, FT = (os.path.join(TMP, n) for n in ("wide_t.h5", "wide_s.h5", "few_t.h5"))


def wide_doc(*opts, teacher=None):
    """dims on the wide teacher and its student, or on @teacher alone."""
    return kt.run_json("dims", "-t", teacher or WT, *(() if teacher else ("-s", WS)), *opts)


def logit_spectrum(doc, model="WT"):
    return [r for r in kt.records(doc, "spectrum") if r["model"] == model and r["layer"] == "logits"]


def numpy_curve(z):
    s2 = np.linalg.svd(centred_logits(z), compute_uv=False) ** 2
    lam = s2 / (z.shape[0] - 1)
    lam = np.concatenate([lam, np.zeros(z.shape[1] - len(lam))])
    tail = np.array([lam[d:].sum() / lam.sum() for d in range(len(lam) + 1)])
    return lam, tail


def test_wide_exact_paths_equal_numpy():
    """exact-features = exact-gram = numpy to 1e-10, with N > C and N < C."""
    for teacher, n in ((WT, WN), (FT, 120)):
        lam, tail = numpy_curve(WZ[:n])
        docs = {m: wide_doc("--logit-spectrum", m, teacher=teacher)
                for m in ("exact-features", "exact-gram")}
        docs["auto"] = wide_doc(teacher=teacher)
        for m, doc in docs.items():
            lrow = one_of(doc, "dims", layer="logits", role="teacher")
            method = lrow.get("spectrum_method", "exact-features")
            want = m if m != "auto" else ("exact-gram" if n < WC else "exact-features")
            assert method == want, (m, n, method)
            kt.assert_close(lrow["total_variance"], lam.sum(), rtol=1e-12, what="total")
            # The Gram lists its min(N, C) eigenvalues (the rest are 0).
            spec = logit_spectrum(doc, "WT" if n == WN else "FT")
            assert len(spec) == (WC if method == "exact-features" else min(n, WC)), (m, len(spec))
            for r in spec:
                kt.assert_close(r["eigenvalue"], lam[r["k"] - 1], rtol=0, atol=1e-10 * lam[0],
                                what=f"{m} N={n} eig {r['k']}")
            for r in kt.records(doc, "logit_residual"):
                kt.assert_close(r["residual"], tail[r["d"]], rtol=0, atol=1e-10,
                                what=f"{m} residual({r['d']})")
            for v in kt.records(doc, "verdict"):
                assert v["d_needed"] == next(d for d, t in enumerate(tail) if t <= 0.01), v
        # The default (exact features) says nothing new; the Gram says so.
        assert "spectrum_method" not in one_of(docs["exact-features"], "dims", layer="logits",
                                               role="teacher")
        assert any("exact-gram" in x for x in docs["exact-gram"]["notes"])


def one_of(doc, table, **match):
    r = [x for x in kt.records(doc, table) if all(x.get(k) == v for k, v in match.items())]
    assert len(r) == 1, (table, match, len(r))
    return r[0]


def check_sketch(doc, lam, tail, r, k):
    """Every bound the sketch states holds against numpy; the total is exact."""
    tr = lam.sum()
    eps = 1e-10 * tr
    row = one_of(doc, "dims", layer="logits", role="teacher")
    assert row["spectrum_method"] == "sketch" and row["sketch_rank"] == r, row
    assert row["sketch_columns"] == k, row
    kt.assert_close(row["total_variance"], tr, rtol=1e-12, what="sketch total variance")
    assert "effective_rank" not in row and "numerical_rank" not in row
    spec = logit_spectrum(doc)
    assert [x["k"] for x in spec] == list(range(1, r + 1))
    for x in spec:
        i = x["k"] - 1
        assert x["eigenvalue"] <= lam[i] + eps and lam[i] <= x["eigenvalue_hi"] + eps, (x, lam[i])
        assert x["eigenvalue_hi"] - x["eigenvalue"] <= row["eigenvalue_bound"] + eps, x
    for x in kt.records(doc, "logit_residual"):
        assert x["residual_lo"] - 1e-10 <= tail[x["d"]] <= x["residual"] + 1e-10, (x, tail[x["d"]])
    v = kt.records(doc, "verdict")[0]
    d_needed = next(d for d, t in enumerate(tail) if t <= v["tolerance"])
    assert v["d_needed_lo"] <= d_needed <= v["d_needed"], (v, d_needed)
    assert v["residual_at_d_s_lo"] - 1e-10 <= tail[W_S] <= v["residual_at_d_s"] + 1e-10, v
    return v, d_needed


def test_wide_sketch_within_its_bounds():
    """Forced sketches of several ranks and seeds: the top eigenvalues within
    their stated bound, the total variance exact, the curve and d_needed
    between their bounds; resolved, d_needed and the verdict are numpy's."""
    lam, tail = numpy_curve(WZ)
    exact = kt.records(wide_doc(), "verdict")[0]
    for r, p, seed in ((8, 4, 0), (20, 10, 1), (40, 10, 2), (40, 10, 3)):
        doc = wide_doc("--logit-spectrum", "sketch", "--sketch-rank", r, "--sketch-oversample", p,
                       "--seed", seed)
        v, d_needed = check_sketch(doc, lam, tail, r, r + p)
        assert any("sketch" in x and f"seed {seed}" in x for x in doc["notes"]), doc["notes"]
        if r + p > 2 * W_RANK:
            # Well past the 24 strong directions: resolved.
            assert v["d_needed_lo"] == v["d_needed"], v
        elif r + p < W_RANK:
            assert v["d_needed_lo"] < v["d_needed"], v
        if v["d_needed_lo"] == v["d_needed"]:
            assert v["d_needed"] == d_needed == exact["d_needed"], v
            assert v["verdict"] == exact["verdict"] and v["architectural"] == exact["architectural"]
    # Auto with nothing exact allowed: the sketch at the default rank 256, here all C = 200.
    doc = wide_doc("--exact-max", 0)
    check_sketch(doc, lam, tail, WC, WC)


def test_wide_sketch_unresolved_verdict():
    """A sketch too small to tell: 'unresolved', with both ends in the reason."""
    lam, tail = numpy_curve(WZ)
    doc = wide_doc("--logit-spectrum", "sketch", "--sketch-rank", 6, "--sketch-oversample", 2,
                   "--tolerance", 0.1)
    v, _ = check_sketch(doc, lam, tail, 6, 8)
    assert v["d_needed_lo"] <= W_S < v["d_needed"], v
    assert v["architectural"] == "unresolved" and v["verdict"] == "unresolved (architectural)", v
    assert v["reason"].startswith(f"d_needed in [{v['d_needed_lo']}, {v['d_needed']}]"), v
    assert "--sketch-rank" in v["reason"], v


if __name__ == "__main__":
    kt.main(globals())
