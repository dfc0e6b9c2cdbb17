#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Replay the committed finds of one fuzz target: each must now run clean.

usage: replay.py FUZZ_EXE CORPUS_DIR

A find's name says whose fault it was (KIND-OWNER-WHAT, HACKING.md,
"Fuzzing").  kdlens's finds (OWNER "kdlens") run with the catalogue in the
target's own process, so that a fault of kdlens's comes back as a crash,
leak or timeout; libhdf5's ("hdf5") run as the CLI runs them, with the
catalogue in a child process (KDL_FUZZ_ISOLATE=1), where libhdf5's crash
or hang is the child's and the target must go on.  Exit 0 when both runs
are clean.
"""
import os
import subprocess
import sys
import tempfile


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    exe, corpus = argv[1], argv[2]
    names = sorted(os.listdir(corpus))
    groups = {"0": [n for n in names if "-hdf5-" not in n],
              "1": [n for n in names if "-hdf5-" in n]}
    bad = 0
    with tempfile.TemporaryDirectory(prefix="kdl-replay-") as tmp:
        for isolate, files in groups.items():
            if not files:
                continue
            env = dict(os.environ, KDL_FUZZ_ISOLATE=isolate, KDL_FUZZ_DIR=tmp)
            # Leaks need whole stacks (lsan.supp names a libhdf5 function).
            env["ASAN_OPTIONS"] = ("detect_leaks=1:fast_unwind_on_malloc=0:" +
                                   env.get("ASAN_OPTIONS", ""))
            argv = [exe, "-runs=1", "-timeout=30", "-rss_limit_mb=2048",
                    "-artifact_prefix=" + tmp + "/"] + [os.path.join(corpus, n) for n in files]
            p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, errors="replace")
            what = "in a child" if isolate == "1" else "in process"
            print("replay: %d file(s), catalogue %s: exit %d" % (len(files), what, p.returncode))
            if p.returncode != 0:
                bad += 1
                sys.stdout.write(p.stderr[-6000:])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
