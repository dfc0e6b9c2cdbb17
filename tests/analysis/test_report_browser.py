#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Headless Chromium loads a report's index.html: every figure image decodes, the
summary table at the top has a row per model and checkpoint, every in-page link
has its anchor, and screenshots of the top of the page and of the whole page are
taken (copied into $KDL_ARTIFACTS when set, to be looked at).  Exit 77 (skipped)
without chromium."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Appended to a copy of index.html: the page's title reports how many images decoded, the
# rows of the summary table and the in-page links without an anchor.
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var links = Array.from(document.querySelectorAll('a[href^="#"]'));
  var missing = links.filter(function (a) {
    return !document.getElementById(a.getAttribute('href').slice(1)); }).length;
  var rows = document.querySelectorAll('table.summary tr').length - 1;
  document.title = 'images ' + ok + '/' + imgs.length + ' summary ' + rows + ' links ' +
    links.length + ' missing ' + missing;
});
</script>"""


def chromium(*args):
    profile = tempfile.mkdtemp(prefix="kdl-chromium-")
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def test_browser_shows_every_figure():
    out = os.path.join(kt.tmpdir(), "rep")
    kt.run("report", "-t", os.path.join(kt.FIXTURES, "teacher.h5"), "-s",
           os.path.join(kt.FIXTURES, "student.h5"), "-o", out, "--quiet", check=0)
    html = open(os.path.join(out, "index.html")).read()
    nimg = len(re.findall(r"<img ", html))
    probe = os.path.join(out, "probe.html")
    with open(probe, "w") as fh:
        fh.write(html.replace("</body>", PROBE + "</body>"))
    p = chromium("--virtual-time-budget=10000", "--dump-dom", "file://" + probe)
    m = re.search(r"<title>images (\d+)/(\d+) summary (\d+) links (\d+) missing (\d+)</title>",
                  p.stdout)
    assert m, p.stdout[:500] + p.stderr[-500:]
    assert int(m.group(2)) == nimg and int(m.group(1)) == nimg, m.group(0)
    # The teacher's row and one per student checkpoint; every number and the contents linked.
    nck = len(kt.records(kt.run_json("summary", "-t", os.path.join(kt.FIXTURES, "teacher.h5"),
                                     "-s", os.path.join(kt.FIXTURES, "student.h5"), "-c", "all"),
                         "summary"))
    assert int(m.group(3)) == nck > 1 and int(m.group(4)) > nimg, m.group(0)
    assert int(m.group(5)) == 0, m.group(0)
    # The first screen a reader sees: the summary table.
    top = os.path.join(out, "top.png")
    chromium("--window-size=1280,1600", f"--screenshot={top}", "file://" + os.path.join(out, "index.html"))
    assert open(top, "rb").read(4) == b"\x89PNG"
    shot = os.path.join(out, "screenshot.png")
    chromium("--window-size=1200,3000", f"--screenshot={shot}", "file://" + os.path.join(out, "index.html"))
    data = open(shot, "rb").read()
    assert data.startswith(b"\x89PNG") and len(data) > 100_000, len(data)
    if os.environ.get("KDL_ARTIFACTS"):
        os.makedirs(os.environ["KDL_ARTIFACTS"], exist_ok=True)
        for f in (top, shot):
            shutil.copy(f, os.path.join(os.environ["KDL_ARTIFACTS"], "report-" + os.path.basename(f)))


if __name__ == "__main__":
    if not CHROMIUM or not os.environ.get("KDL_GNUPLOT"):
        print("chromium or gnuplot not installed: skipped")
        sys.exit(77)
    kt.main(globals())
