#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The Fashion-MNIST recipe in --quick mode writes dumps that kdlens loads:
inspect finds no problem and every analysis runs on them.  Skipped (77)
without python3-torch or dataset-fashion-mnist (CI installs both)."""
import glob
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
RECIPE = os.path.join(ROOT, "datasets", "fmnist_recipe.py")
OUT = None


def setup():
    global OUT
    OUT = os.path.join(kt.tmpdir(), "fq")
    p = subprocess.run(["/usr/bin/python3", RECIPE, "--quick", "--out", OUT],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]


def test_quick_recipe_output_loads():
    files = sorted(glob.glob(os.path.join(OUT, "*.h5")))
    names = [os.path.basename(f) for f in files]
    assert names == ["student_ce.h5", "student_kd.h5", "student_narrow.h5", "teacher.h5"], names
    doc = kt.run_json("inspect", *files)
    assert not kt.records(doc, "problems")
    assert all(r["status"] == "ok" for r in kt.records(doc, "alignment"))
    cks = {r["checkpoint"] for r in kt.records(doc, "checkpoints")}
    assert cks == {"init", "early", "middle", "final"}, cks
    prov = json.load(open(os.path.join(OUT, "provenance.json")))
    assert prov, "provenance.json is empty"


def test_every_analysis_runs_on_it():
    t = os.path.join(OUT, "teacher.h5")
    s = [os.path.join(OUT, f"student_{k}.h5") for k in ("ce", "kd", "narrow")]
    for args in (["kl", "-t", t, "-s", s[0], "-c", "all"],
                 ["split", "-t", t, "-s", s[1]],
                 ["dims", "-t", t, "-s", s[2]],
                 ["layers", "-t", t],
                 ["cka", t, s[0]]):
        doc = kt.run_json(*args)
        assert doc["results"], args


def test_missing_data_fails_in_one_line():
    out, empty = os.path.join(kt.tmpdir(), "none"), kt.tmpdir()
    p = subprocess.run(["/usr/bin/python3", RECIPE, "--quick", "--out", out, "--data", empty],
                       capture_output=True, text=True, timeout=60)
    kt.one_line_error(p.stderr, "fmnist_recipe.py", empty, "train-images-idx3-ubyte.gz")
    assert p.returncode == 1, p.returncode
    assert not os.path.exists(out)


if __name__ == "__main__":
    kt.require_torch_and_fashion_mnist()
    setup()
    kt.main(globals())
