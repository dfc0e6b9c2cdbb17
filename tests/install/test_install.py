# SPDX-License-Identifier: MIT
"""`meson install` into a DESTDIR, then a program built against it with
`pkg-config --cflags --libs kdlens`; run as tests/meson.build says.

Environment: MESON (the meson program), KDL_BUILD_ROOT (the build directory
to install), CC (the C compiler), KDL_SANITIZE (the build's b_sanitize: a
sanitized libkdlens needs its program linked with the same -fsanitize).
"""
import glob
import os
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import kdltest  # noqa: E402
from kdltest import assert_close, tmpdir  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# The public headers (HACKING.md, "Public headers"), under include/kdlens/.
PUBLIC = sorted(["metrics/base/error.h", "metrics/base/tensor.h", "metrics/cka.h", "metrics/kl.h",
                 "metrics/moments.h", "metrics/quality.h", "metrics/sample.h",
                 "metrics/spectral.h", "metrics/split.h"])
# Linear CKA of hello-kdlens.c's two 8-sample layers: the squared Pearson correlation
# (numpy float64, printed %.17g).
HELLO_CKA = 0.73899661434287478


def sh(*args, env=None):
    p = subprocess.run(args, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p.stdout


class Installed:
    """One `meson install --destdir` of the build, shared by the tests."""
    _dir = None

    @classmethod
    def get(cls):
        if cls._dir is None:
            dest = os.path.join(tmpdir(), "root")
            sh(os.environ["MESON"], "install", "-C", os.environ["KDL_BUILD_ROOT"], "--no-rebuild",
               "--destdir", dest, "--quiet")
            cls._dir = dest
        return cls._dir


def one(pattern):
    found = glob.glob(os.path.join(Installed.get(), pattern), recursive=True)
    if len(found) != 1:
        raise AssertionError(f"expected one {pattern} in the DESTDIR, found {found}")
    return found[0]


def pkg_env():
    """pkg-config looking at the DESTDIR's kdlens.pc, its paths inside the DESTDIR."""
    pc = one("**/pkgconfig/kdlens.pc")
    return {**os.environ, "PKG_CONFIG_PATH": os.path.dirname(pc),
            "PKG_CONFIG_SYSROOT_DIR": Installed.get()}


def cc():
    return shlex.split(os.environ.get("CC", "cc"))


def sanitize_flags():
    s = os.environ.get("KDL_SANITIZE", "none")
    return [] if s in ("", "none") else [f"-fsanitize={s}"]


def libdir():
    return os.path.dirname(one("**/libkdlens.so"))


def test_installed_files():
    dest = Installed.get()
    one("**/bin/kdlens")
    one("**/libkdlens.so")
    include = os.path.dirname(os.path.dirname(one("**/include/kdlens/metrics/cka.h")))
    headers = sorted(os.path.relpath(p, include)
                     for p in glob.glob(os.path.join(include, "**", "*.h"), recursive=True))
    if headers != PUBLIC:
        raise AssertionError(f"installed headers {headers}, expected {PUBLIC}")
    if glob.glob(os.path.join(dest, "**", "*-internal.h"), recursive=True):
        raise AssertionError("an internal header was installed")


def test_each_public_header_compiles_alone():
    cflags = sh("pkg-config", "--cflags", "kdlens", env=pkg_env()).split()
    for h in PUBLIC:
        sh(*cc(), "-std=c11", "-Wall", "-Wextra", "-Werror", *cflags,
           "-fsyntax-only", "-include", h, "-x", "c", "/dev/null")


def test_a_program_builds_and_runs_against_it():
    flags = sh("pkg-config", "--cflags", "--libs", "kdlens", env=pkg_env()).split()
    if f"-I{Installed.get()}" not in " ".join(flags):
        raise AssertionError(f"pkg-config's flags do not point into the DESTDIR: {flags}")
    exe = os.path.join(tmpdir(), "hello-kdlens")
    sh(*cc(), "-Wall", "-Wextra", "-Werror", *sanitize_flags(),
       os.path.join(HERE, "hello-kdlens.c"), "-o", exe, *flags)
    env = {**os.environ, "LD_LIBRARY_PATH": libdir()}
    assert_close(float(sh(exe, env=env)), HELLO_CKA, rtol=1e-14, what="hello-kdlens")
    # It runs the installed library, not the build tree's.
    maps = sh("ldd", exe, env=env)
    if os.path.join(libdir(), "libkdlens.so.0") not in maps:
        raise AssertionError(f"hello-kdlens does not load the DESTDIR's library:\n{maps}")


def test_the_installed_program_runs():
    env = {**os.environ, "LD_LIBRARY_PATH": libdir()}
    out = sh(one("**/bin/kdlens"), "--version", env=env)
    if not out.startswith("kdlens "):
        raise AssertionError(f"unexpected --version output {out!r}")


kdltest.main(globals())
