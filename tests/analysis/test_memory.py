#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The memory budget: --memory LIMIT bounds every analysis; --plan says what kl, cka, split,
dims, layers and the report need without reading data.

A need over the budget is one line on stderr naming the analysis, the size and the option
that lowers it, exit status 1, with nothing written; a malformed LIMIT is a usage error
(exit 2); the default is half of the physical memory (MemTotal, or a smaller cgroup limit).
The plan is checked against the peak resident memory of the run it describes, measured
with os.wait4() on mid-size dumps: plan <= peak <= plan + OVERHEAD, where OVERHEAD is what
no option changes (the program, HDF5, BLAS, the result tables; 15 to 25 MiB measured here).
Under AddressSanitizer its shadow memory and quarantine add to the peak (69 MiB measured on
the cka case in the sanitized CI build; dims reached 214 MiB over its plan with ASan's
default 256 MiB quarantine), so the measured runs get a 16 MiB quarantine and OVERHEAD is
larger there.
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

MIB = 1 << 20


def sanitized():
    """Whether the binary under test links AddressSanitizer."""
    out = subprocess.run(["ldd", kt.KDLENS], capture_output=True, text=True).stdout
    return "libasan" in out


BASE_OVERHEAD = 64 * MIB  # what no option changes, unsanitized
OVERHEAD = BASE_OVERHEAD + (128 * MIB if sanitized() else 0)
GNUPLOT = os.environ.get("KDL_GNUPLOT", "")
DIR = kt.tmpdir()


def write_dump(path, role, seed, n, c, widths, head=True, nan=False):
    """Features l0.. of @widths (the last is the head input), logits [n, c] (from a head
    when @head), labels; @nan: the logits are NaN, which only a run that reads them sees."""
    rng, y = np.random.default_rng(seed), (np.arange(n) % c).astype(np.int64)
    with h5py.File(path, "w") as f:
        f.attrs.update(kdlens_format=1, role=role, model=role)
        f["labels"] = y
        g = f.create_group("checkpoints/final")
        g.attrs["step"] = np.int64(1)
        x = None
        for d, w in enumerate(widths):
            x = rng.standard_normal((n, w)).astype("f4")
            x[:, :min(w, c)] += 2 * np.eye(c, w, dtype="f4")[y][:, :min(w, c)]
            g.create_dataset(f"features/l{d}", data=x).attrs["depth"] = d
        if head:
            w = rng.standard_normal((c, widths[-1])).astype("f4")
            z = x @ w.T
            h = g.create_group("head")
            h["weight"] = w
            h["bias"] = np.zeros(c, "f4")
            h.attrs["input"] = f"l{len(widths) - 1}"
        else:
            z = rng.standard_normal((n, c)).astype("f4")
        g["logits"] = np.full_like(z, np.nan) if nan else z


# Small dumps for the refusals; mid-size ones for the peak: CKA of 7 sources (its robust
# column is 7 x 2000^2 doubles, 224 MB) and kl over 60000 samples of 200 classes (64 MiB
# of blocks, a 65536-sample Spearman reservoir).
T, S = os.path.join(DIR, "t.h5"), os.path.join(DIR, "s.h5")
CT, CS = os.path.join(DIR, "ct.h5"), os.path.join(DIR, "cs.h5")
KT, KS = os.path.join(DIR, "kt.h5"), os.path.join(DIR, "ks.h5")
TNAN = os.path.join(DIR, "tnan.h5")
write_dump(T, "teacher", 1, 300, 5, (8, 12))
write_dump(S, "student", 2, 300, 5, (6, 12))
write_dump(TNAN, "teacher", 1, 300, 5, (8, 12), nan=True)
write_dump(CT, "teacher", 3, 2000, 10, (64, 256))
write_dump(CS, "student", 4, 2000, 10, (32, 128))
write_dump(KT, "teacher", 5, 60000, 200, (16,), head=False)
write_dump(KS, "student", 6, 60000, 200, (16,), head=False)
# cka --measure: layers wide enough for their decompositions to dominate, in feature space
# (3000 samples) and in Gram space (1200 samples, narrower than the layers).
WT, WS = os.path.join(DIR, "wt.h5"), os.path.join(DIR, "ws.h5")
GT, GS = os.path.join(DIR, "gt.h5"), os.path.join(DIR, "gs.h5")
write_dump(WT, "teacher", 8, 3000, 10, (1024, 1536))
write_dump(WS, "student", 9, 3000, 10, (768,))
write_dump(GT, "teacher", 10, 1200, 10, (2048, 1536))
write_dump(GS, "student", 11, 1200, 10, (1536,))


def plan(*args):
    """The plan document of kdlens ARGS --plan: (the "plan" row, the "plan_parts" rows)."""
    d = kt.run_json(*args, "--plan")
    (row,) = kt.records(d, "plan")
    return row, kt.records(d, "plan_parts")


# A bare interpreter between this one and kdlens: a child's peak RSS keeps the peak of the
# process it was forked from (Linux carries it across exec), and this one holds numpy, h5py
# and the dumps' arrays; the probe holds about 10 MiB, less than kdlens itself.
PROBE = ("import resource, subprocess, sys\n"
         "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
         "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_rss(*args, perturb=False):
    """The peak resident memory of kdlens ARGS in bytes, from resource.getrusage() of the
    child (exit status 0 required); @perturb: with glibc's MALLOC_PERTURB_, which touches
    every allocated page (as meson test sets it), so that the peak is what was allocated."""
    env = dict(os.environ)
    if perturb:
        env["MALLOC_PERTURB_"] = "91"
    if sanitized():
        # ASan keeps freed blocks in a quarantine (256 MiB by default) that would count as
        # resident: a small one, so that the peak is the live memory plus shadow.  ASan's
        # allocator ignores MALLOC_PERTURB_; its own fill (of the first 4 KiB of a block by
        # default) does the same when it covers whole blocks.
        fill = "max_malloc_fill_size=%d:" % (1 << 40) if perturb else ""
        env["ASAN_OPTIONS"] = "quarantine_size_mb=16:" + fill + env.get("ASAN_OPTIONS", "")
    p = subprocess.run([sys.executable, "-S", "-c", PROBE, kt.KDLENS, *args],
                       capture_output=True, text=True, timeout=600, env=env)
    status, kib = map(int, p.stdout.split())
    assert status == 0, (args, p.stderr)
    return kib * 1024  # kilobytes on Linux


def cgroup_limit():
    """The smallest memory limit of this process's cgroups, or None (as kdlens reads it)."""
    paths = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
    try:
        for line in open("/proc/self/cgroup"):
            _, ctl, path = line.rstrip("\n").split(":", 2)
            if ctl == "":
                paths.append(f"/sys/fs/cgroup{path}/memory.max")
            elif ctl == "memory":
                paths.append(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
    except OSError:
        pass
    found = []
    for p in paths:
        try:
            v = open(p).read().strip()
        except OSError:
            continue
        if v.isdigit() and int(v) > 0:
            found.append(int(v))
    return min(found) if found else None


def test_default_is_half_of_physical_memory():
    total = None
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) * 1024
    lim = cgroup_limit()
    phys = min(total, lim) if lim else total
    row, _ = plan("kl", "-t", T, "-s", S)
    assert row["budget_bytes"] == phys // 2, (row["budget_bytes"], phys)
    _, out, _ = kt.run("kl", "-h", check=0)
    assert "The default --memory is " + row["budget"] + " here: half of the " in out, out


def test_bad_limits_are_usage_errors():
    for v in ("0", "0M", "-1G", "1.5X", "", "abc", "101%", "0%", "1e3", "0x10M", "4 G",
              "1.5", "99999999999999999999T"):
        st, out, err = kt.run("kl", "-t", T, "-s", S, "--memory", v)
        assert st == 2 and out == "", (v, st, out, err)
        assert err.splitlines()[0].startswith("kdlens kl: --memory: "), (v, err)
    for v in ("512M", "1.5G", "4GiB", "50%", "100%", "300000000"):
        kt.run("kl", "-t", T, "-s", S, "--memory", v, check=0)
    st, _, err = kt.run("inspect", T, "--memory", "nope")
    assert st == 2 and "--memory" in err, err


def refused(args, analysis):
    """kdlens ARGS --memory 1M: exit 1, one line naming @analysis, the size, the budget and
    what to do; nothing on stdout."""
    st, out, err = kt.run(*args, "--memory", "1M")
    assert st == 1 and out == "", (args, st, out, err)
    kt.one_line_error(err, f"kdlens {args[0]}: {analysis} needs ", " for ",
                      "(--memory is 1 MiB): ")
    line = err.strip()
    assert "lower it with --" in line or line.endswith(": raise --memory"), line
    return line


def test_small_budgets_are_refused_in_one_line():
    out = os.path.join(DIR, "per-sample.h5")
    line = refused(("kl", "-t", KT, "-s", KS, "--per-sample", out), "kl")
    assert not os.path.exists(out), "the per-sample file was made"
    # Under a small budget the blocks shrink; the Spearman reservoir is what is left.
    assert "Spearman reservoir" in line and "lower it with --spearman-samples, or raise" in line
    line = refused(("cka", CT, CS), "cka")
    assert "the in-memory CKA of the 2000-row subsample" in line and "--subsample" in line
    rep = os.path.join(DIR, "rep")
    line = refused(("report", "-t", CT, "-s", CS, "-o", rep, "--quiet"), "report")
    assert "cka: " in line and line.endswith(": raise --memory"), line
    assert not os.path.exists(rep), "the report directory was made"
    line = refused(("dims", "-t", KT, "-s", KS), "dims")
    assert "the centred logits (C = 200, N = 60000) by sketch" in line, line
    assert "lower it with --sketch-rank, or raise" in line, line
    line = refused(("dims", "-t", CT, "--logit-spectrum", "exact-features"), "dims")
    assert "the spectra of 2 feature layers" in line and "--block-rows or --layer" in line, line
    refused(("layers", "-t", CT), "layers")
    line = refused(("inspect", KT), "inspect")
    assert "lower it with --quick" in line
    kt.run("inspect", "--quick", KT, "--memory", "1M", check=0)


def test_plan_reads_no_data():
    """The logits are NaN: a run fails on them, the plan never reads them."""
    st, _, err = kt.run("kl", "-t", TNAN, "-s", S)
    assert st == 1 and "NaN" in err, err
    row, parts = plan("kl", "-t", TNAN, "-s", S)
    assert row["analysis"] == "kl" and row["fits"] is True
    assert row["need_bytes"] == sum(p["bytes"] for p in parts)
    row, _ = plan("kl", "-t", TNAN, "-s", S, "--memory", "64K")
    assert row["fits"] is False and row["budget"] == "64 KiB", row
    # The same with the other formats, and the need equals its parts for cka too.
    assert "fits" in kt.run("cka", TNAN, S, "--plan", check=0)[1]
    row, parts = plan("cka", T, S)
    assert row["need_bytes"] == sum(p["bytes"] for p in parts)
    # split, dims and layers plan the dump whose logits a run fails on.
    for args in (("split", "-t", TNAN, "-s", S), ("dims", "-t", TNAN, "-s", S),
                 ("layers", "-t", TNAN, "-s", S)):
        st, _, err = kt.run(*args)
        assert st == 1 and "NaN" in err, (args, err)
        row, parts = plan(*args)
        assert row["analysis"] == args[0] and row["fits"] is True, row
        assert row["need_bytes"] == sum(p["bytes"] for p in parts) > 0, (row, parts)
        row, _ = plan(*args, "--memory", "64K")
        assert row["fits"] is False, row


def test_report_plan_adds_the_analyses_of_a_checkpoint():
    """The report's need is the largest of a student checkpoint's kl, cka, summary, split
    and dims jobs on their shared stream, the teacher's passes, and layers (alone, after
    the streams); it needs no directory, and a budget under it refuses the report before
    anything is computed, layers' share included."""
    row, parts = plan("report", "-t", CT, "-s", CS)
    names = [p["part"] for p in parts]
    for analysis in ("kl", "cka", "summary", "split", "dims"):
        assert any(n.startswith(analysis + ": ") for n in names), (analysis, names)
    assert row["need_bytes"] == sum(p["bytes"] for p in parts)
    alone = {a: plan(*args)[0]["need_bytes"] for a, args in (
        ("kl", ("kl", "-t", CT, "-s", CS)), ("cka", ("cka", CT, CS)),
        ("summary", ("summary", "-t", CT, "-s", CS)), ("split", ("split", "-t", CT, "-s", CS)),
        ("dims", ("dims", "-t", CT, "-s", CS)))}
    # The streams' blocks become one: no more than the analyses alone, more than any.
    assert max(alone.values()) < row["need_bytes"] <= sum(alone.values()), (row, alone)
    full = row
    st, _, err = kt.run("report", "-t", CT, "-s", CS, "-f", "json")
    assert st == 2 and "-f/--format" in err, err
    # layers runs alone on the teacher, after the streams: the report needs at least that.
    lay, _ = plan("layers", "-t", CT)
    assert full["need_bytes"] >= lay["need_bytes"], (full, lay)
    row, _ = plan("report", "-t", CT, "-s", CS, "--memory", str(full["need_bytes"] - MIB))
    assert row["fits"] is False, row
    rep = os.path.join(DIR, "rep-layers")
    st, out, err = kt.run("report", "-t", CT, "-s", CS, "-o", rep, "--quiet", "--memory",
                          str(row["budget_bytes"]))
    assert st == 1 and "report needs " in err and not os.path.exists(rep), (st, err)


def test_plan_is_the_measured_peak():
    """plan <= peak RSS <= plan + OVERHEAD, for cka (the in-memory CKA of its subsample
    dominates; with wide layers sketched, or in column strips over more passes), kl (blocks
    and the Spearman reservoir), split (blocked: its C x C tables, counted in full at about
    300 bytes a row, are built after the pass has freed its blocks, so the plan of a full
    split in JSON is an upper bound, test_split_long_tables_are_in_the_plan) and dims
    (their blocks and states over 60,000 samples)
    and layers (its CKA, then the quality of each layer)."""
    for args in (("cka", CT, CS), ("cka", CT, CS, "--wide-max", "100"),
                 ("cka", CT, CS, "--wide-max", "100", "--wide", "exact"),
                 ("kl", "-t", KT, "-s", KS), ("split", "-t", KT, "-s", KS, "--domain", "blocked"),
                 ("dims", "-t", KT, "-s", KS), ("layers", "-t", CT, "-s", CS)):
        row, _ = plan(*args)
        rss = peak_rss(*args, "--format", "json")
        print(f"  {args[0]}: plan {row['need_bytes'] / MIB:.1f} MiB, peak RSS "
              f"{rss / MIB:.1f} MiB, difference {(rss - row['need_bytes']) / MIB:.1f} MiB")
        assert row["need_bytes"] > 3 * BASE_OVERHEAD / 4, row  # the test measures something
        assert row["need_bytes"] <= rss <= row["need_bytes"] + OVERHEAD, (args, row, rss)


def test_measures_are_in_the_plan():
    """cka --measure's decompositions are a part of the need: in feature space with the
    eigenvectors plan <= peak <= plan + OVERHEAD (with or without meson's MALLOC_PERTURB_,
    which touches every allocated page); for Procrustes alone (its buffers are allocated,
    a third of them touched) and in Gram space (the pass's Gram matrices are freed before
    them) an upper bound, never below the peak; and a budget between the need without and
    with them refuses."""
    base, _ = plan("cka", WT, WS, "--subsample", "200")
    for measure in ("all", "procrustes"):
        args = ("cka", WT, WS, "--measure", measure, "--subsample", "200")
        row, parts = plan(*args)
        (part,) = [p for p in parts if p["part"].startswith("the decompositions of --measure")]
        assert row["need_bytes"] == base["need_bytes"] + part["bytes"], (row, part, base)
        rss = peak_rss(*args, "--format", "json")
        print(f"  --measure {measure}: plan {row['need_bytes'] / MIB:.1f} MiB, peak RSS "
              f"{rss / MIB:.1f} MiB")
        assert rss <= row["need_bytes"] + OVERHEAD, (args, row, rss)
        assert measure != "all" or row["need_bytes"] <= rss, (args, row, rss)
    args = ("cka", GT, GS, "--measure", "all", "--subsample", "200")
    row, parts = plan(*args)
    assert any("(5 Gram matrices)" in p["part"] for p in parts), parts
    rss = peak_rss(*args, "--format", "json")
    assert rss <= row["need_bytes"] + OVERHEAD, (row, rss)
    row, _ = plan("cka", WT, WS, "--measure", "all", "--subsample", "200")
    budget = (base["need_bytes"] + row["need_bytes"]) // 2
    st, out, err = kt.run("cka", WT, WS, "--measure", "all", "--subsample", "200",
                          "--memory", str(budget))
    assert st == 1 and out == "" and "cka needs " in err, (st, err)
    kt.run("cka", WT, WS, "--subsample", "200", "--memory", str(budget), check=0)


def test_split_long_tables_are_in_the_plan():
    """In JSON (and CSV, and the report) a full domain level also writes 3 C^2 table rows
    (confusion_teacher, head cosines; about 300 bytes a row held): the plan counts them,
    and when they do not fit the budget, auto takes the blocked mode (no C x C table, a
    note saying why) and the run stays within the budget."""
    t, s = os.path.join(DIR, "c600t.h5"), os.path.join(DIR, "c600s.h5")
    write_dump(t, "teacher", 12, 3000, 600, (32,))
    write_dump(s, "student", 13, 3000, 600, (16,))
    args = ("split", "-t", t, "-s", s)
    _, text, _ = kt.run(*args, "--plan", check=0)  # a text run writes no C x C table
    assert "domain level full (C = 600)" in text and "table rows" not in text, text
    _, js = plan(*args)  # --plan --format json plans a JSON run
    state = lambda ps: next(p for p in ps if p["part"].startswith("the split states"))
    assert state(js)["part"].endswith("and its 3 C^2 table rows)"), js
    assert state(js)["bytes"] > 3 * 600 * 600 * 300, js
    budget = state(js)["bytes"] // 2
    row, parts = plan(*args, "--memory", str(budget))
    assert "blocked" in state(parts)["part"] and row["fits"], (row, parts)
    d = kt.run_json(*args, "--memory", str(budget))
    assert not kt.records(d, "confusion_teacher"), "C x C tables under the blocked mode"
    assert any("over the memory budget" in n for n in d["notes"]), d["notes"]
    rss = peak_rss(*args, "--memory", str(budget), "--format", "json")
    assert rss <= budget + OVERHEAD, (rss, budget)
    d = kt.run_json(*args)
    assert len(kt.records(d, "confusion_teacher")) == 600 * 600


def test_layers_plan_counts_the_class_rows_and_the_run_checks_it():
    """layers' class-spectra subsample takes min(count, per) rows of each class, per =
    min(--per-class, N / C): the plan reads /labels to count them (7000, 600, 300, 100
    samples: 2000 + 600 + 300 + 100 rows, not the 8000 a bound without the counts would
    say), and the run refuses exactly where the plan says it does not fit."""
    path = os.path.join(DIR, "classes.h5")
    write_dump(path, "teacher", 7, 8000, 4, (384,), head=False)
    with h5py.File(path, "r+") as f:
        del f["labels"]
        f["labels"] = np.repeat(np.arange(4), [7000, 600, 300, 100]).astype(np.int64)
    args = ("layers", "-t", path, "--subsample", "200", "--per-class", "5000")
    row, parts = plan(*args)
    (part,) = [p for p in parts if "class-spectra" in p["part"]]
    rows = sum(min(c, min(5000, 8000 // 4)) for c in (7000, 600, 300, 100))
    assert part["part"] == f"the {rows} class-spectra rows of one layer", part
    assert part["bytes"] == rows * (384 + 2) * 8 and part["lowered_by"] == "--per-class", part
    need = row["need_bytes"]
    for budget, fits in ((need - MIB, False), (need + MIB, True)):
        row, _ = plan(*args, "--memory", str(budget))
        assert row["fits"] is fits, (budget, row)
        st, out, err = kt.run(*args, "--memory", str(budget), "--format", "json")
        assert st == (0 if fits else 1), (budget, st, err)
        if not fits:
            kt.one_line_error(err, "kdlens layers: layers needs ", " for ", "--memory is ")
            assert out == "", out


def test_dims_refuses_before_reading_anything():
    """dims checks the need of all its jobs (the plan's) before the first job reads a head
    weight or a block: on a teacher whose logits and head weight are NaN (which any read
    fails on), a budget one byte under the plan is refused as over budget, and one at the
    plan fails on the NaN. Before, each job checked its own share after the teacher's pass
    and the head's SVD (23 s on the N = 200,000, C = 32,000 token dump)."""
    t = os.path.join(DIR, "tnanhead.h5")
    write_dump(t, "teacher", 1, 300, 5, (8, 12), nan=True)
    with h5py.File(t, "r+") as f:
        f["checkpoints/final/head/weight"][0, 0] = np.nan
    for args in (("dims", "-t", t, "-s", S), ("dims", "-t", t)):
        row, _ = plan(*args)
        st, out, err = kt.run(*args, "--memory", str(row["need_bytes"] - 1))
        assert st == 1 and out == "" and "NaN" not in err, (args, st, err)
        kt.one_line_error(err, "kdlens dims: dims needs ", " for ", "--memory is ")
        st, _, err = kt.run(*args, "--memory", str(row["need_bytes"]))
        assert st == 1 and "NaN" in err and "needs" not in err, (args, st, err)


def test_layers_quality_step_is_in_the_plan():
    """layers' quality of a layer holds, besides the subsample's class-sorted copy and Gram,
    NC1's two n x K products and the K x K eigenvectors of the K classes present (with
    LAPACKE's row-major copy and workspace), and NCM's n x K scores: with many classes they
    are the peak. 4,100 classes, 3 samples each (a class subset of 1,666 classes, 4,998
    rows), one feature layer of width 8, logits too wide for layers' CKA: the Gram is 191
    MiB, the quality step 403 MiB, which the plan counts (it counted n^2 + 2 n D + 2 D^2
    doubles, 212 MiB short here; at N = 1,000,000, C = 1,000 the run peaked 84 MiB over the
    plan). Measured with every allocated page touched: plan <= peak <= plan + OVERHEAD."""
    path = os.path.join(DIR, "many-classes.h5")
    n, c = 12300, 4100
    with h5py.File(path, "w") as f:
        f.attrs.update(kdlens_format=1, role="teacher", model="teacher")
        f["labels"] = (np.arange(n) % c).astype(np.int64)
        g = f.create_group("checkpoints/final")
        g.attrs["step"] = np.int64(1)
        x = np.random.default_rng(14).standard_normal((n, 8)).astype("f4")
        g.create_dataset("features/l0", data=x).attrs["depth"] = 0
        # Never read by layers (min(N, C) > 4096): zeros, compressed to nothing.
        g.create_dataset("logits", data=np.zeros((n, c), "f2"), chunks=(64, c),
                         compression="gzip")
    args = ("layers", "-t", path)
    row, parts = plan(*args)
    (q,) = [p for p in parts if p["part"].startswith("the quality of a layer")]
    nx = 4998
    assert q["bytes"] > (nx * nx + 2 * nx * 8 + 2 * 8 * 8) * 8 + 200 * MIB, q
    rss = peak_rss(*args, "--format", "json", perturb=True)
    print(f"  layers, 1,666 classes: plan {row['need_bytes'] / MIB:.1f} MiB, peak RSS "
          f"{rss / MIB:.1f} MiB")
    # Under ASan the peak was 3 MiB under the plan (pages of the LAPACK step its fill does
    # not reach): up to 16 MiB of the plan may stay untouched.
    assert row["need_bytes"] - 16 * MIB <= rss <= row["need_bytes"] + OVERHEAD, (row, rss)


def test_topk_state_is_in_the_plan():
    """kl --topk's job shares kl's stream; its state (statistics and scratch of C classes,
    a block's values of ntau (2 + 3 nk) slots, and a Spearman reservoir of up to 65,536
    samples of those values) is a part of kl's need: the plan grows with the number of k,
    the run's peak is within it (16 k at 8 temperatures, 269 MiB of top-k state, more than
    the overhead the check allows, 192 MiB under ASan), and a budget that fits kl alone refuses --topk, naming
    fewer --topk values."""
    base = ("kl", "-t", KT, "-s", KS, "-T", "1,2,4,8")
    row, parts = plan(*base)
    assert not any("top-k" in p["part"] for p in parts), parts
    needs = [row["need_bytes"]]
    for ks in ("1", "1,8", "1,8,32,128"):
        row, parts = plan(*base, "--topk", ks)
        top = [p for p in parts if p["part"].startswith("the top-k ")]
        assert len(top) == 2 and all("fewer --topk values" in p["lowered_by"] for p in top), top
        assert row["need_bytes"] == sum(p["bytes"] for p in parts), (row, parts)
        needs.append(row["need_bytes"])
    assert needs == sorted(needs) and len(set(needs)) == len(needs), needs
    args = ("kl", "-t", KT, "-s", KS, "-T", "1,1.5,2,3,4,6,8,12",
            "--topk", ",".join(str(k) for k in range(1, 17)))
    row, parts = plan(*args)
    top = sum(p["bytes"] for p in parts if p["part"].startswith("the top-k "))
    assert top > OVERHEAD, (top, parts)
    rss = peak_rss(*args, "--format", "json", perturb=True)
    print(f"  kl --topk (16 k, 8 temperatures): plan {row['need_bytes'] / MIB:.1f} MiB (top-k "
          f"{top / MIB:.1f} MiB), peak RSS {rss / MIB:.1f} MiB")
    # The reservoir grows by reallocation, whose new pages no fill touches: up to 16 MiB of
    # the plan's room may stay untouched (measured: 7 MiB).
    assert row["need_bytes"] - 16 * MIB <= rss <= row["need_bytes"] + OVERHEAD, (row, rss)
    # 100 MiB: kl alone fits (its blocks shrink to a sixteenth), the top-k reservoir does not.
    budget = str(100 * MIB)
    assert plan(*base, "--memory", budget)[0]["fits"] is True
    assert plan(*args, "--memory", budget)[0]["fits"] is False
    st, out, err = kt.run(*args, "--memory", budget, "--format", "json")
    assert st == 1 and out == "", (st, out[:200], err)
    kt.one_line_error(err, "kdlens kl: kl needs ", " for the top-k Spearman reservoir of ",
                      "lower it with --spearman-samples or fewer --topk values, or raise")


def test_small_budget_reads_smaller_blocks_same_numbers():
    """Under 1 GiB the blocks take a sixteenth of --memory: more, smaller blocks, the same
    results up to the order of the sums."""
    big, parts = plan("kl", "-t", KT, "-s", KS)
    small, sparts = plan("kl", "-t", KT, "-s", KS, "--memory", "64M")
    blocks = lambda ps: next(p for p in ps if p["part"].startswith("blocks of "))
    assert blocks(sparts)["bytes"] < blocks(parts)["bytes"] and small["fits"]
    assert blocks(sparts)["bytes"] <= 4 * MIB + 2 * MIB  # 64M / 16 and the chunk caches
    a = kt.run_json("kl", "-t", KT, "-s", KS)
    b = kt.run_json("kl", "-t", KT, "-s", KS, "--memory", "64M")
    for x, y in zip(kt.records(a, "kl"), kt.records(b, "kl")):
        for k, v in x.items():
            if isinstance(v, float):
                kt.assert_close(y[k], v, rtol=1e-9, atol=1e-12, what=k)
            else:
                assert y[k] == v, (k, v, y[k])


if __name__ == "__main__":
    kt.main(globals())
