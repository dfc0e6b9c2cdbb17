# SPDX-License-Identifier: MIT
"""Shared helpers for kdlens's Python tests (run with /usr/bin/python3).

A test file defines functions named test_*, then calls kdltest.main(globals()).
Each test runs in isolation; the run ends with the line 'N passed, M failed'
and a non-zero exit status when anything failed.
"""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

KDLENS = os.environ.get("KDLENS", "kdlens")
FIXTURES = os.environ.get("KDL_FIXTURES", "")


def run(*args, check=None, input=None):
    """Run kdlens with args; returns (status, stdout, stderr)."""
    p = subprocess.run([KDLENS, *map(str, args)], capture_output=True, text=True,
                       input=input, timeout=600)
    if check is not None and p.returncode != check:
        raise AssertionError(f"kdlens {' '.join(map(str, args))}: exit {p.returncode}, "
                             f"expected {check}\nstdout: {p.stdout[-2000:]}\n"
                             f"stderr: {p.stderr[-2000:]}")
    return p.returncode, p.stdout, p.stderr


def run_json(*args):
    """Run kdlens ... --format json and parse the document."""
    _, out, _ = run(*args, "--format", "json", check=0)
    return json.loads(out)


def records(doc, table):
    return [r for r in doc["results"] if r["table"] == table]


def assert_close(actual, expected, rtol=1e-9, atol=0.0, what=""):
    if actual is None or not abs(actual - expected) <= atol + rtol * abs(expected):
        raise AssertionError(f"{what}: got {actual!r}, expected {expected!r} "
                             f"(rtol {rtol}, atol {atol})")


def one_line_error(stderr, *needles):
    """Bad input gets exactly one line on stderr, naming what the needles say."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    if len(lines) != 1:
        raise AssertionError(f"expected one line on stderr, found {len(lines)}: {stderr!r}")
    for n in needles:
        if n not in lines[0]:
            raise AssertionError(f"expected {n!r} in the error line {lines[0]!r}")


def tmpdir():
    """A fresh directory, removed when the test program exits."""
    d = tempfile.mkdtemp(prefix="kdl-test-")
    atexit.register(shutil.rmtree, d, True)
    return d


def require_torch_and_fashion_mnist():
    """Exit 77 (meson's "skipped") without python3-torch or
    dataset-fashion-mnist; CI installs both."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("python3-torch is not installed: skipped")
        sys.exit(77)
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        print("dataset-fashion-mnist is not installed: skipped")
        sys.exit(77)


def main(namespace):
    only = sys.argv[1:]
    tests = [(k, v) for k, v in namespace.items() if k.startswith("test_") and callable(v)]
    passed = failed = 0
    for name, fn in tests:
        if only and name not in only:
            continue
        try:
            fn()
        except Exception:  # report and go on: one failure must not hide the others
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)
