# SPDX-License-Identifier: MIT
"""The exporter moved to the ``kdlens`` package: ``from kdlens import export``.

This module is kept so that ``import kdl_export`` (from this directory, as
``fmnist_recipe.py`` and older scripts do) goes on working: it *is*
``kdlens.export``, taken from this checkout's ``python/`` directory, so
``kdl_export.export_checkpoint`` and every other name are the same objects.
See python/README.md.
"""
import os
import sys

_PYTHON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python")
if os.path.isdir(os.path.join(_PYTHON, "kdlens")) and _PYTHON not in sys.path:
    sys.path.insert(0, _PYTHON)

from kdlens import export as _export  # noqa: E402

sys.modules[__name__] = _export
