#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Reference checks of kdl-synth (datasets/synth.h) with h5py + numpy.

Runs the kdl-synth binary (path in $KDL_SYNTH) with several option sets and
checks the dumps against independent numpy float64 computations: the schema
(attributes, shapes, dtypes including float16, chunking, gzip), the head
identity z = W h + b, the cross-entropy gradients, the spatial and token
layouts, the planted rank, class separation growing with depth, the student
approaching the teacher, the sample-id join of a permuted student, seeding,
and the program's error paths.

Run with /usr/bin/python3 (Debian's, with numpy and h5py).  The last line is
"N passed, M failed"; the exit status is 1 when anything failed, 77 (skip)
when numpy/h5py are missing.
"""
import atexit
import os
import shutil
import subprocess
import sys

try:
    import h5py
    import numpy as np
except ImportError as e:  # pragma: no cover
    print("skip: %s" % e)
    print("0 passed, 0 failed")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

SYNTH = os.environ.get("KDL_SYNTH", "kdl-synth")
TMP = kt.tmpdir()
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
_runs = {}


def run(*args, expect=0):
    """Run kdl-synth with @args; return (returncode, stdout, stderr)."""
    p = subprocess.run([SYNTH] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=300)
    if expect is not None and p.returncode != expect:
        raise AssertionError("kdl-synth %s: exit %d (expected %d): %s"
                             % (" ".join(map(str, args)), p.returncode, expect, p.stderr.strip()))
    return p


def dumps(*opts):
    """Teacher and student paths for kdl-synth @opts (generated once per option set)."""
    key = tuple(str(o) for o in opts)
    if key not in _runs:
        d = os.path.join(TMP, "run%d" % len(_runs))
        os.mkdir(d)
        t, s = os.path.join(d, "t.h5"), os.path.join(d, "s.h5")
        p = run(*opts, t, s)
        assert p.stdout == "" and p.stderr == "", "kdl-synth printed on success"
        _runs[key] = (t, s)
    return _runs[key]


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def onehot(y, c):
    o = np.zeros((len(y), c))
    o[np.arange(len(y)), y] = 1.0
    return o


def ulp_tol(x, dtype):
    """Half an ulp of each value of @x in the store @dtype (plus subnormal slack)."""
    if dtype == np.float64:
        return 1e-13 * np.maximum(np.abs(x), 1.0)
    eps, tiny = (2.0 ** -24, 2.0 ** -149) if dtype == np.float32 else (2.0 ** -11, 2.0 ** -24)
    return eps * np.abs(x) + tiny


def between_within(h, y):
    """Between-class over within-class sum of squares."""
    mu = h.mean(axis=0)
    between = within = 0.0
    for c in np.unique(y):
        hc = h[y == c]
        mc = hc.mean(axis=0)
        between += len(hc) * np.sum((mc - mu) ** 2)
        within += np.sum((hc - mc) ** 2)
    return between / within


def checkpoints(f):
    """[(name, group)] sorted by step; the root when there is no /checkpoints."""
    if "checkpoints" not in f:
        return [("root", f)]
    cks = [(n, g) for n, g in f["checkpoints"].items()]
    return sorted(cks, key=lambda ng: int(ng[1].attrs["step"]))


def layers(g):
    """[(name, dataset)] sorted by depth."""
    return sorted(g["features"].items(), key=lambda nd: int(nd[1].attrs["depth"]))


def reduce(h):
    """Spatial ([N, C, H, W]) and token ([N, T, D]) features averaged to [N, width]."""
    if h.ndim == 4:
        return h.mean(axis=(2, 3))
    if h.ndim == 3:
        return h.mean(axis=1)
    return h


def join(teacher, student):
    """Student row of each teacher row, joined on /sample_ids."""
    ti, si = teacher["sample_ids"][...], student["sample_ids"][...]
    order = np.argsort(si)
    pos = order[np.searchsorted(si, ti, sorter=order)]
    assert np.array_equal(si[pos], ti), "sample ids do not join"
    return pos


# ---- tests ---------------------------------------------------------------------------

def test_schema_defaults():
    t, s = dumps("--n", 700, "--seed", 3)
    with h5py.File(t) as ft, h5py.File(s) as fs:
        for f, role, nck in ((ft, "teacher", 1), (fs, "student", 4)):
            assert f.attrs["kdlens_format"] == 1
            assert f.attrs["role"] == role and isinstance(f.attrs["role"], str)
            assert f.attrs["model"] == "synth-" + role
            assert f["labels"].shape == (700,) and f["labels"].dtype == np.int64
            ids = f["sample_ids"][...]
            assert f["sample_ids"].dtype == np.int64 and len(np.unique(ids)) == 700
            cks = checkpoints(f)
            assert len(cks) == nck
            for name, g in cks:
                assert g["logits"].shape == (700, 10) and g["logits"].dtype == np.float32
                assert g["logits"].chunks == (256, 10) and g["logits"].compression is None
                ls = layers(g)
                assert [int(d.attrs["depth"]) for _, d in ls] == list(range(1, len(ls) + 1))
                pen = g["head"].attrs["input"]
                assert pen == ls[-1][0]
                d = g["features"][pen].shape[1]
                assert g["head/weight"].shape == (10, d) and g["head/bias"].shape == (10,)
                assert g["head/weight"].dtype == np.float32
                assert g["gradients/logits"].shape == (700, 10)
                assert g["gradients/features"][pen].shape == (700, d)
        assert [n for n, _ in checkpoints(fs)] == ["init", "early", "middle", "final"]
        assert [int(g.attrs["step"]) for _, g in checkpoints(fs)] == [0, 1000, 2000, 3000]
        assert [int(g.attrs["epoch"]) for _, g in checkpoints(fs)] == [0, 1, 2, 3]
        assert [d.shape[1] for _, d in layers(checkpoints(ft)[0][1])] == [64, 128, 256]
        assert [d.shape[1] for _, d in layers(checkpoints(fs)[0][1])] == [32, 64, 128]
        counts = np.bincount(ft["labels"][...], minlength=10)
        assert counts.max() - counts.min() <= 1, counts


def test_dtypes_chunks_gzip():
    for dtype, npdt in (("float16", np.float16), ("float32", np.float32),
                        ("float64", np.float64)):
        t, _ = dumps("--n", 300, "--dtype", dtype, "--chunk-rows", 64, "--gzip", 4,
                     "--teacher-widths", "16,24")
        with h5py.File(t) as f:
            g = f["checkpoints/final"]
            for ds in (g["logits"], g["features/layer1"], g["gradients/logits"]):
                assert ds.dtype == npdt, (dtype, ds.dtype)
                assert ds.chunks[0] == 64 and ds.compression == "gzip"
                assert ds.compression_opts == 4
            assert g["head/weight"].dtype == npdt
            assert f["labels"].compression == "gzip"
    t, _ = dumps("--n", 300, "--chunk-rows", 0, "--teacher-widths", "16,24")
    with h5py.File(t) as f:
        ds = f["checkpoints/final/features/layer2"]
        assert ds.chunks is None and ds.compression is None
    # chunks larger than N are clamped to N
    t, _ = dumps("--n", 50, "--chunk-rows", 4096, "--teacher-widths", "8")
    with h5py.File(t) as f:
        assert f["checkpoints/final/logits"].chunks == (50, 10)


def test_gzip_does_not_change_data():
    a, _ = dumps("--n", 300, "--chunk-rows", 64, "--teacher-widths", "16,24")
    b, _ = dumps("--n", 300, "--chunk-rows", 64, "--gzip", 4, "--teacher-widths", "16,24")
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for name in ("checkpoints/final/features/layer2", "checkpoints/final/logits"):
            assert np.array_equal(fa[name][...], fb[name][...])


def check_head(f, dtype):
    y = f["labels"][...]
    for name, g in checkpoints(f):
        pen = g["head"].attrs["input"]
        h = g["features"][pen][...].astype(np.float64)
        W = g["head/weight"][...].astype(np.float64)
        b = g["head/bias"][...].astype(np.float64)
        z = g["logits"][...].astype(np.float64)
        ref = h @ W.T + b
        scale = np.abs(h) @ np.abs(W).T + np.abs(b)      # bound on the rounding of the sum
        err = np.abs(z - ref)
        tol = ulp_tol(ref, dtype) + 1e-14 * scale
        assert np.all(err <= tol), "%s: logits differ from W h + b by %g" % (name, err.max())
        gl = g["gradients/logits"][...].astype(np.float64)
        gref = softmax(z) - onehot(y, z.shape[1])
        assert np.all(np.abs(gl - gref) <= ulp_tol(gref, dtype) + 1e-15), name
        gf = g["gradients/features"][pen][...].astype(np.float64)
        fref = gl @ W
        fscale = np.abs(gl) @ np.abs(W)
        assert np.all(np.abs(gf - fref) <= ulp_tol(fref, dtype) + 1e-14 * fscale), name


def test_head_identity_float64():
    t, s = dumps("--n", 500, "--dtype", "float64", "--student-widths", "16,300")
    with h5py.File(t) as ft, h5py.File(s) as fs:
        check_head(ft, np.float64)
        check_head(fs, np.float64)
        # float64: the identity holds to float64 rounding, nothing more
        g = ft["checkpoints/final"]
        ref = g["features/layer3"][...] @ g["head/weight"][...].T + g["head/bias"][...]
        rel = np.abs(ref - g["logits"][...]).max() / np.abs(ref).max()
        assert rel < 1e-14, rel


def test_head_identity_float32_float16():
    for dtype, npdt in (("float32", np.float32), ("float16", np.float16)):
        t, s = dumps("--n", 400, "--dtype", dtype)
        with h5py.File(t) as ft, h5py.File(s) as fs:
            check_head(ft, npdt)
            check_head(fs, npdt)


def test_float16_float32_are_rounded_float64():
    """The stored values are the float64 values rounded as numpy rounds them
    (ties to even): the writer's float16 conversion is exact.  (Subnormals,
    ties and overflow are checked value by value in tests/loaders/test-h5write.c.)"""
    opts = ("--n", 600, "--teacher-widths", "40,70")
    t64, s64 = dumps(*opts, "--dtype", "float64")
    for dtype, npdt in (("float16", np.float16), ("float32", np.float32)):
        t, s = dumps(*opts, "--dtype", dtype)
        with h5py.File(t64) as a, h5py.File(t) as b:
            for name in ("checkpoints/final/features/layer1", "checkpoints/final/features/layer2",
                         "checkpoints/final/head/weight"):
                x64 = a[name][...]
                x = b[name][...]
                assert np.array_equal(x64.astype(npdt), x), (dtype, name)
        with h5py.File(s64) as a, h5py.File(s) as b:
            name = "checkpoints/middle/features/layer1"
            assert np.array_equal(a[name][...].astype(npdt), b[name][...]), (dtype, name)


def test_spatial_and_tokens_average_to_the_planted_vector():
    base = ("--n", 400, "--dtype", "float64", "--teacher-widths", "12,20,28,36")
    tf, _ = dumps(*base)
    ts, _ = dumps(*base, "--spatial", "--tokens")
    with h5py.File(tf) as a, h5py.File(ts) as b:
        ga, gb = a["checkpoints/final/features"], b["checkpoints/final/features"]
        assert gb["layer1"].shape == (400, 12, 4, 4)
        assert gb["layer3"].shape == (400, 8, 28)
        assert gb["layer1"].chunks == (256, 12, 4, 4)
        sp, tok = gb["layer1"][...], gb["layer3"][...]
        assert np.abs(sp.mean(axis=(2, 3)) - ga["layer1"][...]).max() < 1e-12
        assert np.abs(tok.mean(axis=1) - ga["layer3"][...]).max() < 1e-12
        # the positions really differ: the layout is not a broadcast
        assert sp.std(axis=(2, 3)).min() > 0.1 and tok.std(axis=1).min() > 0.1
        for name in ("layer2", "layer4"):
            assert np.array_equal(ga[name][...], gb[name][...])
        assert np.array_equal(a["checkpoints/final/logits"][...],
                              b["checkpoints/final/logits"][...])


def test_planted_rank():
    for dtype in ("float64", "float32"):
        t, _ = dumps("--n", 500, "--dtype", dtype, "--teacher-widths", "30,60,40",
                     "--planted-rank", "2:7")
        with h5py.File(t) as f:
            g = f["checkpoints/final/features"]
            for name, want in (("layer1", 30), ("layer2", 7), ("layer3", 40)):
                h = g[name][...].astype(np.float64)
                sv = np.linalg.svd(h, compute_uv=False)
                rank = np.linalg.matrix_rank(h, tol=1e-4 * sv[0])
                assert rank == want, (dtype, name, rank, want)
            # "plus tiny noise": not exactly rank 7 in float64
            if dtype == "float64":
                sv = np.linalg.svd(g["layer2"][...], compute_uv=False)
                assert sv[7] > 1e-12 * sv[0] and sv[7] < 1e-4 * sv[0], sv[6:9] / sv[0]


def test_planted_rank_on_the_head_input():
    t, s = dumps("--n", 300, "--dtype", "float64", "--teacher-widths", "20,50",
                 "--planted-rank", "2:3")
    with h5py.File(t) as f:
        h = f["checkpoints/final/features/layer2"][...]
        sv = np.linalg.svd(h, compute_uv=False)
        assert np.linalg.matrix_rank(h, tol=1e-4 * sv[0]) == 3
        check_head(f, np.float64)


def test_separation_grows_with_depth():
    t, s = dumps("--n", 1500, "--teacher-widths", "32,48,64,80,96", "--seed", 11)
    with h5py.File(t) as ft, h5py.File(s) as fs:
        y = ft["labels"][...]
        r = [between_within(reduce(d[...].astype(np.float64)), y)
             for _, d in layers(ft["checkpoints/final"])]
        assert all(a < b for a, b in zip(r, r[1:])), r
        assert r[-1] > 20 * r[0], r
        # the teacher is accurate and the student approaches it
        z = ft["checkpoints/final/logits"][...].astype(np.float64)
        pt = softmax(z)
        assert (z.argmax(axis=1) == y).mean() > 0.9
        ys = fs["labels"][...]
        kls, seps = [], []
        for _, g in checkpoints(fs):
            ps = softmax(g["logits"][...].astype(np.float64))
            kls.append(np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)))
            seps.append(between_within(g["features/layer3"][...].astype(np.float64), ys))
        assert all(a > b for a, b in zip(kls, kls[1:])), kls
        assert all(a < b for a, b in zip(seps, seps[1:])), seps


def test_superclasses_show_in_the_teacher_probabilities():
    """Classes sharing a super-class centre get more of the non-target mass."""
    t, _ = dumps("--n", 1200, "--classes", 12, "--superclasses", 3)
    with h5py.File(t) as f:
        y = f["labels"][...]
        p = softmax(f["checkpoints/final/logits"][...].astype(np.float64))
        same = (np.arange(12)[None, :] % 3) == (y[:, None] % 3)
        same[np.arange(len(y)), y] = False
        other = ~same
        other[np.arange(len(y)), y] = False
        assert p[same].mean() > 3 * p[other].mean(), (p[same].mean(), p[other].mean())


def test_permuted_student_joins_on_sample_ids():
    base = ("--n", 700, "--dtype", "float64", "--chunk-rows", 100, "--seed", 5)
    t1, s1 = dumps(*base)
    t2, s2 = dumps(*base, "--permute-student")
    with h5py.File(t1) as ta, h5py.File(s1) as sa, h5py.File(t2) as tb, h5py.File(s2) as sb:
        assert np.array_equal(ta["sample_ids"][...], tb["sample_ids"][...])
        pos_a, pos_b = join(ta, sa), join(tb, sb)
        assert np.array_equal(pos_a, np.arange(700))
        assert not np.array_equal(pos_b, np.arange(700)), "student not permuted"
        assert np.array_equal(sb["labels"][...][pos_b], tb["labels"][...])
        for name in ("checkpoints/init/features/layer1", "checkpoints/final/features/layer3",
                     "checkpoints/middle/logits", "checkpoints/final/gradients/logits"):
            x, z = sa[name][...][pos_a], sb[name][...][pos_b]
            assert np.allclose(x, z, rtol=1e-12, atol=1e-13), name
        assert np.array_equal(sa["checkpoints/final/head/weight"][...],
                              sb["checkpoints/final/head/weight"][...])


def test_no_sample_ids_and_flat_teacher():
    t, s = dumps("--n", 200, "--no-sample-ids", "--flat-teacher", "--checkpoints", 2)
    with h5py.File(t) as ft, h5py.File(s) as fs:
        assert "sample_ids" not in ft and "sample_ids" not in fs
        assert "checkpoints" not in ft
        assert ft.attrs["kdlens_format"] == 1 and "step" in ft.attrs
        assert ft["logits"].shape == (200, 10) and ft["head"].attrs["input"] == "layer3"
        assert [n for n, _ in checkpoints(fs)] == ["init", "final"]
        check_head(ft, np.float32)


def test_checkpoint_names():
    for k, names in ((1, ["final"]), (3, ["init", "middle", "final"]),
                     (5, ["init", "early", "middle", "late", "final"]),
                     (7, ["init", "ckpt1", "ckpt2", "ckpt3", "ckpt4", "ckpt5", "final"])):
        _, s = dumps("--n", 40, "--checkpoints", k, "--teacher-widths", "6",
                     "--student-widths", "5")
        with h5py.File(s) as f:
            cks = checkpoints(f)
            assert [n for n, _ in cks] == names, [n for n, _ in cks]
            steps = [int(g.attrs["step"]) for _, g in cks]
            assert steps == sorted(set(steps)) and steps[0] == 0


def test_same_seed_same_bytes_different_seed_different_data():
    a = dumps("--n", 300, "--seed", 42, "--gzip", 1)
    d = os.path.join(TMP, "again")
    os.mkdir(d)
    b = (os.path.join(d, "t.h5"), os.path.join(d, "s.h5"))
    run("--n", 300, "--seed", 42, "--gzip", 1, *b)
    for x, y in zip(a, b):
        with open(x, "rb") as fx, open(y, "rb") as fy:
            assert fx.read() == fy.read(), "same seed, different bytes: %s" % y
    c = dumps("--n", 300, "--seed", 43, "--gzip", 1)
    with h5py.File(a[0]) as fa, h5py.File(c[0]) as fc, h5py.File(a[1]) as sa, \
            h5py.File(c[1]) as sc:
        for f, g, name in ((fa, fc, "checkpoints/final/features/layer1"),
                           (fa, fc, "labels"),
                           (sa, sc, "checkpoints/init/features/layer2")):
            assert not np.array_equal(f[name][...], g[name][...]), name


def test_no_gradients_leaves_out_only_the_gradients():
    opts = ("--n", 300, "--classes", 12, "--dtype", "float16", "--checkpoints", 2,
            "--permute-student", "--teacher-widths", "16,24", "--student-widths", "8,12")
    full = dumps(*opts)
    lean = dumps(*opts, "--no-gradients")
    for a, b in zip(full, lean):
        names = []
        with h5py.File(a) as fa:
            fa.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        with h5py.File(a) as fa, h5py.File(b) as fb:
            kept = [n for n in names if "/gradients/" not in n]
            assert len(kept) < len(names)
            for n in names:
                assert (n in fb) == (n in kept), n
            for n in kept:
                assert np.array_equal(fa[n][...], fb[n][...]), n
            for _, g in checkpoints(fb):
                assert "gradients" not in g


def test_block_size_does_not_change_the_data():
    a = dumps("--n", 333, "--dtype", "float64", "--chunk-rows", 0)
    b = dumps("--n", 333, "--dtype", "float64", "--chunk-rows", 0, "--block-rows", 7)
    with h5py.File(a[0]) as fa, h5py.File(b[0]) as fb:
        for name in ("labels", "checkpoints/final/features/layer1",
                     "checkpoints/final/logits"):
            assert np.allclose(fa[name][...], fb[name][...], rtol=1e-12, atol=1e-13), name


def test_usage_errors():
    out = os.path.join(TMP, "usage")
    os.mkdir(out)
    t, s = os.path.join(out, "t.h5"), os.path.join(out, "s.h5")
    bad = [
        ["--n", "0"], ["--n", "-3"], ["--n", "12x"], ["--classes", "1"],
        ["--teacher-widths", ""], ["--teacher-widths", "8,,9"], ["--teacher-widths", "8,0"],
        ["--student-widths", ",".join(["4"] * 17)], ["--dtype", "int8"], ["--dtype", "half"],
        ["--gzip", "10"], ["--gzip", "3", "--chunk-rows", "0"], ["--planted-rank", "2"],
        ["--planted-rank", "9:2"], ["--planted-rank", "1:65"], ["--planted-rank", "0:3"],
        ["--checkpoints", "0"], ["--checkpoints", "17"], ["--spatial", "--teacher-widths", "8"],
        ["--spatial", "--tokens", "--teacher-widths", "8,9"],
        ["--permute-student", "--no-sample-ids"], ["--superclasses", "11"],
        ["--noise", "nan"], ["--noise", "-1"], ["--seed", "x"], ["--bogus"], ["--n"],
    ]
    for args in bad:
        p = run(*args, t, s, expect=None)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("kdl-synth: "), (args, p.stderr)
        assert p.stdout == "", args
    for files in ([], [t], [t, s, t], [t, t]):
        p = run(*files, expect=2)
        assert len(p.stderr.splitlines()) == 1
    assert os.listdir(out) == [], os.listdir(out)
    p = run("--help", expect=0)
    assert p.stdout.startswith("usage: kdl-synth") and p.stderr == ""


def test_unwritable_paths_fail_cleanly():
    out = os.path.join(TMP, "unwritable")
    os.mkdir(out)
    t, s = os.path.join(out, "t.h5"), os.path.join(out, "s.h5")
    # the teacher's directory does not exist
    p = run("--n", 50, os.path.join(out, "missing", "t.h5"), s, expect=1)
    assert "No such file or directory" in p.stderr and len(p.stderr.splitlines()) == 1
    # the student's path is a directory: the teacher must not be left behind
    os.mkdir(os.path.join(out, "dir.h5"))
    p = run("--n", 50, t, os.path.join(out, "dir.h5"), expect=1)
    assert len(p.stderr.splitlines()) == 1, p.stderr
    assert sorted(os.listdir(out)) == ["dir.h5"], os.listdir(out)
    # an existing file survives a failed run
    with open(t, "w") as f:
        f.write("precious")
    run("--n", 50, t, os.path.join(out, "nope", "s.h5"), expect=1)
    p = run("--n", 50, t, os.path.join(out, "dir.h5"), expect=1)
    assert "Is a directory" in p.stderr
    with open(t) as f:
        assert f.read() == "precious"
    assert sorted(os.listdir(out)) == ["dir.h5", "t.h5"], os.listdir(out)


def test_topk_logits():
    # --topk K: the K largest stored logits of each row, best first (ties to the
    # smaller class), their values exactly, and the log-normaliser of the row;
    # the student is as without it, and kdlens reads the dump.
    for dtype, k in [("float64", 7), ("float16", 20)]:
        t, s = dumps("--n", 300, "--classes", 40, "--dtype", dtype, "--topk", k,
                     "--chunk-rows", 64, "--no-gradients")
        with h5py.File(t, "r") as f:
            g = f["checkpoints/final"]
            z = g["logits"][...].astype(np.float64)
            ix = g["logits_topk/indices"][...]
            assert ix.dtype == np.int32 and ix.shape == (300, k), (ix.dtype, ix.shape)
            order = np.lexsort((np.tile(np.arange(40), (300, 1)), -z), axis=1)[:, :k]
            assert (ix == order).all()
            v = g["logits_topk/values"]
            assert v.dtype == np.dtype(dtype)
            assert (v[...].astype(np.float64) == np.take_along_axis(z, order, 1)).all()
            m = z.max(1)
            lse = m + np.log(np.exp(z - m[:, None]).sum(1))
            kt.assert_close(np.abs(g["logits_topk/logsumexp"][...] - lse).max(), 0.0, 0,
                            1e-12, "logsumexp")
        t0, s0 = dumps("--n", 300, "--classes", 40, "--dtype", dtype, "--chunk-rows", 64,
                       "--no-gradients")
        with h5py.File(s, "r") as a, h5py.File(s0, "r") as b:
            assert (a["checkpoints/final/logits"][...] == b["checkpoints/final/logits"][...]).all()
        kt.run("inspect", t, check=0)
    p = run("--classes", 10, "--topk", 11, os.path.join(TMP, "x.h5"), os.path.join(TMP, "y.h5"),
            expect=None)
    assert p.returncode != 0 and "--topk 11" in p.stderr, p.stderr



def test_sequence_length_writes_tokens():
    """--sequence-length L: sample i is at position i mod L of sequence i / L, in both dumps,
    each in its own row order; without it neither dataset is written."""
    t, s = dumps("--n", 250, "--sequence-length", 40, "--permute-student", "--no-gradients")
    with h5py.File(t) as ft, h5py.File(s) as fs:
        for f in (ft, fs):
            i = (f["sample_ids"][...] - 1000) // 3  # kdl-synth's ids are 1000 + 3 i
            assert f["sequence_ids"].dtype == np.int64 and f["positions"].dtype == np.int32
            assert (f["sequence_ids"][...] == i // 40).all() and (f["positions"][...] == i % 40).all()
        assert not (fs["positions"][...] == ft["positions"][...]).all()  # another row order
        assert np.bincount(ft["sequence_ids"][...]).tolist() == [40] * 6 + [10]
    t0, _ = dumps("--n", 50)
    with h5py.File(t0) as f:
        assert "positions" not in f and "sequence_ids" not in f
    p = run("--n", 10, "--sequence-length", 11, os.path.join(TMP, "x.h5"),
            os.path.join(TMP, "y.h5"), expect=None)
    assert p.returncode == 2 and "--sequence-length 11" in p.stderr, p.stderr


if __name__ == "__main__":
    kt.main(globals())
