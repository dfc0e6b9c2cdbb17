#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kdlens report's section "Knowledge by position" (split's split_positions table): on the
bundled language-model example, its figures' values are those of kdlens split on the same
files for each student at its last checkpoint and the report's tau; absent on the
Fashion-MNIST example, whose dumps have no /positions."""
import json
import math
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

from test_report_lm import FM_S, FM_T, GNUPLOT, LM_S, LM_T, report  # noqa: E402

TAU = 2.0  # test_report_lm's report() runs at -T 2


def dat_rows(path):
    """The rows of a figure's data file: x, then the values after the (quoted) label."""
    rows = []
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        x, values = line.split('"', 1)[0], line.rsplit('"', 1)[1].split()
        rows.append([float(x)] + [float(v) for v in values])
    return rows


def same(a, b, rtol, what):
    if math.isnan(b):
        assert math.isnan(a), (what, a, b)
    else:
        kt.assert_close(a, b, rtol=rtol, atol=rtol, what=what)


def check_lm(out, html):
    assert 'id="sec-knowledge-by-position"' in html, re.findall(r'<section id="([^"]+)"', html)
    alone = kt.run_json("split", "-t", LM_T, "-s", LM_S, "-c", "all", "-T", str(TAU))
    want = [r for r in kt.records(alone, "split_positions") if abs(r["tau"] - TAU) < 1e-12]
    assert want, "kdlens split gave no split_positions rows"
    # The report's split run: the same rows, value for value.
    shared = json.load(open(os.path.join(out, "data", "split.json")))
    got = [r for r in kt.records(shared, "split_positions") if abs(r["tau"] - TAU) < 1e-12]
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), (g, w)
        for key, v in w.items():
            if isinstance(v, float):
                same(g[key], v, 1e-12, f"split.json {key} at position {w['position']}")
            else:
                assert g[key] == v, (key, g[key], v)
    # The student's last checkpoint: the last of the split table, whose rows follow the dump.
    last = kt.records(alone, "split")[-1]["checkpoint"]
    rows = sorted((r for r in want if r["checkpoint"] == last), key=lambda r: r["position"])
    assert rows, last
    for name, keys in (("split_positions_s1", ("kl", "tckd", "nckd")),
                       ("split_positions_shares_s1", ("explicit_share", "implicit_share"))):
        fig = re.search(r'<figure id="fig-%s">(.*?)</figure>' % name, html, re.S)
        assert fig, "no figure " + name
        cap = fig.group(1)
        assert f"data/{name}.dat" in cap and "kdlens split" in cap, cap
        assert f"checkpoint {last}" in cap, cap
        for ext in ("png", "pdf", "svg"):
            assert os.path.getsize(os.path.join(out, "figures", f"{name}.{ext}")) > 2000
        dat = dat_rows(os.path.join(out, "data", name + ".dat"))
        assert len(dat) == len(rows), (len(dat), len(rows))
        for d, r in zip(dat, rows):
            assert d[0] == r["position"], (d, r)
            # The figure's data file prints 10 significant digits.
            for j, key in enumerate(keys):
                same(d[1 + j], r[key], 1e-9, f"{name} {key} at position {r['position']}")
    assert any(f.startswith("split_positions") for f in os.listdir(os.path.join(out, "tables")))


def test_lm_example_shows_the_per_position_curves():
    check_lm(*report(LM_T, LM_S, "--topk", "8"))  # one k: the sparse-targets run is short


def test_absent_on_the_fashion_mnist_example():
    """Split runs there (its section is shown) but has no positions to draw."""
    out, html = report(FM_T, FM_S)
    split = json.load(open(os.path.join(out, "data", "split.json")))
    assert kt.records(split, "split") and not kt.records(split, "split_positions")
    assert 'id="sec-explicit-and-implicit-knowledge"' in html
    assert "sec-knowledge-by-position" not in html and "split_positions" not in html
    assert not [f for f in os.listdir(os.path.join(out, "data")) if "positions" in f]


if __name__ == "__main__":
    if not GNUPLOT:
        print("gnuplot not found: skipped")
        sys.exit(77)
    kt.main(globals())
