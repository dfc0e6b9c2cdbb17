#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Run kdlens on every hostile input and check that nothing crashes, hangs
or blows up, and that each bad file is refused with one line naming it.

usage: run-cases.py [--kdlens PATH] [--cases DIR | --no-cases] [--corpus DIR] [--timeout S]
                    [--rss-mib M] [--asan | --no-asan] [--backtrace] [-v] [NAME...]

Without --cases, mkcases.py writes the cases into a temporary directory;
--no-cases runs none of them (only --corpus).
--corpus DIR also replays every file under DIR (the fuzzers' crash files,
tests/fuzz/corpus/) through inspect, kl (the file as teacher and student)
and cka, where exit 0 and exit 1 are both fine.  NAMEs run only those cases.

Each command of each case (manifest.json: inspect, kl, cka, and for the
valid ones report, layers, dims and split, the last with a --per-sample file
named like the odd inputs) runs in its own process, from the cases directory, and
fails on any of:
  - a signal (a sanitizer report counts as one: it aborts);
  - no exit within --timeout seconds (20): killed, reported as a hang;
  - a peak resident set above --rss-mib MiB (512), measured by wait4();
  - an exit status other than the manifest's;
  - stderr: for exit 1, not exactly one line naming the input file
    (inspect lists every problem of the file, so there: one or more lines,
    each naming it), or a line without HDF5's reason ("unknown HDF5
    error", "HDF5 gave no reason"); for exit 0, anything at all.
Memory is also capped so that a blow-up cannot take the machine down: in a
plain build with RLIMIT_DATA at twice --rss-mib (malloc then returns NULL,
so a single huge request fails quietly and only its consequences show);
under AddressSanitizer (detected with ldd, or --asan), where RLIMIT_DATA
would count the shadow memory, with ASAN_OPTIONS hard_rss_limit_mb and
max_allocation_size_mb at the same size and allocator_may_return_null=0, so
there any single request above the cap is itself a failure, with the stack
of whoever made it.
--backtrace attaches gdb to a hung process, and reruns a crashed command
under gdb, to print where it was; -v shows the first lines of every stderr.

The table ends with the line 'N passed, M failed'; the exit status is 1
when anything failed.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
COMMANDS = ("inspect", "kl", "cka", "report", "layers", "dims", "split")


def is_asan(exe):
    """Whether @exe is built with AddressSanitizer: linked to gcc's libasan,
    or carrying clang's (linked in statically)."""
    try:
        out = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
        with open(exe, "rb") as fp:
            static = b"__asan_init" in fp.read()
    except OSError:
        return False
    return "libasan" in out or "libclang_rt.asan" in out or static


def make_input(kind, cases, name):
    """Create an input that is not a regular file; return the path to pass."""
    path = os.path.join(cases, name)
    if kind == "devnull":
        return "/dev/null"
    if kind == "devzero":
        return "/dev/zero"
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "symlink-loop":
        os.symlink(name, path)
    elif kind != "missing":
        raise SystemExit("run-cases: unknown input kind %r" % kind)
    return name


PER_SAMPLE = " per-sample ü %s%n \"q\" 'a'.h5"


def command(kdlens, cmd, case, path, partner, outdir):
    role = case.get("role", "teacher")
    other = path if partner == "self" else partner
    t, s = (path, other) if role == "teacher" else (other, path)
    if cmd == "inspect":
        return [kdlens, "inspect", path]
    # A file given as both teacher and student holds one role: the role check
    # (exit 2) would stop kl before it reads anything, so say it is meant.
    same = ["--ignore-roles"] if t == s else []
    if cmd == "kl":
        return [kdlens, "kl", "-t", t, "-s", s] + same
    if cmd == "cka":
        return [kdlens, "cka", path]
    if cmd in ("layers", "dims"):
        return [kdlens, cmd, "-t", t, "-s", s] + same
    if cmd == "split":  # and an output file whose name is as odd as the inputs'
        return [kdlens, "split", "-t", t, "-s", s, "--per-sample", outdir + PER_SAMPLE] + same
    return [kdlens, "report", "-t", t, "-s", s, "-o", outdir, "--quiet"] + same


def gdb_backtrace(argv_or_pid, cwd, env):
    """Threads' backtraces of a live process (a pid) or of a rerun (argv)."""
    if not shutil.which("gdb"):
        return "(gdb not installed)"
    if isinstance(argv_or_pid, int):
        args = ["gdb", "-p", str(argv_or_pid), "-batch", "-ex", "thread apply all bt 12"]
    else:
        args = ["gdb", "-batch", "-ex", "run", "-ex", "bt 12", "--args", *argv_or_pid]
    try:
        p = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=60,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "(gdb timed out)"
    return "\n".join(l for l in p.stdout.splitlines() if re.match(r"#\d+ |Thread |Program", l))


def run(argv, cwd, env, timeout, data_limit, backtrace):
    """Run @argv; return (status or None on timeout, seconds, peak RSS MiB, stderr, bt)."""
    def limit():
        if data_limit:
            resource.setrlimit(resource.RLIMIT_DATA, (data_limit, data_limit))

    t0 = time.monotonic()
    bt = ""
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                             preexec_fn=limit)
        status = None
        while True:
            pid, st, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(st)
                break
            if time.monotonic() - t0 > timeout:
                if backtrace:
                    bt = gdb_backtrace(p.pid, cwd, env)
                os.killpg(p.pid, signal.SIGKILL)
                pid, st, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.01)
        p.returncode = 0  # reaped above; keep Popen from waiting again
        secs = time.monotonic() - t0
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    return status, secs, ru.ru_maxrss / 1024.0, text, bt


SAN = re.compile(r"(ERROR: (Address|Leak)Sanitizer: [^\n]*|runtime error: [^\n]*)")
FRAME = re.compile(r"^\s*#(\d+) 0x[0-9a-f]+ +(?:in (\S+) )?(.*)$")
RUNTIME = ("__interceptor_", "__asan", "__sanitizer", "__ubsan", "__lsan", "malloc", "calloc",
           "realloc", "free", "operator", "__libc_start", "_start")


def first_stack(text):
    """[(function or "", location)] of the first stack in a sanitizer report."""
    out = []
    for line in text.splitlines():
        m = FRAME.match(line)
        if m:
            if m.group(1) == "0" and out:
                break
            out.append((m.group(2) or "", m.group(3)))
        elif out:
            break
    return out


def frames(text, n=4):
    """The first @n frames of the first stack in a sanitizer report."""
    short = re.compile(r"\(?(/\S+/)?([^/\s]+?)(\+0x[0-9a-f]+)?\)?$")
    return ["%s (%s)" % (fn or "??", short.sub(r"\2", re.sub(r"\s*\(BuildId: \w+\)", "", loc)))
            for fn, loc in first_stack(text)[:n]]


def entry(text):
    """The first kdlens frame of a report: where kdlens called in."""
    for line in text.splitlines():
        m = FRAME.match(line)
        if m and (m.group(2) or "").startswith(("kdl", "cmd_")):
            return "%s (%s)" % (m.group(2), m.group(3).rsplit("/", 1)[-1])
    return ""


def owner(text):
    """Whose code the first non-runtime frame of a report is in."""
    for line in text.splitlines():
        m = FRAME.match(line)
        fn = m.group(2) or "" if m else ""
        if not m or fn.startswith(RUNTIME) or "libasan" in m.group(3):
            continue
        loc = m.group(3)
        if "libhdf5" in loc or fn.startswith("H5"):
            return "libhdf5"
        if "libz" in loc or fn.startswith(("inflate", "deflate")):
            return "zlib"
        if "libc.so" in loc:
            continue
        return "kdlens"
    return ""


# HDF5's error stack read too late (after a handle was closed) is empty.
NO_REASON = re.compile(r"unknown HDF5 error|HDF5 gave no reason")


def check(expect, cmd, path, status, rss, stderr, rss_cap):
    """Return the list of reasons this run failed (empty: passed)."""
    why = []
    lines = [l for l in stderr.splitlines() if l.strip()]
    san = SAN.search(stderr)
    if status is None:
        why.append("hang")
    elif status < 0:
        why.append("signal %s" % signal.Signals(-status).name)
    if san:
        why.append("sanitizer: " + san.group(1).strip()[:120])
    if rss > rss_cap:
        why.append("RSS %.0f MiB" % rss)
    if status is None or status < 0 or san:
        return why
    allowed = (0, 1) if expect is None else (expect,)
    if status not in allowed:
        why.append("exit %d, expected %s" % (status, " or ".join(map(str, allowed))))
    elif status == 0 and lines:
        why.append("exit 0 with %d line(s) on stderr" % len(lines))
    elif status == 1:
        if not lines:
            why.append("exit 1 with nothing on stderr")
        elif cmd != "inspect" and len(lines) != 1:
            why.append("%d lines on stderr, expected 1" % len(lines))
        elif any(path not in l for l in lines):
            why.append("stderr does not name %r" % path)
        elif any(NO_REASON.search(l) for l in lines):
            why.append("an error without HDF5's reason")
    return why


def load_cases(args, tmp):
    cases_dir = args.cases
    if args.no_cases:
        cases_dir = os.path.join(tmp, "cases")
        os.makedirs(cases_dir)
        cases = []
    else:
        if not cases_dir:
            cases_dir = os.path.join(tmp, "cases")
            subprocess.run([sys.executable, os.path.join(HERE, "mkcases.py"), cases_dir],
                           check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(cases_dir, "manifest.json")) as fp:
            cases = json.load(fp)
    if args.corpus:
        for root, _, names in sorted(os.walk(args.corpus)):
            for n in sorted(names):
                src = os.path.join(root, n)
                dst = "corpus-" + os.path.relpath(src, args.corpus).replace("/", "-")
                shutil.copyfile(src, os.path.join(cases_dir, dst))
                cases.append({"name": dst, "file": dst, "provokes": "fuzzer find " + src,
                              "expect": {"inspect": None, "kl": None, "cka": None},
                              "role": "teacher", "partner": "self", "make": None})
    if args.names:
        cases = [c for c in cases if c["name"] in args.names]
    return cases_dir, cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kdlens", default=os.environ.get("KDLENS", "kdlens"))
    ap.add_argument("--cases")
    ap.add_argument("--no-cases", action="store_true")
    ap.add_argument("--corpus")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--rss-mib", type=float, default=512.0)
    ap.add_argument("--asan", action="store_true", default=None)
    ap.add_argument("--no-asan", dest="asan", action="store_false")
    ap.add_argument("--backtrace", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="show stderr of every run")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    kdlens = shutil.which(args.kdlens) or args.kdlens
    kdlens = os.path.abspath(kdlens)
    asan = is_asan(kdlens) if args.asan is None else args.asan
    cap_mib = int(2 * args.rss_mib)

    env = dict(os.environ)
    env["LC_ALL"] = "C.UTF-8"
    env["OPENBLAS_NUM_THREADS"] = "1"
    if asan:
        env["ASAN_OPTIONS"] = ":".join([
            "abort_on_error=1", "halt_on_error=1", "detect_leaks=1",
            "allocator_may_return_null=0", "max_allocation_size_mb=%d" % cap_mib,
            "hard_rss_limit_mb=%d" % cap_mib, "quarantine_size_mb=32", "malloc_context_size=12",
            "fast_unwind_on_malloc=0",
            os.environ.get("ASAN_OPTIONS", "")])
        env["UBSAN_OPTIONS"] = ("halt_on_error=1:abort_on_error=1:print_stacktrace=1:" +
                                os.environ.get("UBSAN_OPTIONS", ""))

    tmp = tempfile.mkdtemp(prefix="kdl-hostile-")
    try:
        cases_dir, cases = load_cases(args, tmp)
        print("kdlens: %s (%s), timeout %g s, RSS limit %g MiB, cases: %s" %
              (kdlens, "ASan" if asan else "plain", args.timeout, args.rss_mib, cases_dir))
        print("%-30s %-8s %-4s %-4s %7s %8s  %s" %
              ("case", "command", "ok", "exit", "seconds", "RSS MiB", "failure"))
        passed = failed = 0
        details = []
        for c in cases:
            path = make_input(c["make"], cases_dir, c["file"]) if c.get("make") else c["file"]
            if c["name"] == "head-weight-external-fifo":
                make_input("fifo", cases_dir, "hostile-fifo")
            for cmd in COMMANDS:
                if cmd not in c["expect"]:
                    continue
                expect = c["expect"][cmd]
                outdir = os.path.join(tmp, "report-" + c["name"])
                argv = command(kdlens, cmd, c, path, c["partner"], outdir)
                status, secs, rss, stderr, bt = run(argv, cases_dir, env, args.timeout,
                                                    None if asan else cap_mib << 20,
                                                    args.backtrace)
                shutil.rmtree(outdir, ignore_errors=True)
                if os.path.exists(outdir + PER_SAMPLE):
                    os.unlink(outdir + PER_SAMPLE)
                why = check(expect, cmd, path, status, rss, stderr, args.rss_mib)
                if why and args.backtrace and status is not None and status < 0 \
                        and not SAN.search(stderr):
                    bt = gdb_backtrace(argv, cases_dir, env)
                passed += not why
                failed += bool(why)
                print("%-30s %-8s %-4s %-4s %7.2f %8.1f  %s" %
                      (c["name"][:30], cmd, "FAIL" if why else "ok",
                       "-" if status is None else status, secs, rss, "; ".join(why)))
                if args.verbose:
                    for l in stderr.splitlines()[:3]:
                        print("%43s%s" % ("| ", l[:200]))
                sys.stdout.flush()
                if why:
                    details.append((c, cmd, argv, why, stderr, bt))
        if details:
            print("\nFailures:")
        for c, cmd, argv, why, stderr, bt in details:
            print("\n%s / %s: %s" % (c["name"], cmd, "; ".join(why)))
            print("  provokes: %s" % c["provokes"])
            print("  command:  %s" % " ".join(repr(a) if " " in a else a for a in argv[1:]))
            fr = frames(stderr)
            if fr:
                print("  owner:    %s" % (owner(stderr) or "?"))
                print("  frames:   " + "\n            ".join(fr))
                if entry(stderr) and entry(stderr) not in "".join(fr):
                    print("  via:      " + entry(stderr))
            lines = [l for l in stderr.splitlines() if l.strip()]
            for l in lines[:3]:
                print("  stderr:   " + l[:300])
            if len(lines) > 3:
                print("  stderr:   ... (%d lines)" % len(lines))
            for l in bt.splitlines()[:14]:
                print("  gdb:      " + l[:200])
        print("%d passed, %d failed" % (passed, failed))
        return 1 if failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
