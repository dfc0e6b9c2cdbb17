#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Run the libFuzzer targets of a -Dfuzz=enabled build, then sort what they find.

usage: run-fuzz.py BUILD [--seconds S | --cpu-seconds S] [--work DIR] [--ci]
                   [--timeout S] [--rss-mb M] [TARGET...]

Each TARGET (catalog, read, join; all by default) runs in turn, one
libFuzzer process at a time, for S seconds of wall-clock time (--seconds,
300 by default) or of CPU time (--cpu-seconds: on a shared machine, under
nice, the CPU time is what the campaign is worth).  The catalogue runs in
the fuzzer's own process (KDL_FUZZ_ISOLATE unset), so that libFuzzer sees
its coverage and its faults; a find stops libFuzzer, which this script
restarts on the grown corpus with the time left, keeping the complete
report of every find.

Seeds: mkseeds.py's (made once in WORK/seeds; --ci makes them again) and
the committed finds of tests/fuzz/corpus/TARGET/ that kdlens owns (the
libhdf5 ones crash the in-process catalogue by design: they only run through
the CLI).  The corpus grows in WORK/TARGET/corpus, the finds land in
WORK/TARGET/artifacts, each libFuzzer run's log in WORK/TARGET/run-N.log, the
figures in WORK/summary.json.  WORK is BUILD/fuzz-campaign unless --work
says; --ci starts from an empty corpus every time.  A find that is a seed
or in the corpus (it fails only after other inputs: HDF5 keeps state) is
set aside, or every start would find it again.

Leaks: the fuzzing runs do not look for them (ASan's fast unwinder stops at
the first libhdf5 frame, so tests/fuzz/lsan.supp could not tell libhdf5's
leaks from kdlens's); at the end of each target, one process replays the
whole corpus with leak detection and whole stacks (the leak sweep), and a
leak found there is traced to the input that leaks alone.  HDF5 identifiers
left open are no leak to LeakSanitizer: the targets check them after every
input (fuzz-file.c).

Every find is sorted by the first frame of its report that is neither the
sanitizer's, libFuzzer's nor libc's: kdlens, the harness, or libhdf5 (zlib
and libdeflate count like libhdf5); a leak is kdlens's when any leaked block
was allocated in kdlens.  Each libhdf5 find, and each out-of-memory of the
RSS limit (its report names no culprit), must be contained: run-cases.py
replays it through the built kdlens (inspect, kl, cka), where the catalogue
runs in a child process, and wants exit 0 or 1, one line naming the file,
no sanitizer report, no hang, RSS under 512 MiB (--ci: one find per group).
Finds are grouped by what went wrong (the sanitizer's bug type, timeout,
...), owner and the first three named frames.

Exit status with --ci: 1 when any find is kdlens's or the harness's, of no
known owner (an out-of-memory aside), or not contained, or when libFuzzer
failed to run; else 0.
Without --ci: 0 (a campaign reports; tests/fuzz/corpus/ keeps the finds).
"""
import argparse
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("run_cases", os.path.join(HERE, "run-cases.py"))
run_cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_cases)
first_stack = run_cases.first_stack  # the fault's frames: [(function, location)]
FRAME = run_cases.FRAME
TARGETS = ("catalog", "read", "join")
# Frames that say nothing about whose code failed.
NOISE_FN = ("__interceptor_", "__asan", "__sanitizer", "__ubsan", "__lsan", "__interception",
            "fuzzer::", "malloc", "calloc", "realloc", "free", "operator ", "__libc_start",
            "_start", "memcpy", "memmove", "memset", "strlen", "__mem", "__str")
# libc's frames name a module, or with its debugging symbols a glibc source file.
NOISE_LOC = ("libasan", "libclang_rt", "libc.so", "libstdc++", "libubsan", "compiler-rt",
             "/sysdeps/", "csu/")
KINDS = ("crash", "leak", "timeout", "oom")
THIRD_PARTY = ("libhdf5", "zlib/libdeflate")  # contained, or the find is a failure


def judged_by_cli(f):
    """Whether a find passes when the CLI contains it: a third party's, or an
    out-of-memory of the RSS limit, whose report has no stack of the culprit
    (only libFuzzer's heap profile at that moment)."""
    return f["owner"] in THIRD_PARTY or (f["owner"] == "unknown" and f["kind"] == "oom")


def frames(block):
    """[(function, location)] of every frame line in @block, in order."""
    out = []
    for line in block.splitlines():
        m = FRAME.match(line)
        if m:
            out.append((m.group(2) or "", m.group(3)))
    return out


def noise(fn, loc):
    return fn.startswith(NOISE_FN) or fn == "main" or any(n in loc for n in NOISE_LOC)


def whose(fn, loc):
    if "libhdf5" in loc or fn.startswith("H5"):
        return "libhdf5"
    if "libz." in loc or "libdeflate" in loc:
        return "zlib/libdeflate"
    if "/tests/fuzz/" in loc or fn == "LLVMFuzzerTestOneInput":
        return "harness"
    return "kdlens"


def short(fn, loc):
    """FUNC (file:line) or FUNC (module): one frame, compactly."""
    where = re.sub(r"\s*\(BuildId: [0-9a-f]+\)", "", loc).strip("() ")
    where = where.rsplit("/", 1)[-1]
    return "%s (%s)" % (fn or "??", where)


def named_stack(report, kind, owner):
    """The first three named, non-noise frames of a find's stack (for a leak:
    of the first leaked block @owner allocated): what groups finds (unnamed
    frames differ by their offsets within one function)."""
    fr = first_stack(report)
    if kind == "leak":
        for blk in re.split(r"\n(?=(?:Direct|Indirect) leak of)", report)[1:]:
            fr = [f for f in frames(blk) if not noise(*f)]
            if fr and whose(*fr[0]) == owner:
                break
    return [f[0] for f in fr if f[0] and not noise(*f)][:3]


def sort_leak(report):
    """(owner, top frames) of a LeakSanitizer report: the first kdlens-owned
    block, else the first block."""
    blocks = re.split(r"\n(?=(?:Direct|Indirect) leak of)", report)
    found = None
    for b in blocks[1:]:
        fr = [f for f in frames(b) if not noise(*f)]
        if not fr:
            continue
        owner = whose(*fr[0])
        if owner != "libhdf5":
            return owner, fr[:3]
        found = found or ("libhdf5", fr[:3])
    return found or ("unknown", [])


def sort_find(kind, report):
    """(owner, top frames) of a report of @kind."""
    if kind == "leak":
        return sort_leak(report)
    fr = [f for f in first_stack(report) if not noise(*f)]
    if not fr:
        return "unknown", []
    return whose(*fr[0]), fr[:3]


def headline(report):
    m = re.search(r"(^fuzz: [^\n]*|ERROR: (?:AddressSanitizer|LeakSanitizer|libFuzzer): [^\n]*|"
                  r"runtime error: [^\n]*)", report, re.M)
    text = m.group(1) if m else report.strip().split("\n")[0] if report.strip() else "?"
    return re.sub(r"0x[0-9a-f]{6,}", "0x...", text)[:160]


def bug(kind, report):
    """What went wrong, in a word or two: heap-buffer-overflow, SEGV, timeout, ..."""
    m = re.search(r"ERROR: AddressSanitizer: ([a-z-]+|SEGV|FPE|BUS|ILL|ABRT)", report)
    if m:
        return {"requested": "allocation-size-too-big",
                "allocator": "allocator-out-of-memory"}.get(m.group(1), m.group(1))
    if re.search(r"runtime error:", report):
        return "undefined-behaviour"
    if re.search(r"^fuzz: ", report, re.M):
        return "identifiers-left-open"
    if kind == "crash" and "deadly signal" in report:
        return "deadly-signal"
    return {"oom": "out-of-memory"}.get(kind, kind)


def parse_log(text):
    """What one libFuzzer run did: executions, last cov/ft, the find."""
    execs = re.findall(r"stat::number_of_executed_units: (\d+)", text)
    if not execs:
        execs = re.findall(r"^Done (\d+) runs", text, re.M) or \
            re.findall(r"^#(\d+)\s", text, re.M)
    cov = re.findall(r"\bcov: (\d+) ft: (\d+)", text)
    art = re.findall(r"Test unit written to (\S+)", text)
    art = [a for a in art if not os.path.basename(a).startswith("slow-unit-")]
    find = None
    init_leak = "a leak has been found in the initial corpus" in text
    if art or init_leak:
        path = art[-1] if art else None  # a leak while loading the corpus: no unit
        kind = os.path.basename(path).split("-", 1)[0] if path else "leak"
        kind = kind if kind in KINDS else "crash"
        start = [m.start() for m in re.finditer(
            r"^.*(?:==\d+==\s*ERROR|runtime error:|ALARM: working on|^fuzz: )", text, re.M)]
        report = text[start[0] if start else 0:]
        owner, top = sort_find(kind, report)
        find = {"kind": kind, "artifact": path, "owner": owner,
                "frames": [short(*f) for f in top], "headline": headline(report),
                "bug": bug(kind, report), "where": named_stack(report, kind, owner)}
    return {"execs": int(execs[-1]) if execs else 0,
            "cov": int(cov[-1][0]) if cov else 0, "ft": int(cov[-1][1]) if cov else 0,
            "find": find}


def sha1(path):
    with open(path, "rb") as fp:
        return hashlib.sha1(fp.read()).hexdigest()


def make_seeds(build, work, again):
    seeds = os.path.join(work, "seeds")
    if again or not os.path.isdir(os.path.join(seeds, "catalog")):
        subprocess.run([sys.executable, os.path.join(HERE, "mkseeds.py"), "--synth",
                        os.path.join(build, "datasets", "kdl-synth"), seeds], check=True)
    for t in TARGETS:
        src = os.path.join(HERE, "corpus", t)
        for n in sorted(os.listdir(src)) if os.path.isdir(src) else []:
            if "-kdlens-" in n:
                shutil.copyfile(os.path.join(src, n), os.path.join(seeds, t, "corpus-" + n))
    return seeds


def libfuzzer(argv, log, cwd, leaks):
    """Run one libFuzzer process; return (exit status, CPU seconds, wall seconds, parse)."""
    env = dict(os.environ)
    # Leaks are looked for by sweep(), with whole stacks: here the fast
    # unwinder stops at the first libhdf5 frame (no frame pointers), so the
    # suppressions could not tell libhdf5's leaks from kdlens's.
    # A small quarantine: the default let freed blocks pile up past the RSS limit.
    env["ASAN_OPTIONS"] = ("detect_leaks=%d:fast_unwind_on_malloc=%d:malloc_context_size=30:"
                           "quarantine_size_mb=64:" % (leaks, not leaks) +
                           env.get("ASAN_OPTIONS", ""))
    t0 = time.monotonic()
    with open(log, "w") as fp:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fp, stderr=fp, cwd=cwd,
                             env=env)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    with open(log, errors="replace") as fp:
        r = parse_log(fp.read())
    return p.returncode, ru.ru_utime + ru.ru_stime, time.monotonic() - t0, r


def localize(exe, flags, dirs, arts, tdir):
    """The first input of @dirs that leaks by itself, copied to @arts; None if none."""
    log = os.path.join(tdir, "localize.log")
    for d in dirs:
        for n in sorted(os.listdir(d)):
            path = os.path.join(d, n)
            status, _, _, r = libfuzzer([exe, "-runs=1", "-detect_leaks=1", *flags, path], log,
                                        tdir, True)
            if status != 0 and r["find"] and r["find"]["owner"] != "unknown":
                dst = os.path.join(arts, "leak-" + sha1(path))
                shutil.copyfile(path, dst)
                return dst
    return None


def fuzz(args, t, exe, seeds, tdir):
    """Run target @t for its budget; return its figures and finds."""
    corpus, arts = os.path.join(tdir, "corpus"), os.path.join(tdir, "artifacts")
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(arts, exist_ok=True)
    budget = args.cpu_seconds or args.seconds
    wall = cpu = 0.0
    res = {"target": t, "runs": 0, "execs": 0, "cov": 0, "ft": 0, "finds": [], "errors": [],
           "seeds_dropped": []}
    flags = ["-timeout=%d" % args.timeout, "-rss_limit_mb=%d" % args.rss_mb,
             "-print_final_stats=1", "-artifact_prefix=" + arts + "/"]
    while budget - (cpu if args.cpu_seconds else wall) >= 1 and res["runs"] < args.max_runs:
        left = math.ceil(budget - (cpu if args.cpu_seconds else wall))
        log = os.path.join(tdir, "run-%d.log" % res["runs"])
        argv = [exe, "-max_total_time=%d" % left, "-detect_leaks=0",
                "-dict=" + os.path.join(HERE, "hdf5.dict"), *flags, corpus, seeds]
        status, c, w, r = libfuzzer(argv, log, tdir, False)
        wall, cpu = wall + w, cpu + c
        res["runs"] += 1
        res["execs"] += r["execs"]
        if r["cov"]:
            res["cov"], res["ft"] = max(res["cov"], r["cov"]), max(res["ft"], r["ft"])
        f = r["find"]
        if f is None:
            if status != 0:
                res["errors"].append("libFuzzer exited %d without a find: %s" % (status, log))
                break
            if not args.cpu_seconds:
                break
            continue
        f["log"] = log
        res["finds"].append(f)
        # A find that only fails after other inputs (HDF5 keeps state) may be
        # in the corpus or among the seeds: set it aside, or every start
        # would find it again.
        s = sha1(f["artifact"]) if os.path.exists(f["artifact"]) else ""
        for d in (corpus, seeds):
            for n in os.listdir(d):
                if sha1(os.path.join(d, n)) == s:
                    os.unlink(os.path.join(d, n))
                    if d == seeds:
                        res["seeds_dropped"].append(n)
    # The leak sweep: the whole corpus again, in one process, leaks on.
    log = os.path.join(tdir, "leaks.log")
    status, c, w, r = libfuzzer([exe, "-runs=0", "-detect_leaks=1", *flags, corpus, seeds],
                                log, tdir, True)
    wall, cpu = wall + w, cpu + c
    res["sweep"] = {"cpu": round(c, 1), "wall": round(w, 1), "execs": r["execs"]}
    if r["find"]:
        r["find"]["log"] = log
        if r["find"]["artifact"] is None:
            r["find"]["artifact"] = localize(exe, flags, [corpus, seeds], arts, tdir)
        res["finds"].append(r["find"])
    elif status != 0:
        res["errors"].append("the leak sweep exited %d without a find: %s" % (status, log))
    res.update(wall=round(wall, 1), cpu=round(cpu, 1), corpus=len(os.listdir(corpus)))
    return res


def contained(args, build, finds, tmp):
    """Replay the libhdf5 finds through the CLI; set each one's "contained"."""
    todo = [f for f in finds if judged_by_cli(f) and f["artifact"] and
            os.path.exists(f["artifact"])]
    if not todo:
        return
    d = tempfile.mkdtemp(prefix="contain-", dir=tmp)
    for f in todo:
        shutil.copyfile(f["artifact"], os.path.join(d, os.path.basename(f["artifact"])))
    p = subprocess.run([sys.executable, os.path.join(HERE, "run-cases.py"), "--no-cases",
                        "--kdlens", os.path.join(build, "analysis", "kdlens"), "--corpus", d],
                       capture_output=True, text=True)
    for f in todo:
        name = "corpus-" + os.path.basename(f["artifact"])
        rows = [l for l in p.stdout.splitlines() if l.startswith(name[:30] + " ")]
        f["contained"] = bool(rows) and all(" ok " in l for l in rows)
        if not f["contained"]:
            f["cli"] = rows or p.stdout.splitlines()[-3:]


def group(finds):
    out = {}
    for f in finds:
        key = (f["bug"], f["owner"], tuple(f["where"]))
        g = out.setdefault(key, {"kind": f["kind"], "bug": f["bug"], "owner": f["owner"],
                                 "where": f["where"], "frames": f["frames"],
                                 "headline": f["headline"], "count": 0, "artifacts": [],
                                 "contained": True})
        g["count"] += 1
        g["artifacts"].append(f["artifact"] or "(none: " + f["log"] + ")")
        if "contained" in f:
            g["checked"] = g.get("checked", 0) + 1
            g["contained"] = g["contained"] and f["contained"]
    for g in out.values():
        g["contained"] = g["contained"] and g.get("checked", 0) > 0
    return list(out.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("targets", nargs="*", default=list(TARGETS))
    ap.add_argument("--seconds", type=float, default=300.0, help="wall-clock time per target")
    ap.add_argument("--cpu-seconds", type=float, help="CPU time per target, instead")
    ap.add_argument("--work", help="default: BUILD/fuzz-campaign (--ci: BUILD/fuzz-ci)")
    ap.add_argument("--ci", action="store_true", help="fresh corpus; exit 1 on a kdlens find")
    ap.add_argument("--timeout", type=int, default=10, help="libFuzzer -timeout, seconds")
    ap.add_argument("--rss-mb", type=int, default=2048, help="libFuzzer -rss_limit_mb")
    ap.add_argument("--max-runs", type=int, default=1000, help="libFuzzer restarts per target")
    args = ap.parse_intermixed_args()
    build = os.path.abspath(args.build)
    work = os.path.abspath(args.work or os.path.join(build, "fuzz-ci" if args.ci
                                                     else "fuzz-campaign"))
    for t in args.targets:
        if t not in TARGETS:
            ap.error("unknown target %r" % t)
    os.makedirs(work, exist_ok=True)
    seeds = make_seeds(build, work, args.ci)
    env = os.environ
    env.pop("KDL_FUZZ_ISOLATE", None)
    env.setdefault("LSAN_OPTIONS", "suppressions=" + os.path.join(HERE, "lsan.supp"))
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    tmp = tempfile.mkdtemp(prefix="kdl-fuzz-", dir=shm)
    env["KDL_FUZZ_DIR"] = tmp
    results, bad = [], 0
    try:
        for t in args.targets:
            tdir = os.path.join(work, t)
            if args.ci:
                shutil.rmtree(tdir, ignore_errors=True)
            r = fuzz(args, t, os.path.join(build, "tests", "fuzz", "fuzz-" + t),
                     os.path.join(seeds, t), tdir)
            # --ci: one find of each group through the CLI, to keep the time bounded
            firsts = {}
            for f in r["finds"]:
                firsts.setdefault((f["bug"], f["owner"], tuple(f["where"])), f)
            contained(args, build, list(firsts.values()) if args.ci else r["finds"], tmp)
            r["unique"] = group(r["finds"])
            results.append(r)
            print("%s: %d libFuzzer runs, %d executions, %.0f s wall, %.0f s CPU (%.0f exec/s "
                  "of CPU), cov %d, ft %d, corpus %d; %d finds, %d unique" %
                  (t, r["runs"], r["execs"], r["wall"], r["cpu"], r["execs"] / max(r["cpu"], 1),
                   r["cov"], r["ft"], r["corpus"], len(r["finds"]), len(r["unique"])))
            for g in r["unique"]:
                ok = judged_by_cli(g) and g["contained"]
                bad += not ok
                print("  %-7s x%-3d %-8s %s: %s in %s" %
                      (g["kind"], g["count"], g["owner"], "contained" if ok else "FAIL",
                       g["bug"], " < ".join(g["where"]) or "?"))
                print("      " + g["headline"])
                for fr in g["frames"]:
                    print("      " + fr)
                print("      e.g. " + g["artifacts"][0])
            for e in r["errors"]:
                bad += 1
                print("  FAIL " + e)
            for n in r["seeds_dropped"]:
                print("  note: seed %s set aside: it failed (after other inputs)" % n)
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "argv": sys.argv,
               "results": results}
    with open(os.path.join(work, "summary.json"), "w") as fp:
        json.dump(summary, fp, indent=1)
    print("run-fuzz: %d executions in %.0f s of CPU; %s" %
          (sum(r["execs"] for r in results), sum(r["cpu"] for r in results),
           "%d find(s) kdlens owns, of no known owner, or not contained" % bad if bad
           else "nothing kdlens owns; every libhdf5 find contained"))
    if bad:
        print("run-fuzz: keep each find as tests/fuzz/corpus/TARGET/KIND-OWNER-WHAT "
              "(HACKING.md, \"Fuzzing\")")
    return 1 if bad and args.ci else 0


if __name__ == "__main__":
    sys.exit(main())
