#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Benchmark (not a test): how near the speed of reading its input do
kdlens kl and kdlens split run on a dump?

    bench-throughput.py TEACHER.h5 STUDENT.h5 KDLENS BENCH_READ [options]

In one run, on an otherwise idle machine if you can (the load average is
printed at the start and the end):

1. The raw read rate: bench-read (tests/bench/bench-read.c) writes, once, a
   scratch dump with one dataset shaped like the teacher's logits (the same
   element type and rows per chunk; --read-rows rows at most) and reads it
   --repeat times with kdlens's block reader into float64, each time in a
   fresh process (`bench-read --read-once`): wall and CPU seconds, and GB/s
   of stored values, median of the repeats.
2. Each command (--only, default kl,split) on the dump, once, as
   bench-scale.py runs them (nice 10, RLIMIT_AS 20 GiB; output and stderr in
   --scratch): wall and CPU seconds (user + system, all threads), peak RSS,
   the bytes it read (rchar, over all its passes).

GB counts stored bytes.  A command's input is one pass over the datasets it
needs, from the dump's shapes and element types: kl the logits and the head
inputs of both models (and the gradients when both dumps have them), split
the logits and the labels.  passes = read / input.  GB/s = input / seconds,
per wall and per CPU second, and "x read" is that over bench-read's rate in
the same unit: 1.0 means the command gets through its input as fast as the
reader alone reads it.  read_share is the CPU the bytes it read would cost
at bench-read's rate, as a share of the command's CPU: what remains is its
own work (the per-sample kernels; kl's head product is a GEMM).

Options:
  --only LIST       commands (kl,split); each run as `kdlens CMD -t T -s S`
  --args "..."      extra arguments for every command (e.g. "-T 1,4")
  --scratch DIR     bench-read's dump, the commands' output ($TMPDIR or /tmp)
  --read-rows R     rows of bench-read's dump at most (262144)
  --block-rows R    bench-read's block rows (4096)
  --repeat K        bench-read runs (3)
  --timeout S       seconds per command (3600); a timeout is recorded
  --json FILE       also write the figures as JSON
"""
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile

import h5py
import numpy as np

OPTS = {"--only": "kl,split", "--args": "", "--scratch": "", "--read-rows": "262144",
        "--block-rows": "4096", "--repeat": "3", "--timeout": "3600", "--json": ""}
CAP_GIB = 20


def load_bench_scale():
    """bench-scale.py (beside this file) as a module: its measure() runs the commands."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench-scale.py")
    spec = importlib.util.spec_from_file_location("bench_scale", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BS = load_bench_scale()


def run(argv, out_dir, name, timeout):
    """bench-scale.py's measure(): wall and CPU seconds, peak RSS, rchar, status, under nice 10
    and RLIMIT_AS CAP_GIB; stdout and stderr go to OUT_DIR/NAME.out and .err."""
    base = os.path.join(out_dir, name)
    return BS.measure(argv, base + ".out", base + ".err", timeout, CAP_GIB << 30)


def last_checkpoint(f):
    """The checkpoint group kdlens compares by default: the largest step, else the last name."""
    g = f["checkpoints"]
    names = sorted(g)
    return g[max(names, key=lambda n: (g[n].attrs.get("step", -1), names.index(n)))]


def stored_gb(ds):
    return int(np.prod(ds.shape)) * ds.dtype.itemsize / 1e9


def inputs(tpath, spath):
    """One pass over what kl and split read, in stored GB, and the logits' layout."""
    with h5py.File(tpath, "r") as t, h5py.File(spath, "r") as s:
        ct, cs = last_checkpoint(t), last_checkpoint(s)
        zt, zs = ct["logits"], cs["logits"]
        logits = stored_gb(zt) + stored_gb(zs)
        kl = logits
        for ck in (ct, cs):
            inp = ck["head"].attrs.get("input") if "head" in ck else None
            if isinstance(inp, bytes):
                inp = inp.decode()
            if inp and "features/" + inp in ck:
                kl += stored_gb(ck["features/" + inp])
        if "gradients/logits" in ct and "gradients/logits" in cs:
            kl += stored_gb(ct["gradients/logits"]) + stored_gb(cs["gradients/logits"])
        labels = t["labels"] if "labels" in t else s["labels"]
        split = logits + stored_gb(labels)
        layout = {"n": zt.shape[0], "c": zt.shape[1], "dtype": zt.dtype.name,
                  "chunk_rows": zt.chunks[0] if zt.chunks else 0}
    return {"kl": kl, "split": split}, layout


def raw_read(bench_read, layout, scratch, o):
    """bench-read's rate on a dump shaped like the logits: medians of wall and CPU seconds."""
    rows = min(layout["n"], int(o["--read-rows"]))
    if layout["dtype"] not in ("float16", "float32", "float64"):
        raise SystemExit("bench-throughput: logits of type %s; bench-read takes float16, "
                         "float32 or float64" % layout["dtype"])
    # bench-read's own run writes (or reuses) the file and prints its table.
    argv = [bench_read, "--rows", str(rows), "--cols", str(layout["c"]), "--dtype",
            layout["dtype"], "--chunk-rows", str(layout["chunk_rows"]), "--block-rows",
            o["--block-rows"], "--repeat", "1", "--no-numpy", scratch]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    # "wrote PATH in T s" or "reusing PATH"
    path = next(ln.split()[1] for ln in out.splitlines() if ln.startswith(("wrote ", "reusing ")))
    gb = rows * layout["c"] * np.dtype(layout["dtype"]).itemsize / 1e9
    runs = []
    for i in range(int(o["--repeat"])):
        r = run([bench_read, "--read-once", path, o["--block-rows"]], scratch, "read-%d" % i,
                3600)
        if r["status"] != "exit 0":
            raise SystemExit("bench-throughput: %s --read-once failed: %s" % (bench_read,
                                                                             r["stderr"]))
        runs.append(r)
    med = lambda k: float(np.median([r[k] for r in runs]))
    return {"path": path, "rows": rows, "gb": gb, "wall_s": med("wall_s"),
            "cpu_s": med("cpu_s"), "peak_mib": med("peak_mib")}


def main(argv):
    if len(argv) < 5:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    tpath, spath, kdlens, bench_read = argv[1:5]
    o = dict(OPTS)
    rest = argv[5:]
    for i in range(0, len(rest), 2):
        if rest[i] not in o or i + 1 >= len(rest):
            print("bench-throughput: bad option '%s'" % rest[i], file=sys.stderr)
            return 2
        o[rest[i]] = rest[i + 1]
    verbs = [v for v in o["--only"].split(",") if v]
    if any(v not in ("kl", "split") for v in verbs):
        print("bench-throughput: --only takes kl and split", file=sys.stderr)
        return 2
    need, layout = inputs(tpath, spath)
    version = subprocess.run([kdlens, "--version"], capture_output=True, text=True).stdout
    print("kdlens: %s (%s)" % (kdlens, version.strip()))
    print("machine: %d cores, %.1f GiB; load average at start %s" % (
        os.cpu_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30,
        " ".join("%.2f" % x for x in os.getloadavg())))
    print("dump: %s, %s: N = %s, C = %s, logits %s in chunks of %d rows" % (
        tpath, spath, "{:,}".format(layout["n"]), "{:,}".format(layout["c"]), layout["dtype"],
        layout["chunk_rows"]))
    scratch = o["--scratch"] or tempfile.gettempdir()
    raw = raw_read(bench_read, layout, scratch, o)
    raw_wall, raw_cpu = raw["gb"] / raw["wall_s"], raw["gb"] / raw["cpu_s"]
    print("raw read: bench-read, %s [%s, %d], blocks of %s rows, median of %s: %.3f GB in "
          "%.2f s wall, %.2f s CPU: %.3f GB/s wall, %.3f GB/s CPU\n" % (
              layout["dtype"], "{:,}".format(raw["rows"]), layout["c"], o["--block-rows"],
              o["--repeat"], raw["gb"], raw["wall_s"], raw["cpu_s"], raw_wall, raw_cpu))
    print("%-6s %8s %7s %6s %8s %8s %8s %9s %9s %7s %9s %7s %6s  %s" % (
        "cmd", "input_GB", "read_GB", "passes", "wall_s", "cpu_s", "peak_MiB", "GB/s_wall",
        "x_read", "GB/s_cpu", "x_read", "read_sh", "load", "status"))
    rows = []
    extra = shlex.split(o["--args"])
    for verb in verbs:
        r = run([kdlens, verb, "-t", tpath, "-s", spath] + extra, scratch, verb,
                float(o["--timeout"]))
        r.update(command=verb, input_gb=need[verb], load=os.getloadavg()[0])
        r["gbs_wall"] = r["input_gb"] / r["wall_s"]
        r["gbs_cpu"] = r["input_gb"] / r["cpu_s"] if r["cpu_s"] > 0 else 0.0
        r["read_share"] = (r["read_gb"] / raw_cpu) / r["cpu_s"] if r["cpu_s"] > 0 else 0.0
        rows.append(r)
        print("%-6s %8.3f %7.3f %6.2f %8.1f %8.1f %8.0f %9.3f %9.3f %7.3f %9.3f %7.2f %6.2f  %s %s"
              % (verb, r["input_gb"], r["read_gb"], r["read_gb"] / r["input_gb"], r["wall_s"],
                 r["cpu_s"], r["peak_mib"], r["gbs_wall"], r["gbs_wall"] / raw_wall,
                 r["gbs_cpu"], r["gbs_cpu"] / raw_cpu, r["read_share"], r["load"],
                 r["status"], r["stderr"][:80]), flush=True)
    print("\nx_read: the command's GB/s over bench-read's, wall and CPU; read_sh: the CPU "
          "its read_GB\ncost bench-read, over the command's CPU (the rest is its own work).")
    print("load average at the end %s" % " ".join("%.2f" % x for x in os.getloadavg()))
    if o["--json"]:
        with open(o["--json"], "w") as f:
            json.dump({"kdlens": kdlens, "version": version.strip(), "layout": layout,
                       "raw_read": raw, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
