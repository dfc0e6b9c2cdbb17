# SPDX-License-Identifier: MIT
"""Tests of the kdlens Python package (python/kdlens), run in place from this
checkout with /usr/bin/python3.

The in-memory entry points must give what the commands give: numpy arrays are
written as dumps with h5py (float16, float32 and float64, rank 2 and 4), the
command runs on them, and kdlens.cka / kdlens.kl on the very arrays that were
written (in C, Fortran and strided layouts) must agree to 1e-12.

Environment (set by tests/meson.build): KDLENS (the program), KDLENS_LIB (the
library), KDL_ABI_PROBE (tests/python/package-abi.c, built against the headers).
"""
import ctypes
import json
import os
import subprocess
import sys

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(ROOT, "python"))
import kdltest  # noqa: E402
from kdltest import assert_close, tmpdir  # noqa: E402

import kdlens  # noqa: E402
from kdlens import _lib, metrics  # noqa: E402

TOL = 1e-12


def write_dump(path, layers, logits, labels, role=None):
    """A one-checkpoint dump (schema v1, the root is the checkpoint) holding
    @layers {name: array} in the given order of depth, as stored."""
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        if role:
            f.attrs["role"] = role
        f["labels"] = labels
        f["sample_ids"] = np.arange(len(labels), dtype=np.int64)
        f["logits"] = logits
        for depth, (name, x) in enumerate(layers.items()):
            f["features/" + name] = x
            f["features/" + name].attrs["depth"] = depth
    return path


def close(actual, expected, what):
    if np.isnan(expected):
        if not np.isnan(actual):
            raise AssertionError(f"{what}: got {actual!r}, expected NaN")
        return
    assert_close(actual, expected, rtol=TOL, atol=TOL, what=what)


def layers_data(n=300, seed=0):
    """Correlated layers of every stored type: float32 [n, 20], float64
    [n, 12], float16 [n, 4, 3, 3] (reduced by --spatial avg), float32 logits."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 6))
    x = (base @ rng.normal(size=(6, 20)) + 0.5 * rng.normal(size=(n, 20))).astype(np.float32)
    y = base[:, :4] @ rng.normal(size=(4, 12)) + rng.normal(size=(n, 12)) + 30.0
    z = (base[:, :4, None, None] + 0.3 * rng.normal(size=(n, 4, 3, 3))).astype(np.float16)
    logits = (base @ rng.normal(size=(6, 5))).astype(np.float32)
    labels = rng.integers(0, 5, n)
    return {"x": x, "y": y, "z": z}, logits, labels


def cli_pairs(doc, key):
    """{(layer_a, layer_b): value} of the cka_pairs table."""
    return {(r["layer_a"], r["layer_b"]): r.get(key) for r in doc.records("cka_pairs")}


def check_matrix(ours, names, cli, what):
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            v = cli[(a, b)]
            close(ours[i, j], np.nan if v is None else v, f"{what} {a}-{b}")


# ---- the library's structures --------------------------------------------------------------

def test_ctypes_structures_match_the_headers():
    probe = json.loads(subprocess.run([os.environ["KDL_ABI_PROBE"]], capture_output=True,
                                      text=True, check=True).stdout)
    for name, cls in _lib.STRUCTS.items():
        fields = {f: [getattr(cls, f).offset, getattr(cls, f).size] for f, _ in cls._fields_}
        want = probe[name]
        if fields != want["fields"] or ctypes.sizeof(cls) != want["sizeof"]:
            raise AssertionError(f"{name}: ctypes {fields} (sizeof {ctypes.sizeof(cls)}), "
                                 f"headers {want}")
    ours = {k: getattr(_lib, k) for k in probe["constants"]}
    if ours != probe["constants"]:
        raise AssertionError(f"constants: ctypes {ours}, headers {probe['constants']}")


# ---- CKA against the command ---------------------------------------------------------------

def test_cka_equals_the_command():
    layers, logits, labels = layers_data()
    path = write_dump(os.path.join(tmpdir(), "a.h5"), layers, logits, labels)
    doc = kdlens.run("cka", teacher=path)
    names = ["x", "y", "z", "logits"]
    # The arrays as written, in other layouts: Fortran order, a strided view.
    x = np.asfortranarray(layers["x"])
    wide = np.zeros((layers["y"].shape[0], 24))
    wide[:, ::2] = layers["y"]
    y = wide[:, ::2]
    ours = [x, y, layers["z"], logits]
    check_matrix(kdlens.cka_matrix(ours), names, cli_pairs(doc, "cka_linear"), "linear")
    check_matrix(kdlens.cka_matrix(ours, estimator="debiased"), names,
                 cli_pairs(doc, "cka_linear_debiased"), "debiased")
    close(kdlens.cka(x, y), cli_pairs(doc, "cka_linear")[("x", "y")], "cka(x, y)")
    # The table "cka" shows the chosen matrix.
    shown = {r["layer"]: r for r in doc.records("cka")}
    close(kdlens.cka(layers["z"], logits), shown["z"]["logits"], "cka table z-logits")


def test_cka_rbf_and_minibatch_equal_the_command():
    layers, logits, labels = layers_data(n=260, seed=1)
    path = write_dump(os.path.join(tmpdir(), "a.h5"), layers, logits, labels)
    ours = [layers["x"], layers["y"], layers["z"], logits]
    names = ["x", "y", "z", "logits"]
    rbf = kdlens.run("cka", teacher=path, kernel="rbf", theta=0.7)
    check_matrix(kdlens.cka_matrix(ours, kernel="rbf", theta=0.7), names,
                 cli_pairs(rbf, "cka_rbf"), "rbf")
    check_matrix(kdlens.cka_matrix(ours, kernel="rbf", theta=0.7, estimator="debiased"), names,
                 cli_pairs(rbf, "cka_rbf_debiased"), "rbf debiased")
    mb = kdlens.run("cka", teacher=path, estimator="minibatch", batch=64, seed=5)
    check_matrix(kdlens.cka_matrix(ours, estimator="minibatch", batch=64, seed=5), names,
                 cli_pairs(mb, "cka_minibatch"), "minibatch")


def test_cka_gram_space_equals_the_command():
    """A layer wider than the samples: the command and kdlens.cka use Gram space."""
    rng = np.random.default_rng(2)
    n = 40
    layers = {"wide": rng.normal(size=(n, 64)), "narrow": rng.normal(size=(n, 3))}
    logits = rng.normal(size=(n, 4))
    path = write_dump(os.path.join(tmpdir(), "a.h5"), layers, logits, rng.integers(0, 4, n))
    doc = kdlens.run("cka", teacher=path)
    if {r["method"] for r in doc.records("cka_pairs")} != {"gram"}:
        raise AssertionError("expected the command to use Gram space")
    ours = [layers["wide"], layers["narrow"], logits]
    names = ["wide", "narrow", "logits"]
    check_matrix(kdlens.cka_matrix(ours), names, cli_pairs(doc, "cka_linear"), "gram linear")
    check_matrix(kdlens.cka_matrix(ours, estimator="debiased"), names,
                 cli_pairs(doc, "cka_linear_debiased"), "gram debiased")


def test_cka_two_dumps_equals_the_command():
    """kdlens cka A.h5 B.h5 pairs A's layers with B's."""
    layers, logits, labels = layers_data(n=120, seed=3)
    rng = np.random.default_rng(4)
    other = {"s": layers["x"][:, :7] + rng.normal(size=(120, 7)).astype(np.float32)}
    d = tmpdir()
    a = write_dump(os.path.join(d, "a.h5"), layers, logits, labels, role="teacher")
    b = write_dump(os.path.join(d, "b.h5"), other, logits[:, ::-1], labels, role="student")
    doc = kdlens.run("cka", teacher=a, students=[b])
    pairs = cli_pairs(doc, "cka_linear")
    close(kdlens.cka(layers["x"], other["s"]), pairs[("x", "s")], "x-s")
    close(kdlens.cka(layers["z"], logits[:, ::-1]), pairs[("z", "logits")], "z-logits of B")


# ---- the KD criterion against the command --------------------------------------------------

def kl_data(n, c=10, seed=0):
    rng = np.random.default_rng(seed)
    zt = (3 * rng.normal(size=(n, c))).astype(np.float16)
    zs = (zt.astype(np.float64) + rng.normal(size=(n, c))).astype(np.float32)
    return zt, zs, rng.integers(0, c, n)


def check_kl(ours, cli_rows, what):
    cli = {(r["tau"], r["approximation"]): r for r in cli_rows if r["available"]}
    mine = {(r["tau"], r["approximation"]): r for r in ours.rows}
    if set(cli) != set(mine):
        raise AssertionError(f"{what}: rows {sorted(mine)}, the command's {sorted(cli)}")
    for key, r in mine.items():
        for k in ("mean", "ratio", "pearson", "spearman", "relerr"):
            close(r[k], cli[key][k], f"{what} {key} {k}")
        for k in ("source", "dim", "samples", "spearman_samples"):
            if r[k] != cli[key][k]:
                raise AssertionError(f"{what} {key} {k}: {r[k]!r}, the command's {cli[key][k]!r}")


def test_kl_equals_the_command():
    zt, zs, labels = kl_data(700)
    d = tmpdir()
    t = write_dump(os.path.join(d, "t.h5"), {}, zt, labels, role="teacher")
    s = write_dump(os.path.join(d, "s.h5"), {}, zs, labels, role="student")
    per = os.path.join(d, "per.h5")
    doc = kdlens.run("kl", teacher=t, students=[s], T=[1, 4], per_sample=per)
    ours = kdlens.kl(np.asfortranarray(zt), zs, tau=[1, 4], per_sample=True)
    check_kl(ours, doc.records("kl"), "kl")
    close(float(kdlens.kl(zt, zs, tau=4)), ours.mean("kl", 4.0), "float(kl(tau=4))")
    # The per-sample values equal the --per-sample file's.
    file = kdlens.read_per_sample(per)
    for itau, tau in enumerate((1, 4)):
        for name, values in ours.per_sample.items():
            stored = file.datasets[f"students/0/checkpoints/root/{name}"][:, itau]
            np.testing.assert_allclose(values[:, itau], stored, rtol=TOL, atol=TOL)


def test_kl_spearman_subsample_equals_the_command():
    """Past the reservoir, the seeded subsample is the command's (same sample keys)."""
    zt, zs, labels = kl_data(900, c=6, seed=1)
    d = tmpdir()
    t = write_dump(os.path.join(d, "t.h5"), {}, zt, labels, role="teacher")
    s = write_dump(os.path.join(d, "s.h5"), {}, zs, labels, role="student")
    doc = kdlens.run("kl", teacher=t, students=[s], T=2, spearman_samples=100, seed=9)
    ours = kdlens.kl(zt, zs, tau=2, reservoir=100, seed=9, block_rows=128)
    check_kl(ours, doc.records("kl"), "kl reservoir")


# ---- streaming, layouts, errors ------------------------------------------------------------

def test_streams_equal_the_arrays():
    layers, logits, _ = layers_data(n=333, seed=5)
    x, z = layers["x"], layers["z"]
    cuts = [0, 1, 50, 51, 200, 333]
    blocks = [(x[a:b], z[a:b]) for a, b in zip(cuts, cuts[1:])]
    for est in ("biased", "debiased"):
        close(kdlens.cka_stream(iter(blocks), estimator=est), kdlens.cka(x, z, estimator=est),
              f"cka_stream {est}")
    zt, zs, _ = kl_data(333, seed=6)
    streamed = kdlens.kl_stream(((zt[a:b], zs[a:b]) for a, b in zip(cuts, cuts[1:])),
                                tau=[2, 4], per_sample=True)
    whole = kdlens.kl(zt, zs, tau=[2, 4], per_sample=True)
    for a, b in zip(streamed.rows, whole.rows):
        for k in ("mean", "ratio", "pearson", "spearman", "relerr"):
            close(a[k], b[k], f"kl_stream {a['approximation']} {k}")
    for name in whole.per_sample:
        np.testing.assert_allclose(streamed.per_sample[name], whole.per_sample[name], rtol=TOL)


def test_minibatch_stream_takes_each_block_as_a_batch():
    layers, logits, _ = layers_data(n=256, seed=7)
    x, y = layers["x"], layers["y"]
    order = metrics._minibatch_order(256, 0)
    blocks = [(x[order[i:i + 64]], y[order[i:i + 64]]) for i in range(0, 256, 64)]
    close(kdlens.cka_stream(blocks, estimator="minibatch"),
          kdlens.cka(x, y, estimator="minibatch", batch=64), "minibatch stream")


def test_float64_views_are_not_copied():
    a = np.random.default_rng(8).normal(size=(50, 30))
    for view in (a, np.asfortranarray(a), a[:, ::3], a[::2], a.T.T):
        if not np.shares_memory(metrics._double(view, "avg"), view):
            raise AssertionError(f"a float64 view with strides {view.strides} was copied")
    # Other types are converted one block at a time: the same values.
    close(kdlens.cka(a.astype(np.float32), a[:, :7]),
          kdlens.cka(a.astype(np.float32).astype(np.float64), a[:, :7]), "float32 converted")


def test_bad_inputs_raise_value_errors():
    a = np.random.default_rng(9).normal(size=(20, 3))
    bad = a.copy()
    bad[7, 1] = np.nan
    for call, needle in [(lambda: kdlens.cka(a, a[:19]), "rows"),
                         (lambda: kdlens.cka(a, bad), "sample 7"),
                         (lambda: kdlens.cka(a, a.astype(int)), "float"),
                         (lambda: kdlens.cka(a, a, kernel="poly"), "kernel"),
                         (lambda: kdlens.cka(a, a, kernel="rbf", estimator="minibatch"), "linear"),
                         (lambda: kdlens.cka(a, a, estimator="minibatch", batch=64), "batch"),
                         (lambda: kdlens.kl(a, a[:, :2]), "shape"),
                         (lambda: kdlens.kl(a, a, tau=-1), "temperature")]:
        try:
            call()
        except (ValueError, TypeError) as e:
            if needle not in str(e):
                raise AssertionError(f"expected {needle!r} in {e!r}")
        else:
            raise AssertionError(f"no error (expected one about {needle!r})")


# ---- run(), its tables, the per-sample reader ----------------------------------------------

def test_run_tables_and_errors():
    layers, logits, labels = layers_data(n=80, seed=10)
    path = write_dump(os.path.join(tmpdir(), "a.h5"), layers, logits, labels)
    doc = kdlens.run("inspect", path, quick=True)
    if doc.command != "inspect" or not doc.tables:
        raise AssertionError(f"unexpected document {doc!r}")
    frame = kdlens.run("cka", teacher=path).table("cka_pairs")
    import pandas
    if not isinstance(frame, pandas.DataFrame) or len(frame) != 16:
        raise AssertionError(f"expected a DataFrame of 16 rows, got {frame!r}")
    try:
        kdlens.run("cka", teacher=path, kernel="poly")
    except kdlens.CLIError as e:
        if e.status != 2 or "poly" not in str(e):
            raise AssertionError(f"unexpected {e!r} (status {e.status})")
    else:
        raise AssertionError("a bad option did not raise")
    try:
        kdlens.run("kl", teacher=path + ".missing", students=[path])
    except kdlens.CLIError as e:
        if e.status != 1 or ".missing" not in str(e):
            raise AssertionError(f"unexpected {e!r} (status {e.status})")
    else:
        raise AssertionError("a missing dump did not raise")


def test_tables_are_lists_of_dicts_without_pandas():
    code = ("import sys; sys.modules['pandas'] = None\n"
            "import kdlens, numpy as np\n"
            "r = kdlens.kl(np.eye(3) * 2, np.ones((3, 3)), tau=1)\n"
            "t = r.table(); assert isinstance(t, list) and t[0]['approximation'] == 'kl', t\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "python")})
    if out.returncode != 0 or out.stdout.strip() != "ok":
        raise AssertionError(out.stderr)


def test_read_per_sample_of_split():
    zt, zs, labels = kl_data(50, c=4, seed=11)
    d = tmpdir()
    t = write_dump(os.path.join(d, "t.h5"), {}, zt, labels, role="teacher")
    s = write_dump(os.path.join(d, "s.h5"), {}, zs, labels, role="student")
    per = os.path.join(d, "split.h5")
    kdlens.run("split", teacher=t, students=[s], T=[1, 4], per_sample=per)
    file = kdlens.read_per_sample(per)
    table = file.table()
    if len(table) != 100 or "kl" not in table.columns or sorted(set(table["tau"])) != [1, 4]:
        raise AssertionError(f"unexpected per-sample table {table!r}")
    # one row per sample and temperature, the file's values in its order
    four = table[table["tau"] == 4]
    np.testing.assert_array_equal(four["kl"].to_numpy(),
                                  file.datasets["students/0/checkpoints/root/kl"][:, 1])
    np.testing.assert_array_equal(four["label"].to_numpy(), labels)


# ---- the package itself --------------------------------------------------------------------

def test_import_needs_neither_torch_nor_the_library():
    code = ("import sys, kdlens\n"
            "assert 'torch' not in sys.modules and kdlens._lib._lib is None\n"
            "print(kdlens.__version__)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("KDLENS", "KDLENS_LIB")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "PYTHONPATH": os.path.join(ROOT, "python")})
    if out.returncode != 0:
        raise AssertionError(out.stderr)
    program = subprocess.run([os.environ["KDLENS"], "--version"], capture_output=True,
                             text=True).stdout.split()[-1]
    if out.stdout.strip() != program:
        raise AssertionError(f"package version {out.stdout.strip()}, kdlens {program}")


def test_library_lookup_order():
    code = "import kdlens; print(kdlens.library_path()); print(kdlens.binary_path())"
    env = {k: v for k, v in os.environ.items() if k not in ("KDLENS", "KDLENS_LIB")}
    env["PYTHONPATH"] = os.path.join(ROOT, "python")
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "KDLENS_LIB": "/nonexistent/libkdlens.so"})
    if bad.returncode == 0 or "KDLENS_LIB=/nonexistent/libkdlens.so" not in bad.stderr:
        raise AssertionError(f"a bad KDLENS_LIB was not refused: {bad.stderr}")
    good = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "KDLENS_LIB": os.environ["KDLENS_LIB"],
                               "KDLENS": os.environ["KDLENS"]})
    want = [os.path.abspath(os.environ["KDLENS_LIB"]), os.path.abspath(os.environ["KDLENS"])]
    if good.stdout.split() != want:
        raise AssertionError(f"expected {want}, got {good.stdout!r} {good.stderr}")


def test_export_shim_is_the_package_module():
    try:
        import torch  # noqa: F401
    except ImportError:
        print("  (python3-torch is not installed: the shim is not imported)")
        return
    sys.path.insert(0, os.path.join(ROOT, "datasets"))
    import kdl_export
    if kdl_export is not kdlens.export or not callable(kdl_export.export_checkpoint):
        raise AssertionError("datasets/kdl_export.py is not kdlens.export")


kdltest.main(globals())
