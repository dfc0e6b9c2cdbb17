# SPDX-License-Identifier: MIT
"""ctypes bindings of libkdlens's public headers (metrics/base/tensor.h,
metrics/base/error.h, metrics/cka.h, metrics/kl.h, metrics/sample.h).

The structures below mirror the C ones field for field; tests/python/test_package.py
compares their sizes and offsets with a program compiled against the headers,
so a change of a header that is not made here too fails that test.

The library is loaded on first use (:func:`lib`), not on import, so that
``import kdlens`` works without it (``kdlens.run`` needs only the program).
"""
from __future__ import annotations

import ctypes
from ctypes import (POINTER, Structure, c_bool, c_char_p, c_double, c_int, c_size_t,
                    c_ssize_t, c_uint64, c_void_p)
from typing import Optional

from . import _find

KDL_MAX_DIMS = 4
KDL_KL_VALUE_COUNT = 10

# metrics/base/error.h
KDL_ESHAPE = 1024
KDL_ENONFINITE = 1028
KDL_EOVERFLOW = 1029
KDL_ERANGE = 1032
KDL_EMISMATCH = 1033
KDL_EMISSING = 1034
KDL_EUSAGE = 1036
ERRORS = {"KDL_ESHAPE": KDL_ESHAPE, "KDL_ENONFINITE": KDL_ENONFINITE,
          "KDL_EOVERFLOW": KDL_EOVERFLOW, "KDL_ERANGE": KDL_ERANGE,
          "KDL_EMISMATCH": KDL_EMISMATCH, "KDL_EMISSING": KDL_EMISSING,
          "KDL_EUSAGE": KDL_EUSAGE}

# enum kdl_cka_kernel, enum kdl_cka_precision, enum kdl_cka_interval
KDL_CKA_LINEAR, KDL_CKA_RBF = 0, 1
KDL_CKA_PRECISION_DOUBLE = 0
KDL_CKA_INTERVAL_PERCENTILE = 0


class Tensor(Structure):
    """kdl_tensor: strides in elements."""
    _fields_ = [("ndim", c_size_t), ("shape", c_size_t * KDL_MAX_DIMS),
                ("stride", c_ssize_t * KDL_MAX_DIMS), ("data", POINTER(c_double)),
                ("owner", c_bool)]


class CKAOpts(Structure):
    """kdl_cka_opts."""
    _fields_ = [("block_rows", c_size_t), ("pairs", POINTER(c_bool)), ("bootstrap", c_size_t),
                ("seed", c_uint64), ("level", c_double), ("precision", c_int),
                ("interval", c_int), ("kinds", POINTER(c_int)), ("external", POINTER(c_bool))]


_D = POINTER(c_double)


class CKAMatrix(Structure):
    """kdl_cka_matrix."""
    _fields_ = [("nlayers", c_size_t), ("n", c_double), ("biased", _D), ("debiased", _D),
                ("minibatch", _D), ("nbatches", c_size_t), ("bootstrap", c_size_t),
                ("level", c_double), ("interval", c_int), ("ngroups", c_size_t),
                ("biased_lo", _D), ("biased_hi", _D), ("biased_se", _D), ("biased_bias", _D),
                ("debiased_lo", _D), ("debiased_hi", _D), ("debiased_se", _D),
                ("debiased_bias", _D), ("biased_rep", _D), ("debiased_rep", _D),
                ("biased_jack", _D), ("debiased_jack", _D), ("biased_sketch_se", _D),
                ("debiased_sketch_se", _D)]


class KLOpts(Structure):
    """kdl_kl_opts."""
    _fields_ = [("c", c_size_t), ("ntau", c_size_t), ("tau", _D), ("d_s", c_size_t),
                ("d_t", c_size_t), ("w_t", POINTER(Tensor)), ("proj", c_void_p),
                ("grad_feature", c_bool), ("grad_logits", c_bool), ("reservoir", c_size_t),
                ("seed", c_uint64)]


_TP = POINTER(Tensor)


class KLBlock(Structure):
    """kdl_kl_block."""
    _fields_ = [("row0", c_size_t), ("samples", POINTER(c_size_t)), ("zt", _TP), ("zs", _TP),
                ("ht", _TP), ("hs", _TP), ("gt", _TP), ("gzt", _TP), ("gzs", _TP)]


class KLFidelity(Structure):
    """kdl_kl_fidelity."""
    _fields_ = [("available", c_bool), ("dim", c_size_t), ("mean", c_double),
                ("ratio", c_double), ("pearson", c_double), ("spearman", c_double),
                ("relerr", c_double)]


class KLTau(Structure):
    """kdl_kl_tau."""
    _fields_ = [("tau", c_double), ("v", KLFidelity * KDL_KL_VALUE_COUNT)]


class KLResult(Structure):
    """kdl_kl_result."""
    _fields_ = [("n", c_size_t), ("c", c_size_t), ("d_s", c_size_t), ("d_t", c_size_t),
                ("ntau", c_size_t), ("tau", POINTER(KLTau)), ("spearman_n", c_size_t),
                ("spearman_exact", c_bool), ("features", c_bool), ("projector_fitted", c_bool),
                ("projector_rank", c_size_t), ("r2", c_double), ("feature_sq", c_double),
                ("head", c_bool), ("head_rank", c_size_t), ("visible_share", c_double)]


# The structures tests/python/test_package.py checks against the headers.
STRUCTS = {"kdl_tensor": Tensor, "kdl_cka_opts": CKAOpts, "kdl_cka_matrix": CKAMatrix,
           "kdl_kl_opts": KLOpts, "kdl_kl_block": KLBlock, "kdl_kl_fidelity": KLFidelity,
           "kdl_kl_tau": KLTau, "kdl_kl_result": KLResult}

_P = c_void_p  # opaque state pointers

# name: (restype, argtypes)
_PROTOTYPES = {
    "kdl_errmsg": (c_char_p, []),
    "kdl_error_clear": (None, []),
    "kdl_strerror": (c_char_p, [c_int]),
    "kdl_sample_hash": (c_uint64, [c_uint64, c_uint64, c_uint64]),
    "kdl_cka_opts_init": (None, [POINTER(CKAOpts)]),
    "kdl_cka_state_new": (c_int, [c_size_t, POINTER(c_size_t), POINTER(CKAOpts),
                                  POINTER(_P)]),
    "kdl_cka_accumulate": (c_int, [_P, POINTER(Tensor), POINTER(c_size_t)]),
    "kdl_cka_finalize": (c_int, [_P, POINTER(POINTER(CKAMatrix))]),
    "kdl_cka_state_free": (None, [_P]),
    "kdl_cka_matrix_free": (None, [POINTER(CKAMatrix)]),
    "kdl_cka_gram": (c_int, [POINTER(Tensor), c_size_t, c_int, c_double,
                             POINTER(POINTER(CKAMatrix))]),
    "kdl_cka_gram_linear": (c_int, [POINTER(Tensor), c_size_t, POINTER(c_size_t),
                                    POINTER(CKAOpts), POINTER(POINTER(CKAMatrix))]),
    "kdl_cka_mb_state_new": (c_int, [c_size_t, POINTER(c_size_t), c_size_t, POINTER(_P)]),
    "kdl_cka_mb_accumulate": (c_int, [_P, POINTER(Tensor)]),
    "kdl_cka_mb_finalize": (c_int, [_P, POINTER(POINTER(CKAMatrix))]),
    "kdl_cka_mb_state_free": (None, [_P]),
    "kdl_kl_opts_init": (None, [POINTER(KLOpts)]),
    "kdl_kl_name": (c_char_p, [c_int]),
    "kdl_kl_source": (c_char_p, [c_int]),
    "kdl_kl_state_new": (c_int, [POINTER(KLOpts), POINTER(_P)]),
    "kdl_kl_accumulate": (c_int, [_P, POINTER(KLBlock)]),
    "kdl_kl_values": (_D, [_P, c_size_t, c_int, POINTER(c_size_t)]),
    "kdl_kl_finalize": (c_int, [_P, POINTER(POINTER(KLResult))]),
    "kdl_kl_result_free": (None, [POINTER(KLResult)]),
    "kdl_kl_state_free": (None, [_P]),
}

_lib: Optional[ctypes.CDLL] = None


def lib() -> ctypes.CDLL:
    """libkdlens with the prototypes above, loaded once (see kdlens._find)."""
    global _lib
    if _lib is None:
        handle = ctypes.CDLL(_find.library_path())
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(handle, name)
            fn.restype = restype
            fn.argtypes = argtypes
        _lib = handle
    return _lib


class Error(Exception):
    """A libkdlens call failed: ``code`` is its negative return value,
    ``reason`` the code's description, the message what the library recorded."""

    def __init__(self, code: int, message: str):
        self.code = code
        self.reason = (lib().kdl_strerror(code) or b"").decode("utf-8", "replace")
        super().__init__(message or self.reason)


class DataError(Error, ValueError):
    """The inputs were refused: a shape, NaN/Inf, a value out of range."""


_DATA_ERRORS = {KDL_ESHAPE, KDL_ENONFINITE, KDL_ERANGE, KDL_EMISMATCH, KDL_EMISSING, KDL_EUSAGE}


def check(code: int) -> int:
    """Raise for a negative libkdlens return value; return it otherwise."""
    if code >= 0:
        return code
    lk = lib()
    message = (lk.kdl_errmsg() or b"").decode("utf-8", "replace")
    lk.kdl_error_clear()
    if code == -12:  # -ENOMEM
        raise MemoryError(message or "libkdlens: out of memory")
    cls = DataError if -code in _DATA_ERRORS else Error
    raise cls(code, message)
