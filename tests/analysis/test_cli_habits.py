#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The command line as people use it: man pages, bash completion, "did you
mean", one table per CSV stream, the same column names in every format, and
one layout for every --per-sample file.

- every man page the build made equals `kdlens help --man [VERB]`, there is one
  per command of `kdlens help`, and `man -l` renders each without a warning,
  with every option `kdlens VERB -h` lists;
- completion/kdlens.bash, sourced in a bash subshell with COMP_WORDS and
  COMP_CWORD set, offers the commands, a command's options (each one the
  command accepts), the values its help lists, and the checkpoint and layer
  names of the dumps on the command line (names with blanks included);
- a mistyped command or option gets the closest names;
- `-f csv --table T` is one table a CSV reader takes whole, `-o DIR` one file
  per table, and csv on standard output without --table is refused (exit 2);
- JSON records, CSV headers and --per-sample files use the same keys;
- kl's and split's --per-sample files have one layout with /sample_ids.
"""
import csv
import io
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import kdltest as kt  # noqa: E402
from test_options import write_dump  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

MANDIR = os.environ.get("KDL_MANDIR", "")
COMPLETION = os.environ.get("KDL_COMPLETION", os.path.join(
    os.path.dirname(__file__), "..", "..", "completion", "kdlens.bash"))
DIR = kt.tmpdir()
CKS = ("init 0", "epoch-3", "final")   # a name with a blank, as dumps may have
T, S = os.path.join(DIR, "t.h5"), os.path.join(DIR, "s.h5")
write_dump(T, "teacher", 1, 6, cks=CKS)
write_dump(S, "student", 2, 4, cks=CKS, layers=("conv", "pen", "block.1"))
VERBS_WITH_TABLES = {
    "inspect": (T, S), "kl": ("-t", T, "-s", S), "cka": (T, S), "layers": ("-t", T),
    "dims": ("-t", T, "-s", S), "split": ("-t", T, "-s", S),
}


def verbs():
    _, out, _ = kt.run("help", check=0)
    return re.findall(r"^  (\w+)\s", out.split("Options:")[0], re.M)


def help_options(verb):
    """Every option name the help of @verb lists, with whether it takes an argument."""
    _, out, _ = kt.run(verb, "-h", check=0)
    opts = {}
    for line in out.splitlines():
        # The names, then after one blank the argument (kdl__cli_help_line()).
        m = re.match(r"^ {1,8}(-[^\s,]+(?:, -[^\s,]+)*)(?: (?! )(\S+))?", line)
        if m:
            for name in m.group(1).split(", "):
                opts[name] = m.group(2) is not None
    return opts


# ---- man pages -------------------------------------------------------------------

def test_man_page_per_command_as_the_binary_writes_it():
    assert MANDIR, "KDL_MANDIR is not set (run through meson test)"
    want = {"kdlens.1"} | {f"kdlens-{v}.1" for v in verbs()}
    assert set(f for f in os.listdir(MANDIR) if f.endswith(".1")) == want
    for page in sorted(want):
        verb = page[len("kdlens-"):-2] if page != "kdlens.1" else None
        _, out, _ = kt.run("help", "--man", *([verb] if verb else []), check=0)
        assert open(os.path.join(MANDIR, page)).read() == out, page


def test_man_renders_each_page():
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    for verb in [None] + verbs():
        page = os.path.join(MANDIR, f"kdlens-{verb}.1" if verb else "kdlens.1")
        p = subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True,
                           env=env, timeout=60)
        assert p.returncode == 0 and p.stderr == "", (page, p.returncode, p.stderr)
        text = re.sub(r".\x08", "", p.stdout)
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "SEE ALSO"):
            assert re.search(rf"^{section}$", text, re.M), (page, section)
        flat = " ".join(text.split())
        if verb is None:
            assert all(f"kdlens {v}" in flat for v in verbs())
            continue
        _, h, _ = kt.run(verb, "-h", check=0)
        synopsis = h.splitlines()[0][len("usage: "):]
        assert " ".join(synopsis.split()) in flat, (verb, synopsis)
        for name in help_options(verb):
            assert re.search(rf"(^|\s){re.escape(name)}(,|\s|$)", flat), (verb, name)


# ---- bash completion ---------------------------------------------------------------

def complete(*words, cwd=None):
    """COMPREPLY of _kdlens for the command line kdlens WORDS (the last being completed)."""
    words = (kt.KDLENS,) + words
    script = (f"source {sh(COMPLETION)}; COMP_WORDS=({' '.join(sh(w) for w in words)}); "
              f"COMP_CWORD={len(words) - 1}; _kdlens; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True,
                       text=True, cwd=cwd, timeout=60)
    assert p.returncode == 0 and p.stderr == "", (words, p.stderr)
    return [w for w in p.stdout.split("\n") if w]


def sh(s):
    return "'" + s.replace("'", "'\\''") + "'"


def test_completion_commands_and_options():
    assert complete("") == verbs()
    assert complete("sp") == ["split"]
    assert complete("help", "l") == ["layers"]
    assert set(complete("-")) >= {"--version", "--help", "-q", "--quiet"}
    for verb in verbs():
        got = set(complete(verb, "-"))
        want = set(help_options(verb)) | {"-h", "--help"}
        assert got == want, (verb, got ^ want)
    assert complete("kl", "--tea") == ["--teacher", "--teacher-checkpoint"]
    assert complete("kl", "--format", "") == ["table", "md", "csv", "tex", "json"]
    assert complete("kl", "-f", "c") == ["csv"]
    assert complete("cka", "--kernel", "") == ["linear", "rbf"]
    assert complete("split", "--nonfinite", "") == ["error", "skip"]


def test_every_option_the_completion_offers_is_accepted():
    """The help (so the completion and the man page) lists no option the command refuses."""
    for verb in verbs():
        for name, arg in help_options(verb).items():
            if name in ("-h", "--help"):
                continue
            # -h after it: the option is parsed (refused if unknown), then nothing runs.
            st, _, err = kt.run(verb, name, *(["x"] if arg else []), "-h")
            assert "unknown option" not in err and "ambiguous" not in err, (verb, name, err)


def test_completion_checkpoint_and_layer_names_of_the_dumps():
    assert complete("kl", "-t", T, "-s", S, "-c", "") == ["all", "init\\ 0", "epoch-3", "final"]
    assert complete("kl", "-t", T, "-s", S, "--checkpoint", "e") == ["epoch-3"]
    assert complete("kl", "-t", T, "-s", S, "--teacher-checkpoint", "") == \
        ["same", "init\\ 0", "epoch-3", "final"]
    assert complete("cka", T, "-c", "f") == ["final"]
    # bash splits --checkpoint=... at '='.
    assert complete("split", "-t", T, "-s", S, "--checkpoint", "=", "i") == ["init\\ 0"]
    assert complete("dims", "-t", T, "-s", S, "--layer", "") == \
        ["all", "conv", "pen", "block.1"]
    assert complete("layers", "-t", T, "-c", "") == ["all", "init\\ 0", "epoch-3", "final"]
    # A dump that is not there, or not a dump: no names, and no error.
    assert complete("kl", "-t", "/nonexistent.h5", "-c", "") == ["all"]


def test_completion_of_files():
    assert complete("kl", "-t", "t", cwd=DIR) == ["t.h5"]
    assert {"t.h5", "s.h5"} <= set(complete("cka", "", cwd=DIR))
    assert "s.h5" in complete("inspect", "", cwd=DIR)
    os.makedirs(os.path.join(DIR, "outdir"), exist_ok=True)
    assert complete("kl", "-o", "out", cwd=DIR) == ["outdir"]


# ---- did you mean ------------------------------------------------------------------

def test_did_you_mean_for_commands_and_options():
    st, out, err = kt.run("inpsect", T)
    assert st == 2 and out == ""
    kt.one_line_error(err, "'inpsect' is not a kdlens command", "did you mean 'inspect'?")
    st, _, err = kt.run("help", "slpit")
    assert st == 2 and "did you mean 'split'?" in err.splitlines()[0], err
    st, _, err = kt.run("frobnicate")
    assert st == 2 and "did you mean" not in err, err
    st, out, err = kt.run("kl", "-t", T, "-s", S, "--temprature", "2")
    assert st == 2 and out == ""
    assert err.splitlines()[0] == ("kdlens kl: unknown option '--temprature'; "
                                   "did you mean '--temperature'?"), err
    st, _, err = kt.run("cka", T, "--estimater=debiased")
    assert st == 2 and "did you mean '--estimator'?" in err.splitlines()[0], err
    st, _, err = kt.run("inspect", "--quik", T)
    assert st == 2 and "did you mean '--quick'?" in err.splitlines()[0], err
    st, _, err = kt.run("kl", "-t", T, "-s", S, "--s", "x")
    assert st == 2 and "ambiguous option '--s': it could be --student" in err, err
    st, _, err = kt.run("kl", "-t", T, "-s", S, "--plan=yes")
    assert st == 2 and "option '--plan' takes no argument" in err, err
    st, _, err = kt.run("kl", "-t", T, "-s", S, "--format")
    assert st == 2 and "missing argument to '--format'" in err, err


# ---- one table per CSV, and the same keys everywhere ----------------------------------

def parse_one_table(text):
    """Rows of a CSV stream a plain reader takes as one table (one header, equal rows)."""
    rows = list(csv.reader(io.StringIO(text)))
    assert rows and all(len(r) == len(rows[0]) for r in rows), text[:500]
    return rows[0], rows[1:]


def test_csv_table_on_stdout_is_one_table():
    cmd = (f"{sh(kt.KDLENS)} kl -t {sh(T)} -s {sh(S)} -f csv --table kl | /usr/bin/python3 -c "
           "\"import csv,sys; r=list(csv.reader(sys.stdin)); "
           "assert r and all(len(x)==len(r[0]) for x in r); print(len(r)-1, ','.join(r[0]))\"")
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    nrows, header = p.stdout.split(" ", 1)
    doc = kt.run_json("kl", "-t", T, "-s", S)
    recs = kt.records(doc, "kl")
    assert int(nrows) == len(recs) and header.strip().split(",")[:3] == \
        ["student", "checkpoint", "step"]


def test_csv_without_table_is_refused_with_the_way_out():
    for verb, args in VERBS_WITH_TABLES.items():
        st, out, err = kt.run(verb, *args, "-f", "csv")
        assert st == 2 and out == "", (verb, st)
        first = err.splitlines()[0]
        assert "one table" in first and "--table NAME" in first and "-o DIR" in first, first
    st, out, err = kt.run("kl", "-t", T, "-s", S, "-f", "csv", "--table", "kl_feature")
    assert st == 2 and out == ""
    assert ("no table 'kl_feature' in the output of kl: expected kl or kl_features; "
            "did you mean 'kl_features'?") in err.splitlines()[0], err
    st, out, err = kt.run("kl", "-t", T, "-s", S, "-o", os.path.join(DIR, "x"), "-f", "json")
    assert st == 2 and "-o DIR writes one CSV file per table" in err, err


def test_csv_dir_never_replaces_an_input():
    before = open(T, "rb").read()
    st, out, err = kt.run("kl", "-t", T, "-s", S, "-o", T)
    assert st == 2 and out == "" and "is not a directory" in err, err
    # A table file that is a link to an input is refused, and the input kept.
    d = os.path.join(DIR, "links")
    os.makedirs(d)
    os.symlink(T, os.path.join(d, "kl.csv"))
    st, out, err = kt.run("kl", "-t", T, "-s", S, "-o", d)
    assert st == 2 and "is the input" in err, err
    assert open(T, "rb").read() == before


def same_keys(verb, args):
    """Every table of @verb: its JSON keys are its CSV columns (-o DIR and --table)."""
    doc = kt.run_json(verb, *args)
    d = os.path.join(DIR, "csv-" + verb)
    kt.run(verb, *args, "-o", d, check=0)
    tables = list(dict.fromkeys(r["table"] for r in doc["results"]))
    assert sorted(tables) == sorted(f[:-4] for f in os.listdir(d)), (verb, tables)
    for t in tables:
        recs = kt.records(doc, t)
        keys = list(dict.fromkeys(k for r in recs for k in r if k != "table"))
        header, rows = parse_one_table(open(os.path.join(d, t + ".csv")).read())
        assert set(header) == set(keys) and len(rows) == len(recs), (verb, t)
        # A cell JSON leaves out (empty) is empty in CSV; the others are the same value.
        for r, row in zip(recs, rows):
            for k, v in zip(header, row):
                if k not in r:
                    assert v == "", (verb, t, k, v)
                elif isinstance(r[k], bool):
                    assert v == str(r[k]).lower(), (verb, t, k)
                elif isinstance(r[k], (int, float)):
                    assert float(v) == float(r[k]), (verb, t, k, v, r[k])
                elif r[k] is None:
                    assert v in ("nan", "inf", "-inf"), (verb, t, k, v)
                else:
                    assert v == r[k], (verb, t, k)
        _, out, _ = kt.run(verb, *args, "-f", "csv", "--table", t, check=0)
        assert out == open(os.path.join(d, t + ".csv")).read(), (verb, t)
        one = json.loads(kt.run(verb, *args, "-f", "json", "--table", t, check=0)[1])
        assert one["results"] == recs and one["notes"] == doc["notes"], (verb, t)
    return doc


def test_json_and_csv_use_the_same_keys():
    for verb, args in VERBS_WITH_TABLES.items():
        same_keys(verb, args)


# ---- --per-sample: one layout for every command ----------------------------------------

def per_sample_layout(path, command, doc, taus):
    """The layout of docs/conventions.md#per-sample-files, whatever the command; the names
    of the values of each group."""
    with h5py.File(T, "r") as t:
        ids, labels = t["sample_ids"][...], t["labels"][...]
    names = {}
    with h5py.File(path, "r") as f:
        assert f.attrs["command"] == command and f.attrs["teacher"] == T
        assert f.attrs["kdlens"] == doc["kdlens"]
        assert np.array_equal(f["sample_ids"][...], ids) and f["sample_ids"].dtype == np.int64
        assert np.array_equal(f["labels"][...], labels)
        assert list(f["tau"][...]) == taus
        assert list(f["students"]) == ["0"] and f["students/0"].attrs["student"] == S
        for ck in f["students/0/checkpoints"]:
            g = f["students/0/checkpoints"][ck]
            assert dict(g.attrs) == {"student": S, "checkpoint": ck,
                                     "teacher_checkpoint": "final"}, dict(g.attrs)
            for name, ds in g.items():
                assert ds.shape == (len(ids), len(taus)) and ds.dtype == np.float64, name
            names[ck] = sorted(g)
    return names


def test_per_sample_files_share_one_layout_and_the_tables_keys():
    kl_file, split_file = os.path.join(DIR, "kl.h5"), os.path.join(DIR, "split.h5")
    doc = kt.run_json("kl", "-t", T, "-s", S, "-c", "all", "-T", "1,4", "--per-sample", kl_file)
    names = per_sample_layout(kl_file, "kl", doc, [1.0, 4.0])
    assert sorted(names) == sorted(CKS)
    recs = kt.records(doc, "kl")
    for ck, got in names.items():
        # Each value is named as the table names it, in the column 'approximation'.
        avail = {r["approximation"] for r in recs if r["checkpoint"] == ck and r["available"]}
        assert set(got) == avail, (ck, set(got) ^ avail)
        # The group's attributes are columns of the table, with the same values.
        r = next(r for r in recs if r["checkpoint"] == ck)
        assert (r["student"], r["teacher_checkpoint"]) == (S, "final")
    doc = kt.run_json("split", "-t", T, "-s", S, "-T", "2", "--per-sample", split_file)
    names = per_sample_layout(split_file, "split", doc, [2.0])
    keys = {k for r in kt.records(doc, "split") for k in r}
    quantities = {r["quantity"] for r in kt.records(doc, "distributions")}
    assert list(names) == ["final"]
    for name in names["final"]:
        assert name in keys or name in quantities, name
    with h5py.File(split_file, "r") as f, h5py.File(kl_file, "r") as g:
        # split's kl equals kl's exact kl per sample (the same rows, the same ids).
        a = f["students/0/checkpoints/final/kl"][:, 0]
        b = kt.run_json("kl", "-t", T, "-s", S, "-T", "2", "--per-sample",
                        os.path.join(DIR, "kl2.h5"))
        with h5py.File(os.path.join(DIR, "kl2.h5"), "r") as h:
            np.testing.assert_allclose(a, h["students/0/checkpoints/final/kl"][:, 0],
                                       rtol=1e-12)
        assert b["command"] == "kl" and g["sample_ids"].shape == f["sample_ids"].shape


def drop_rows(src, dst, rows):
    """@src without the samples @rows (every dataset of N rows), as @dst."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        n = f["labels"].shape[0]
        keep = np.setdiff1d(np.arange(n), rows)
        for k, v in f.attrs.items():
            g.attrs[k] = v

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[...]
                g[name] = data[keep] if data.ndim and data.shape[0] == n else data
                for k, v in obj.attrs.items():
                    g[name].attrs[k] = v
            else:
                grp = g.require_group(name)
                for k, v in obj.attrs.items():
                    grp.attrs[k] = v
        f.visititems(copy)


def test_per_sample_rows_are_the_teachers_with_an_inner_join():
    """A student holding fewer ids: its rows line up with the teacher's, NaN where absent."""
    part = os.path.join(DIR, "s-part.h5")
    gone = [0, 17, 61, 119]
    drop_rows(S, part, gone)
    for verb in ("kl", "split"):
        full, inner = os.path.join(DIR, f"{verb}-full.h5"), os.path.join(DIR, f"{verb}-in.h5")
        kt.run(verb, "-t", T, "-s", S, "--per-sample", full, "-f", "json", check=0)
        kt.run(verb, "-t", T, "-s", part, "--join", "inner", "--per-sample", inner, "-f", "json",
               check=0)
        with h5py.File(full, "r") as a, h5py.File(inner, "r") as b:
            assert np.array_equal(a["sample_ids"][...], b["sample_ids"][...])
            x = a["students/0/checkpoints/final/kl"][:, 0]
            y = b["students/0/checkpoints/final/kl"][:, 0]
            keep = np.setdiff1d(np.arange(len(x)), gone)
            assert np.isnan(y[gone]).all() and not np.isnan(y[keep]).any(), verb
            np.testing.assert_allclose(y[keep], x[keep], rtol=1e-13)


if __name__ == "__main__":
    kt.main(globals())
