# SPDX-License-Identifier: MIT
"""kdlens from Python: knowledge-distillation analysis on numpy arrays and dumps.

- :func:`cka`, :func:`cka_matrix`, :func:`cka_stream`, :class:`CKAState`:
  centred kernel alignment of in-memory arrays (or row blocks), computed by
  libkdlens as ``kdlens cka`` computes it;
- :func:`kl`, :func:`kl_stream`, :class:`KLState`: the KD criterion
  tau^2 KL(p_t || p_s) and its logit approximations, as ``kdlens kl``;
- :func:`run`: any ``kdlens`` command on dumps, its tables as pandas
  DataFrames (:class:`Result`); :func:`read_per_sample` for ``--per-sample``
  files;
- ``kdlens.export``: write a PyTorch model's logits, features, gradients and
  head as a dump; ``kdlens.export_lm``: a causal language model's next-token
  logits (dense and/or top-k), hidden states, sequence ids and positions
  (both imported on first use: they need torch and h5py).

The ``kdlens`` program and ``libkdlens`` are found as :mod:`kdlens._find`
says: the environment variables ``KDLENS`` and ``KDLENS_LIB``, then the
checkout's ``build/analysis/`` when the package is used in place, then an
installation (``PATH``, the linker's paths).  See python/README.md.
"""
from __future__ import annotations

import importlib
from typing import Any

from ._find import NotFound, binary_path, library_path
from ._lib import DataError, Error
from .cli import CLIError, PerSample, Result, read_per_sample, run
from .metrics import (CKAState, KLResult, KLState, cka, cka_matrix, cka_stream, kl,
                      kl_stream)

__version__ = "0.1.0"

__all__ = ["cka", "cka_matrix", "cka_stream", "CKAState", "kl", "kl_stream", "KLState",
           "KLResult", "run", "Result", "CLIError", "read_per_sample", "PerSample", "Error",
           "DataError", "NotFound", "binary_path", "library_path", "export", "export_lm",
           "__version__"]


def __getattr__(name: str) -> Any:
    """``kdlens.export`` and ``kdlens.export_lm`` are imported when first used (they need torch)."""
    if name in ("export", "export_lm"):
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'kdlens' has no attribute {name!r}")
