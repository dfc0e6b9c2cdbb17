#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Outputs never destroy inputs or unrelated data (issue #22).

--per-sample OUT of kl and split, and report -o DIR, are refused (exit 2, one
line) when they would replace an input, a directory holding one, a symbolic
link, a FIFO or a directory kdlens did not write (the last unless --force);
after each refusal every input is byte for byte what it was.  A killed
--per-sample run's temporary file is removed by the next run (here); a killed
report's temporary directory: test_report.py.
"""
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.dirname(__file__))
import kdltest as kt  # noqa: E402
from test_options import GNUPLOT, write_dump  # noqa: E402

DIR = kt.tmpdir()
# The inputs in a directory of their own, so that "the directory holding the inputs" is it.
INPUTS = os.path.join(DIR, "inputs")
os.makedirs(INPUTS)
TI, SI = os.path.join(INPUTS, "teacher.h5"), os.path.join(INPUTS, "student.h5")
write_dump(TI, "teacher", 1, 6)
write_dump(SI, "student", 2, 4)


def digest(*paths):
    """sha256 of every file under @paths (files or directories), by path."""
    h = {}
    for p in paths:
        walk = [(p, [], [""])] if os.path.isfile(p) else os.walk(p)
        for root, _, files in walk:
            for f in files:
                q = os.path.join(root, f) if f else root
                with open(q, "rb") as fh:
                    h[q] = hashlib.sha256(fh.read()).hexdigest()
    return h


def refused(args, *needles):
    """Exit 2, one line naming @needles, and no input touched."""
    before = digest(INPUTS)
    st, out, err = kt.run(*args)
    assert st == 2 and out == "", (args, st, out, err)
    kt.one_line_error(err, *needles)
    assert digest(INPUTS) == before, args


def test_per_sample_never_replaces_an_input():
    for verb in ("kl", "split"):
        base = (verb, "-t", TI, "-s", SI, "--per-sample")
        refused(base + (SI,), f"the output '{SI}' is the input '{SI}'")
        refused(base + (TI,), f"the output '{TI}' is the input '{TI}'")
        # Another spelling of the same file, and a hard link to it.
        refused(base + (os.path.join(INPUTS, "..", "inputs", "student.h5"),), "is the input")
        hard = os.path.join(DIR, f"hard-{verb}.h5")
        os.link(SI, hard)
        refused(base + (hard,), "is the input")
        os.unlink(hard)


def test_per_sample_never_replaces_a_link_or_a_fifo():
    other = os.path.join(DIR, "other.h5")
    open(other, "w").write("not kdlens's")
    for verb in ("kl", "split"):
        base = (verb, "-t", TI, "-s", SI, "--per-sample")
        for target in (SI, other, os.path.join(DIR, "nowhere.h5")):
            link = os.path.join(DIR, f"link-{verb}.h5")
            os.symlink(target, link)
            refused(base + (link,), link, "symbolic link")
            assert os.path.islink(link) and os.readlink(link) == target
            os.unlink(link)
        fifo = os.path.join(DIR, f"fifo-{verb}")
        os.mkfifo(fifo)
        refused(base + (fifo,), fifo, "FIFO")
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        adir = os.path.join(DIR, f"dir-{verb}")
        os.makedirs(adir)
        refused(base + (adir,), adir, "is a directory, not a regular file")
    assert open(other).read() == "not kdlens's"
    # A regular file that is no input is replaced, by a rename from a temporary.
    st, _, err = kt.run("kl", "-t", TI, "-s", SI, "--per-sample", other)
    assert st == 0 and open(other, "rb").read(4) == b"\x89HDF", err
    assert not [f for f in os.listdir(DIR) if ".tmp-" in f], os.listdir(DIR)


def gone_pid():
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_per_sample_removes_a_killed_runs_temporaries():
    """kill -9 during --per-sample leaves OUT.tmp-<pid>-XXXXXX next to OUT, an HDF5
    file or, killed early, an empty one: the next run into OUT removes those of a
    process that is gone, and nothing else (a live process's, one that is not HDF5)."""
    d = os.path.join(DIR, "killed")
    os.makedirs(d)
    out = os.path.join(d, "per sample ü 50% 'q'.h5")
    for verb in ("kl", "split"):
        dead = gone_pid()
        stale = [f"{out}.tmp-{dead}-aB3xY9", f"{out}.tmp-{dead}-aB3xY8"]
        shutil.copyfile(SI, stale[0])
        open(stale[1], "w").close()
        kept = [f"{out}.tmp-{dead}-aB3xY7", f"{out}.tmp-{os.getpid()}-aB3xY6",
                f"{out}.tmp-{dead}-aB3xY", f"{out}.bak"]
        open(kept[0], "w").write("not HDF5: not kdlens's")
        for k in kept[1:]:
            shutil.copyfile(SI, k)
        st, _, err = kt.run(verb, "-t", TI, "-s", SI, "--per-sample", out)
        assert st == 0, (verb, err)
        assert sorted(os.listdir(d)) == sorted(os.path.basename(p) for p in [out] + kept), \
            (verb, os.listdir(d))
        assert open(out, "rb").read(4) == b"\x89HDF"
        for k in kept:
            os.unlink(k)


def report(out, *extra, t=TI, s=SI):
    return kt.run("report", "-t", t, "-s", s, "-o", out, "--quiet", "--gnuplot", GNUPLOT, *extra)


def test_report_never_replaces_an_input_or_a_strangers_directory():
    if not GNUPLOT:
        return
    base = ("report", "-t", TI, "-s", SI, "--quiet", "--gnuplot", GNUPLOT, "-o")
    refused(base + (SI,), f"the output '{SI}' is the input '{SI}'")
    refused(base + (INPUTS,), "is a directory holding the input")
    refused(base + (DIR,), "is a directory holding the input")
    refused(base + (INPUTS, "--force"), "is a directory holding the input")
    refused(base + (SI, "--force"), "is the input")
    stranger = os.path.join(DIR, "stranger")
    os.makedirs(stranger)
    open(os.path.join(stranger, "thesis.tex"), "w").write("chapter 1")
    refused(base + (stranger,), f"'{stranger}' exists and is not a kdlens report", "--force")
    assert open(os.path.join(stranger, "thesis.tex")).read() == "chapter 1"
    afile = os.path.join(DIR, "notes.txt")
    open(afile, "w").write("mine")
    refused(base + (afile,), "not a directory")
    assert open(afile).read() == "mine"
    st, _, err = report(stranger, "--force")
    assert st == 0 and not os.path.exists(os.path.join(stranger, "thesis.tex")), err
    assert os.path.isfile(os.path.join(stranger, ".kdlens-report"))
    # A previous report is replaced without --force.
    before = os.path.getmtime(os.path.join(stranger, "index.html"))
    time.sleep(0.01)
    st, _, err = report(stranger)
    assert st == 0 and os.path.getmtime(os.path.join(stranger, "index.html")) > before, err
    assert not [f for f in os.listdir(DIR) if ".tmp-" in f], os.listdir(DIR)


if __name__ == "__main__":
    kt.main(globals())
