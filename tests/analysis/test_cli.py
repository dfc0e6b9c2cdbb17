#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The kdlens command line: global options, help, usage errors, and `inspect`
on good dumps and on every kind of bad input (one line, exit 1)."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

FX = kt.FIXTURES
README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def fx(name):
    return os.path.join(FX, name)


def test_version_and_help():
    _, out, _ = kt.run("--version", check=0)
    assert re.fullmatch(r"kdlens \d+\.\d+\.\d+\n", out), out
    _, out, _ = kt.run("help", check=0)
    assert "inspect" in out
    _, out, _ = kt.run("inspect", "-h", check=0)
    assert out.startswith("usage: kdlens inspect FILE..."), out


def test_usage_errors_exit_2():
    st, out, err = kt.run("frobnicate")
    assert st == 2 and out == "" and "not a kdlens command" in err
    st, out, err = kt.run("inspect")
    assert st == 2 and out == "" and "expected at least 1 argument" in err
    st, out, err = kt.run("inspect", "--format", "xml", fx("teacher.h5"))
    assert st == 2 and out == "" and "unknown format 'xml'" in err
    st, out, err = kt.run("inspect", "--bogus", fx("teacher.h5"))
    assert st == 2 and out == "" and "unknown option '--bogus'" in err


def test_unused_common_options_are_refused():
    """A verb never ignores an option silently."""
    t = fx("teacher.h5")
    for args, needle in ((["cka", t, "-T", "2"], "cka has no temperature"),
                         (["layers", "-t", t, "-T", "2"], "layers has no temperature"),
                         (["layers", "-t", t, "--teacher-checkpoint", "init"],
                          "pairs checkpoints by name"),
                         (["dims", "-t", t, "--per-sample", "x.h5"], "dims has no per-sample"),
                         (["report", "-t", t, "-s", fx("student.h5"), "-o", "x",
                           "--per-sample", "y.h5"], "report has no per-sample"),
                         (["kl", "-t", t, "-s", fx("student.h5"), "--block-rows", "0"],
                          "--block-rows: expected a whole number from 1")):
        st, out, err = kt.run(*args)
        assert st == 2 and out == "" and needle in err, (args, st, err)


def test_help_matches_readme_synopsis():
    """Every verb's -h synopsis appears verbatim in README.md (git's t0450)."""
    text = open(README).read()
    _, out, _ = kt.run("help", check=0)
    verbs = re.findall(r"^  (\w+)\s", out, re.M)
    assert "inspect" in verbs
    for verb in verbs:
        _, h, _ = kt.run(verb, "-h", check=0)
        synopsis = h.splitlines()[0][len("usage: "):]
        assert synopsis in text, f"README.md lacks the synopsis: {synopsis}"


def test_inspect_json_shapes_and_alignment():
    doc = kt.run_json("inspect", fx("teacher.h5"), fx("student.h5"))
    assert doc["command"] == "inspect" and doc["inputs"] == [fx("teacher.h5"), fx("student.h5")]
    files = kt.records(doc, "files")
    assert [(f["role"], f["samples"], f["classes"], f["checkpoints"], f["problems"])
            for f in files] == [("teacher", 60, 5, 2, 0), ("student", 60, 5, 2, 0)]
    sets = {(r["file"], r["dataset"]): r for r in kt.records(doc, "datasets")}
    conv = sets[(fx("teacher.h5"), "/checkpoints/final/features/conv1")]
    assert (conv["shape"], conv["dtype"], conv["chunks"], conv["compression"], conv["width"]) == \
        ("[60, 3, 4, 4]", "float16", "[16, 3, 4, 4]", "gzip-4", 3)
    tok = sets[(fx("teacher.h5"), "/checkpoints/final/features/block.1")]
    assert (tok["shape"], tok["dtype"], tok["width"], tok["depth"]) == ("[60, 3, 6]", "float32", 6, 1)
    pen = sets[(fx("student.h5"), "/checkpoints/final/features/pen")]
    assert pen["shape"] == "[60, 4]"
    al = kt.records(doc, "alignment")
    assert al == [{"table": "alignment", "teacher": fx("teacher.h5"), "student": fx("student.h5"),
                   "status": "ok", "samples": 60, "aligned_by": "sample_ids", "reordered": True}]
    cks = kt.records(doc, "checkpoints")
    assert [c["checkpoint"] for c in cks[:2]] == ["init", "final"]
    assert all(c["head_input"] == "pen" and c["head"] for c in cks)
    assert not kt.records(doc, "problems")


def test_inspect_every_format_renders():
    for fmt in ("table", "md", "csv", "tex"):
        table = ("--table", "datasets") if fmt == "csv" else ()  # CSV on stdout is one table
        _, out, err = kt.run("inspect", "--format", fmt, *table, fx("teacher.h5"), check=0)
        assert "/checkpoints/final/features/conv1" in out.replace("\\_", "_"), fmt
        assert err == ""


BAD = [
    # (file, needles in the one error line)
    ("bad/not-hdf5.h5", ["not-hdf5.h5", "expected an HDF5 file"]),
    ("bad/empty.h5", ["empty.h5", "expected an HDF5 file, found an empty file"]),
    ("bad/truncated.h5", ["truncated.h5", "truncated file"]),
    ("bad/no-logits.h5", ["no-logits.h5", "/checkpoints/final/logits", "found none"]),
    ("bad/n-mismatch.h5", ["/checkpoints/final/features/pen", "expected 60 samples", "found 57"]),
    ("bad/wrong-rank.h5", ["/checkpoints/init/logits", "expected 2-D [N, C], found 3-D"]),
    ("bad/nan.h5", ["/checkpoints/final/features/pen", "NaN at sample 17"]),
    ("bad/inf.h5", ["/checkpoints/init/logits", "Inf at sample 42"]),
    ("bad/label-range.h5", ["/labels", "expected classes in [0, 5), found 5 at sample 9"]),
    ("bad/zero-size.h5", ["/checkpoints/final/features/pen", "expected a non-empty dataset"]),
    ("bad/overflow.h5", ["/checkpoints/final/features/huge", "overflows"]),
    ("bad/unknown-format.h5", ["kdlens_format=1", "found 7"]),
]


def test_inspect_bad_inputs():
    st, out, err = kt.run("inspect", "/nonexistent/dump.h5")
    assert st == 1 and out == ""
    kt.one_line_error(err, "kdlens inspect:", "/nonexistent/dump.h5", "No such file")
    for name, needles in BAD:
        st, out, err = kt.run("inspect", "--format", "json", fx(name))
        assert st == 1, (name, st, err)
        first = err.splitlines()[0] if err else ""
        kt.one_line_error(first, "kdlens inspect:", *needles)
        assert "AddressSanitizer" not in err and "runtime error" not in err, err


def test_inspect_pairing_mismatch():
    st, out, err = kt.run("inspect", fx("teacher.h5"), fx("bad/student-ids-differ.h5"))
    assert st == 1
    kt.one_line_error(err, "6 samples differ")
    st, out, err = kt.run("inspect", fx("teacher.h5"), fx("bad/student-dup-ids.h5"))
    assert st == 1
    kt.one_line_error(err, "expected unique ids")


def test_quick_skips_value_scan():
    st, out, err = kt.run("inspect", "--quick", fx("bad/nan.h5"))
    assert st == 0 and err == "" and "not scanned" in out


if __name__ == "__main__":
    kt.main(globals())
