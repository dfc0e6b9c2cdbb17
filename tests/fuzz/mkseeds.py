#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Write the fuzzers' seed corpora, or the join target's fixed pair.

usage: mkseeds.py --synth KDL_SYNTH OUTDIR        seeds in OUTDIR/{catalog,read,join}/
       mkseeds.py --synth KDL_SYNTH --pair OUTDIR  OUTDIR/join-teacher.h5, join-student.h5

The seeds are small kdl-synth dumps (16 samples, 3 classes, narrow layers,
one checkpoint) in several storage variants, plus the hostile cases of
mkcases.py that run in well under a second (the ones that crash, hang or
blow up on their own are left out: run-cases.py covers them, and as seeds
they would only be found again).  Every variant uses the same samples,
classes and seed as the join pair, so each of its students pairs with the
join teacher.  Nothing here is committed: run this again to get the seeds.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPE = ["--n", "16", "--classes", "3", "--teacher-widths", "4,6,5", "--student-widths", "3,5",
         "--checkpoints", "1", "--seed", "7"]
VARIANTS = {
    "contiguous": ["--chunk-rows", "0"],
    "f16-gzip": ["--dtype", "float16", "--chunk-rows", "8", "--gzip", "6"],
    "f64-chunked-4d-tokens": ["--dtype", "float64", "--chunk-rows", "5", "--spatial", "--tokens",
                              "--permute-student"],
    "flat-no-ids": ["--flat-teacher", "--no-sample-ids", "--chunk-rows", "0"],
}
PAIR = "contiguous"  # the join target's teacher
# Cases that crash, hang or blow up by themselves (see run-cases.py), and
# the big ones (over 64 KiB): not seeds.
NOT_SEEDS = {"gzip-bomb", "gzip-bomb-nested", "gzip-chunk-inflates-short", "chunk-btree-loop",
             "gheap-object-size", "role-vlen-length-huge", "float-size-absurd",
             "declared-huge-unwritten", "declared-huge-contiguous", "rows-2e40-consistent",
             "labels-2e31", "feature-2e28-wide", "head-weight-external-fifo"}


def synth(exe, variant, teacher, student):
    subprocess.run([exe, *SHAPE, *VARIANTS[variant], teacher, student], check=True,
                   stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synth", required=True, help="the built datasets/kdl-synth")
    ap.add_argument("--pair", action="store_true", help="write the join target's pair only")
    ap.add_argument("outdir")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    if a.pair:
        synth(a.synth, PAIR, os.path.join(a.outdir, "join-teacher.h5"),
              os.path.join(a.outdir, "join-student.h5"))
        return 0
    dirs = {t: os.path.join(a.outdir, t) for t in ("catalog", "read", "join")}
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    tmp = tempfile.mkdtemp(prefix="kdl-seeds-")
    try:
        for v in VARIANTS:
            t = os.path.join(tmp, "synth-%s-teacher.h5" % v)
            s = os.path.join(tmp, "synth-%s-student.h5" % v)
            synth(a.synth, v, t, s)
            for f in (t, s):
                for d in ("catalog", "read"):
                    shutil.copy(f, dirs[d])
            shutil.copy(s, dirs["join"])
        cases = os.path.join(tmp, "cases")
        subprocess.run([sys.executable, os.path.join(HERE, "mkcases.py"), cases], check=True,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(cases, "manifest.json")) as fp:
            manifest = json.load(fp)
        for c in manifest:
            src = os.path.join(cases, c["file"])
            if c["make"] or c["name"] in NOT_SEEDS or os.path.getsize(src) > 64 << 10:
                continue
            for d in dirs.values():
                shutil.copyfile(src, os.path.join(d, "case-" + c["name"] + ".h5"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for t, d in dirs.items():
        files = os.listdir(d)
        print("mkseeds: %s: %d seeds, %d bytes" %
              (t, len(files), sum(os.path.getsize(os.path.join(d, f)) for f in files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
