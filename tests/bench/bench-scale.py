#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Benchmark (not a test): kdlens at real sizes, a million samples and a
vocabulary-sized C, in bounded memory.

    bench-scale.py generate DIR KDL_SYNTH [SET...]    write the dumps of SET (all)
    bench-scale.py run DIR KDLENS [options]            run the commands, print the tables
    bench-scale.py meson                               both, for `meson test --benchmark`:
        DIR is $KDL_BENCH_SCALE_DIR (skipped when unset: the dumps take 45 GB),
        the programs $KDL_SYNTH and $KDLENS

The dump sets (float16, chunks of 256 rows, no compression, one student
checkpoint, kdl-synth's seed 1):

  a  N = 1,000,000, C = 1,000, teacher and student layers 512,512, no
     gradients (4.1 GB a file): kl, split, dims, cka, layers
  n  the same at N = 250,000 and 500,000: kl, split, dims, cka (memory
     against N, with the 1,000,000 rows of set a)
  b  the token dump: N = 200,000, C = 32,000, teacher 1024,512, student
     512,256, no gradients (13 GB a file): kl, split, dims, cka, layers, report
  g  N = 20,000, C = 32,000, set b's widths, with gradients: kl, whose
     gradient_* and feature_head values need W_t and the gradients at C = 32,000

Each command runs in a fresh process under nice 10, with RLIMIT_AS at
--cap-gib (20) GiB and a timeout of --timeout (1,200) seconds, after which
its process group is killed; a failure, a kill or the cap is recorded, never
fatal.  Peak RSS is the child's ru_maxrss (wait4); the input read is the
child's rchar (/proc/self/io of this process counts the I/O of the children
it has waited for; the child's output goes to files, so this process reads
nothing meanwhile), i.e. every byte kdlens read, from the page cache or the
disk, over all its passes; GB/s is that over the wall time.  The outputs are
kept in DIR/out/ (the report in DIR/out/report-b).

Options of run:
  --sets LIST      sets to run, comma-separated (a,n,b,g); missing dumps are skipped
  --only LIST      commands to run (kl,split,dims,cka,layers,report)
  --timeout S      seconds per command (1200)
  --cap-gib G      RLIMIT_AS of each command in GiB (20); use a plain build,
                   AddressSanitizer reserves more address space than that
  --json FILE      also write every row as JSON
"""
import json
import os
import resource
import signal
import subprocess
import sys
import time

CHUNK = 256
COMMON = ["--dtype", "float16", "--chunk-rows", str(CHUNK), "--checkpoints", "1", "--seed", "1"]
A_OPTS = ["--classes", "1000", "--teacher-widths", "512,512", "--student-widths", "512,512",
          "--no-gradients"]
B_OPTS = ["--classes", "32000", "--teacher-widths", "1024,512", "--student-widths", "512,256"]

# name: (N, kdl-synth options, commands)
DUMPS = {
    "a1000000": (1000000, A_OPTS, ["kl", "split", "dims", "cka", "layers"]),
    "a500000": (500000, A_OPTS, ["kl", "split", "dims", "cka"]),
    "a250000": (250000, A_OPTS, ["kl", "split", "dims", "cka"]),
    "b": (200000, B_OPTS + ["--no-gradients"],
          ["kl", "split", "dims", "cka", "layers", "report"]),
    "g": (20000, B_OPTS, ["kl"]),
}
SETS = {"a": ["a1000000"], "n": ["a250000", "a500000"], "b": ["b"], "g": ["g"]}
FLAT_IN_N = ["kl", "split", "dims", "cka"]


def paths(d, name):
    return os.path.join(d, name + "-teacher.h5"), os.path.join(d, name + "-student.h5")


def synth_args(name):
    n, opts, _ = DUMPS[name]
    return ["--n", str(n)] + opts + COMMON


def command(kdlens, d, name, verb):
    t, s = paths(d, name)
    if verb == "cka":
        return [kdlens, "cka", t, s]
    if verb == "report":
        return [kdlens, "report", "-t", t, "-s", s, "-o",
                os.path.join(d, "out", "report-" + name), "--quiet"]
    return [kdlens, verb, "-t", t, "-s", s]


def io_counters():
    """rchar and read_bytes of this process and the children it has waited for."""
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k] = int(v)
    return out["rchar"], out["read_bytes"]


def measure(argv, out_path, err_path, timeout, cap):
    """Run @argv; return a dict of its wall and CPU time, peak RSS, input read, status."""
    def limit():
        os.nice(10)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        r0, b0 = io_counters()
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                             preexec_fn=limit, start_new_session=True)
        killed = False
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                os.killpg(p.pid, signal.SIGKILL)
                killed = True
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.2)
        wall = time.monotonic() - t0
        r1, b1 = io_counters()
    p.returncode = 0  # reaped above; keep Popen from waiting again
    if killed:
        state = "timeout %d s" % timeout
    elif os.WIFSIGNALED(status):
        state = "signal %d" % os.WTERMSIG(status)
    else:
        state = "exit %d" % os.WEXITSTATUS(status)
    with open(err_path, errors="replace") as f:
        first = next((ln.strip() for ln in f if ln.strip()), "")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_mib": ru.ru_maxrss / 1024.0,
            "read_gb": (r1 - r0) / 1e9, "disk_gb": (b1 - b0) / 1e9, "status": state,
            "stderr": first}


def file_gb(d, name):
    return sum(os.path.getsize(p) for p in paths(d, name)) / 1e9


def generate(d, synth, sets):
    os.makedirs(os.path.join(d, "out"), exist_ok=True)
    for name in [n for s in sets for n in SETS[s]]:
        t, s = paths(d, name)
        if os.path.exists(t) and os.path.exists(s):
            print("%s: exists" % name)
            continue
        argv = [synth] + synth_args(name) + [t, s]
        print("%s: %s" % (name, " ".join(argv)), flush=True)
        r = measure(argv, os.path.join(d, "out", "gen-%s.out" % name),
                    os.path.join(d, "out", "gen-%s.err" % name), 4 * 3600, 1 << 62)
        print("  %.0f s, peak %.0f MiB, %s, %.2f GB %s" %
              (r["wall_s"], r["peak_mib"], r["status"], file_gb(d, name) if r["status"] ==
               "exit 0" else 0.0, r["stderr"]), flush=True)


def fmt_row(r):
    gbs = r["read_gb"] / r["wall_s"] if r["wall_s"] > 0 else 0.0
    return "%-9s %-7s %9s %8.1f %9.0f %8.2f %6.3f %-14s %s" % (
        r["dump"], r["verb"], "{:,}".format(r["n"]), r["wall_s"], r["peak_mib"], r["read_gb"],
        gbs, r["status"], r["stderr"][:100])


def run(d, kdlens, sets, only, timeout, cap_gib, json_path):
    os.makedirs(os.path.join(d, "out"), exist_ok=True)
    cap = int(cap_gib * (1 << 30))
    version = subprocess.run([kdlens, "--version"], capture_output=True, text=True).stdout.strip()
    print("kdlens: %s (%s)\nmachine: %d cores, %.1f GiB; load average at start %s" % (
        kdlens, version, os.cpu_count(),
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30,
        " ".join("%.1f" % x for x in os.getloadavg())))
    print("each command: nice 10, RLIMIT_AS %g GiB, timeout %d s\n" % (cap_gib, timeout))
    hdr = "%-9s %-7s %9s %8s %9s %8s %6s %-14s %s" % (
        "dump", "command", "N", "wall_s", "peak_MiB", "read_GB", "GB/s", "status",
        "first line of stderr")
    print(hdr, flush=True)
    rows = []
    for name in [n for s in sets for n in SETS[s]]:
        n, _, verbs = DUMPS[name]
        t, s = paths(d, name)
        if not (os.path.exists(t) and os.path.exists(s)):
            print("%-9s (no dump: bench-scale.py generate %s KDL_SYNTH)" % (name, d))
            continue
        print("%-9s kdl-synth %s: %.2f GB in two files" % (name, " ".join(synth_args(name)),
                                                          file_gb(d, name)), flush=True)
        for verb in verbs:
            if only and verb not in only:
                continue
            argv = command(kdlens, d, name, verb)
            base = os.path.join(d, "out", "%s-%s" % (name, verb))
            r = measure(argv, base + ".out", base + ".err", timeout, cap)
            r.update(dump=name, verb=verb, n=n, files_gb=file_gb(d, name),
                     argv=" ".join(argv), load=os.getloadavg()[0])
            rows.append(r)
            print(fmt_row(r), flush=True)
    print("\nread_GB: bytes kdlens read (rchar) over all its passes; GB/s = read_GB / wall_s.")
    flat = [r for r in rows if r["dump"].startswith("a") and r["verb"] in FLAT_IN_N]
    if flat:
        print("\nmemory against N (peak MiB; wall s):")
        ns = sorted({r["n"] for r in flat})
        print("%-7s " % "command" + " ".join("%20s" % "{:,}".format(n) for n in ns))
        for verb in FLAT_IN_N:
            cells = []
            for n in ns:
                r = next((r for r in flat if r["verb"] == verb and r["n"] == n), None)
                cells.append("%20s" % ("%.0f MiB; %.0f s" % (r["peak_mib"], r["wall_s"])
                                        if r else "-"))
            print("%-7s " % verb + " ".join(cells))
    print("\nload average at the end %s" % " ".join("%.1f" % x for x in os.getloadavg()))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"kdlens": kdlens, "version": version, "rows": rows}, f, indent=1)


def main(argv):
    if argv[1:] == ["meson"]:
        d = os.environ.get("KDL_BENCH_SCALE_DIR")
        if not d:
            print("skip: set KDL_BENCH_SCALE_DIR to a directory with 45 GB free")
            return 77
        generate(d, os.environ["KDL_SYNTH"], list(SETS))
        argv = [argv[0], "run", d, os.environ["KDLENS"]]
    if len(argv) < 4 or argv[1] not in ("generate", "run"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    mode, d, exe, rest = argv[1], argv[2], argv[3], argv[4:]
    if mode == "generate":
        sets = rest or list(SETS)
        if any(s not in SETS for s in sets):
            print("bench-scale: sets are %s" % ", ".join(SETS), file=sys.stderr)
            return 2
        generate(d, exe, sets)
        return 0
    opts = {"--sets": "a,n,b,g", "--only": "", "--timeout": "1200", "--cap-gib": "20",
            "--json": ""}
    for i in range(0, len(rest), 2):
        if rest[i] not in opts or i + 1 >= len(rest):
            print("bench-scale: bad option '%s'" % rest[i], file=sys.stderr)
            return 2
        opts[rest[i]] = rest[i + 1]
    sets = opts["--sets"].split(",")
    if any(s not in SETS for s in sets):
        print("bench-scale: sets are %s" % ", ".join(SETS), file=sys.stderr)
        return 2
    run(d, exe, sets, [v for v in opts["--only"].split(",") if v], int(opts["--timeout"]),
        float(opts["--cap-gib"]), opts["--json"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
