#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""datasets/fmnist_depth.py in --quick mode writes a teacher dump with eleven
feature layers in depth order that kdlens loads and ranks.  Skipped (77)
without python3-torch or dataset-fashion-mnist (CI installs both)."""
import json
import math
import os
import subprocess
import sys

import h5py

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SCRIPT = os.path.join(ROOT, "datasets", "fmnist_depth.py")
LAYERS = [f"blocks.{i}" for i in range(10)] + ["penult"]
OUT = None


def setup():
    global OUT
    OUT = os.path.join(kt.tmpdir(), "deep")
    p = subprocess.run(["/usr/bin/python3", SCRIPT, "--quick", "--samples", "300", "--out", OUT],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]


def test_dump_has_eleven_layers_in_depth_order():
    path = os.path.join(OUT, "teacher_deep.h5")
    assert sorted(os.listdir(OUT)) == ["provenance.json", "teacher_deep.h5"], os.listdir(OUT)
    doc = kt.run_json("inspect", path)
    assert not kt.records(doc, "problems")
    cks = {r["checkpoint"]: r for r in kt.records(doc, "checkpoints")}
    assert set(cks) == {"init", "final"}, cks
    assert all(r["feature_layers"] == 11 and r["head_input"] == "penult" for r in cks.values())
    with h5py.File(path, "r") as f:
        feats = f["checkpoints/final/features"]
        depth = {name: int(feats[name].attrs["depth"]) for name in feats}
        widths = {name: feats[name].shape[1] for name in feats}
        assert f["labels"].shape == (300,)
    assert sorted(depth, key=depth.get) == LAYERS, depth
    assert [widths[n] for n in LAYERS] == [32, 32, 64, 64] + [128] * 7, widths
    prov = json.load(open(os.path.join(OUT, "provenance.json")))
    assert prov["train_images"] == 1000 and prov["epochs"] == 1, prov
    assert 0.0 <= prov["test_accuracy"] <= 1.0, prov


def test_layers_ranks_all_eleven():
    doc = kt.run_json("layers", "-t", os.path.join(OUT, "teacher_deep.h5"), "-k", "3")
    rows = kt.records(doc, "layers")
    assert sorted(r["layer"] for r in rows) == sorted(LAYERS), rows
    assert [r["rank"] for r in rows] == list(range(1, 12))
    qs = [r["q"] for r in rows]
    assert all(math.isfinite(q) for q in qs) and qs == sorted(qs, reverse=True), qs
    rec = kt.records(doc, "layers_recommended")
    assert len(rec) == 3
    assert [r["depth"] for r in rec] == sorted(r["depth"] for r in rec)


def test_bad_options_and_missing_data_fail_cleanly():
    out = os.path.join(kt.tmpdir(), "bad")
    p = subprocess.run(["/usr/bin/python3", SCRIPT, "--out", out, "--epochs", "0"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--epochs must be at least 1" in p.stderr, p.stderr
    empty = kt.tmpdir()
    p = subprocess.run(["/usr/bin/python3", SCRIPT, "--out", out, "--data", empty],
                       capture_output=True, text=True, timeout=60)
    kt.one_line_error(p.stderr, empty, "train-images-idx3-ubyte.gz")
    assert p.returncode == 1, p.returncode
    assert not os.path.exists(out), os.listdir(out)


if __name__ == "__main__":
    kt.require_torch_and_fashion_mnist()
    setup()
    kt.main(globals())
