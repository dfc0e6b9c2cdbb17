# SPDX-License-Identifier: MIT
"""Where the ``kdlens`` program and the ``libkdlens`` shared library are.

Each is looked for in this order; the first that exists wins:

1. an environment variable: ``KDLENS`` (the program) and ``KDLENS_LIB`` (the
   library), full paths;
2. the build tree next to the package: when the package is used in place
   from a checkout (``<checkout>/python/kdlens``, imported directly or
   through an editable install), ``<checkout>/build/analysis/`` as
   ``./bootstrap.sh`` and ``meson setup build`` make it;
3. installed: the program on ``PATH``; the library beside that program
   (a build tree) or in its prefix's ``lib``, ``lib64`` or
   ``lib/<multiarch>`` directory (``meson install``), then wherever the
   dynamic linker finds ``libkdlens.so`` (``ldconfig``).
"""
from __future__ import annotations

import ctypes.util
import glob
import os
import shutil
import sysconfig
from typing import List, Optional

__all__ = ["binary_path", "library_path", "NotFound"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_BUILD = os.path.join(_PACKAGE, "..", "..", "build", "analysis")


class NotFound(FileNotFoundError):
    """Neither the environment, the build tree nor an installation has it."""


def _library_in(directory: str) -> Optional[str]:
    """``libkdlens.so`` in @directory, else its highest versioned name."""
    plain = os.path.join(directory, "libkdlens.so")
    if os.path.isfile(plain):
        return plain
    versioned = sorted(glob.glob(os.path.join(directory, "libkdlens.so.*")))
    return versioned[-1] if versioned else None


def _from_env(var: str) -> Optional[str]:
    path = os.environ.get(var)
    if not path:
        return None
    if not os.path.isfile(path):
        raise NotFound(f"{var}={path}: no such file")
    return os.path.abspath(path)


def binary_path() -> str:
    """The ``kdlens`` program (see the module's docstring for the order).

    Raises NotFound when there is none.
    """
    path = _from_env("KDLENS")
    if path:
        return path
    built = os.path.normpath(os.path.join(_BUILD, "kdlens"))
    if os.path.isfile(built) and os.access(built, os.X_OK):
        return built
    found = shutil.which("kdlens")
    if found:
        return os.path.abspath(found)
    raise NotFound("the kdlens program was not found: set KDLENS, build the checkout "
                   "(./bootstrap.sh build) or install it (meson install) on PATH")


def _beside_program() -> List[str]:
    """Directories where the library of the ``kdlens`` on PATH would be."""
    found = shutil.which("kdlens")
    if not found:
        return []
    bindir = os.path.dirname(os.path.realpath(found))
    prefix = os.path.dirname(bindir)
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [bindir, os.path.join(prefix, "lib"), os.path.join(prefix, "lib64")]
    if multiarch:
        dirs.append(os.path.join(prefix, "lib", multiarch))
    return dirs


def library_path() -> str:
    """The ``libkdlens`` shared library (see the module's docstring for the order).

    Raises NotFound when there is none.
    """
    path = _from_env("KDLENS_LIB")
    if path:
        return path
    for directory in [os.path.normpath(_BUILD)] + _beside_program():
        found = _library_in(directory)
        if found:
            return found
    name = ctypes.util.find_library("kdlens")
    if name:
        return name
    raise NotFound("libkdlens was not found: set KDLENS_LIB, build the checkout "
                   "(./bootstrap.sh build) or install it (meson install; ldconfig)")
