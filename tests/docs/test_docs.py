#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The method reference in docs/ is whole and every citation of it resolves.

- every link between docs/ pages points at a page and a heading that exist;
- every `docs/PAGE.md#anchor` cited anywhere in the tracked tree (README, help
  text, report captions, headers) exists;
- nothing a user or contributor reads cites a file outside the repository
  (the team's internal notes, which live beside the repository, not in it).
Anchors follow GitHub's rule: inline code marks dropped, lower-case, every
character but letters, digits, '_', '-' and space dropped, spaces to '-'.
"""
import collections
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DOCS = os.path.join(ROOT, "docs")


def anchor(text):
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def page_anchors():
    out = {}
    for name in sorted(os.listdir(DOCS)):
        if not name.endswith(".md"):
            continue
        seen, found, code = collections.Counter(), set(), False
        for line in open(os.path.join(DOCS, name), encoding="utf-8"):
            if line.startswith("```"):
                code = not code
                continue
            m = None if code else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                a = anchor(m.group(1))
                found.add(a if seen[a] == 0 else f"{a}-{seen[a]}")
                seen[a] += 1
        out[name] = found
    return out


def tracked():
    files = subprocess.run(["git", "-C", ROOT, "ls-files"], capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        p = os.path.join(ROOT, f)
        if not os.path.isfile(p) or f.endswith((".h5", ".png", ".pdf")):
            continue
        try:
            yield f, open(p, encoding="utf-8").read()
        except UnicodeDecodeError:
            continue


def main():
    pages = page_anchors()
    bad = []
    links = 0
    for name in pages:
        text = open(os.path.join(DOCS, name), encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            links += 1
            f, _, a = target.partition("#")
            f = f or name
            if f not in pages or (a and a not in pages[f]):
                bad.append(f"docs/{name}: broken link {target}")
    cites = 0
    # Spelled in pieces so that grep finds no citation in this file either.
    notes = "MA" + "TH"
    outside = re.compile(notes + r"\.md|\.\./" + "shared|\\b" + notes + r" \d")
    for f, text in tracked():
        if f == "tests/docs/test_docs.py" or f.startswith(".ci/"):
            continue
        for m in re.finditer(r"docs/([A-Za-z0-9_-]+\.md)(#[A-Za-z0-9_-]+)?", text):
            cites += 1
            page, a = m.group(1), (m.group(2) or "#")[1:]
            if page not in pages or (a and a not in pages[page]):
                bad.append(f"{f}: cites docs/{page}#{a}, which does not exist")
        for n, line in enumerate(text.split("\n"), 1):
            if outside.search(line):
                bad.append(f"{f}:{n}: cites a file outside the repository: {line.strip()[:80]}")
    for b in bad:
        print(b)
    print(f"docs pages {len(pages)}, links {links}, citations {cites}")
    print(f"{0 if bad else 1} passed, {1 if bad else 0} failed")
    return 1 if bad else 0


sys.exit(main())
