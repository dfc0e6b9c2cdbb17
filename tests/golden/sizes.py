#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Sizes of the non-test C sources: lines per file and lines per function.

    /usr/bin/python3 tests/golden/sizes.py [--top N] [--over LINES]

A function is a line at column 0 that ends a declarator (it holds '(' and the next
line, or itself, opens '{' at column 0) up to the matching '}' at column 0: the
layout clang-format gives this project. Used to check the one-concept-per-file
limits (no file over 800 lines, no function over 120).
"""
import argparse
import os
import re
import subprocess


def sources(root):
    out = subprocess.run(["git", "ls-files", "*.c", "*.h"], cwd=root, capture_output=True,
                         text=True, check=True).stdout.split()
    return [f for f in out if not f.startswith("tests/")]


def functions(path):
    lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
    found = []
    i = 0
    while i < len(lines):
        if lines[i] == "{" and i > 0:
            j = i - 1
            while j > 0 and not re.match(r"^[A-Za-z_]", lines[j]):
                j -= 1
            m = re.search(r"([A-Za-z_][A-Za-z_0-9]*)\s*\(", lines[j])
            k = i + 1
            while k < len(lines) and lines[k] != "}":
                k += 1
            if m:
                found.append((k - j + 1, m.group(1)))
            i = k
        i += 1
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--over", type=int, default=600)
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when a file is over 800 lines or a function over 120")
    a = ap.parse_args()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    files, funcs = [], []
    for f in sources(root):
        p = os.path.join(root, f)
        n = sum(1 for _ in open(p, encoding="utf-8", errors="replace"))
        files.append((n, f))
        if f.endswith(".c"):
            funcs += [(n_, name, f) for n_, name in functions(p)]
    files.sort(reverse=True)
    funcs.sort(reverse=True)
    print(f"files: {len(files)}; over {a.over} lines: {sum(n > a.over for n, _ in files)}; "
          f"over 800: {sum(n > 800 for n, _ in files)}")
    for n, f in files:
        if n > a.over:
            print(f"  {n:5d}  {f}")
    print(f"functions: {len(funcs)}; over 60 lines: {sum(n > 60 for n, *_ in funcs)}; "
          f"over 120: {sum(n > 120 for n, *_ in funcs)}")
    for n, name, f in funcs[:a.top]:
        print(f"  {n:5d}  {name} ({f})")
    if a.check:
        bad = [f"{f}: {n} lines (limit 800)" for n, f in files if n > 800]
        bad += [f"{name} ({f}): {n} lines (limit 120)" for n, name, f in funcs if n > 120]
        for b in bad:
            print("over the limit:", b)
        print(f"{1 if not bad else 0} passed, {1 if bad else 0} failed")
        raise SystemExit(1 if bad else 0)


main()
