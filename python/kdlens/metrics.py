# SPDX-License-Identifier: MIT
"""CKA and the KD criterion on numpy arrays, through libkdlens (no files).

The same C code as ``kdlens cka`` and ``kdlens kl``, so the values equal the
commands' on the same data written as dumps (tests/python/test_package.py
holds them to 1e-12).  Arrays may be float16, float32 or float64, C- or
Fortran-ordered or strided views: float64 arrays are read in place; other
types are converted to float64 one block of rows at a time, as the commands
convert what they read, so the extra memory is one block, not a copy of the
array.  Rank-3 [N, T, D] and rank-4 [N, C, H, W] features are reduced per
sample by ``spatial`` as the commands' ``--spatial`` does.

For data that does not fit in memory, :func:`cka_stream` and
:func:`kl_stream` (or :class:`CKAState` and :class:`KLState`) take the rows
block by block from any iterator, with memory independent of the row count.
"""
from __future__ import annotations

import ctypes
import weakref
from ctypes import POINTER, byref, c_double, c_size_t, c_void_p
from typing import (TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple,
                    Union)

import numpy as np

from . import _lib
from ._table import Rows, tabulate

if TYPE_CHECKING:
    import pandas

__all__ = ["cka", "cka_matrix", "cka_stream", "CKAState", "kl", "kl_stream", "KLState",
           "KLResult"]

ArrayLike = Any  # a numpy array or anything np.asarray() takes (a CPU torch tensor)
SPATIAL = ("avg", "max", "flatten")
KERNELS = {"linear": _lib.KDL_CKA_LINEAR, "rbf": _lib.KDL_CKA_RBF}
ESTIMATORS = ("biased", "debiased", "minibatch")
# Rows converted at a time: as the commands' default stream, 64 MiB of float64.
BLOCK_BYTES = 64 << 20
# The kdl_sample_hash() stream of the cka command's minibatch order
# (analysis/cka-compute.c); tests/python/test_package.py checks the two agree.
STREAM_BATCHES = 3


# ---- arrays -------------------------------------------------------------------------------

def _array(a: ArrayLike, what: str) -> np.ndarray:
    x = np.asarray(a)
    if x.dtype.kind != "f":
        raise TypeError(f"{what}: expected float16, float32 or float64 values, found {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"{what}: expected [N, D], [N, T, D] or [N, C, H, W], "
                         f"found shape {x.shape}")
    if x.shape[0] == 0 or 0 in x.shape[1:]:
        raise ValueError(f"{what}: empty array of shape {x.shape}")
    return x


def _width(x: np.ndarray, spatial: str) -> int:
    if x.ndim == 2:
        return x.shape[1]
    if spatial == "flatten":
        return int(np.prod(x.shape[1:]))
    return x.shape[1] if x.ndim == 4 else x.shape[2]


def _double(x: np.ndarray, spatial: str) -> np.ndarray:
    """@x (rows of a layer) as a 2-D float64 array: @x itself when it is one
    (any order or strides), else converted, reduced by @spatial."""
    if x.ndim > 2:
        x = x.astype(np.float64)
        if spatial == "flatten":
            return x.reshape(x.shape[0], -1)
        axes = (2, 3) if x.ndim == 4 else 1  # [N, C, H, W] over H*W; [N, T, D] over T
        return x.max(axis=axes) if spatial == "max" else x.mean(axis=axes)
    if (x.dtype == np.float64 and x.dtype.isnative and x.flags.aligned
            and all(s % 8 == 0 for s in x.strides)):
        return x
    return x.astype(np.float64)


def _layers(layers: Sequence[ArrayLike], what: str) -> Tuple[List[np.ndarray], int]:
    """@layers as arrays (:func:`_array`) and their common row count."""
    xs = [_array(a, f"layer {k}") for k, a in enumerate(layers)]
    if not xs:
        raise ValueError(f"{what}: no layers")
    rows = xs[0].shape[0]
    for k, x in enumerate(xs):
        if x.shape[0] != rows:
            raise ValueError(f"layer {k}: {x.shape[0]} rows, layer 0 has {rows}")
    return xs, rows


def _tensor(x: np.ndarray) -> _lib.Tensor:
    """A kdl_tensor view of the 2-D float64 @x (borrowed: keep @x alive)."""
    t = _lib.Tensor()
    t.ndim = 2
    t.shape[0], t.shape[1] = x.shape
    t.stride[0], t.stride[1] = x.strides[0] // 8, x.strides[1] // 8
    t.data = ctypes.cast(x.ctypes.data, POINTER(c_double))
    t.owner = False
    return t


def _block_rows(widths: Sequence[int], block_rows: Optional[int]) -> int:
    if block_rows is not None:
        if block_rows < 1:
            raise ValueError(f"block_rows: expected at least 1, found {block_rows}")
        return block_rows
    return max(1, BLOCK_BYTES // (8 * max(1, sum(widths))))


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{what}: expected {' or '.join(choices)}, found {value!r}")


def _matrix(m: "ctypes._Pointer", field: str) -> np.ndarray:
    """Copy the [L, L] array @field of a kdl_cka_matrix, then free it."""
    lib = _lib.lib()
    try:
        size = m.contents.nlayers
        data = getattr(m.contents, field)
        return np.ctypeslib.as_array(data, (size, size)).copy()
    finally:
        lib.kdl_cka_matrix_free(m)


# ---- CKA ----------------------------------------------------------------------------------

class CKAState:
    """Streaming linear CKA, biased and debiased, between every pair of L layers.

    Feed it row blocks with :meth:`update` (every block of every layer has
    the same rows, the same sample in the same row); memory is that of the
    sums (the D_i x D_j products of the layer pairs), whatever the number of
    rows.  The same state as ``kdlens cka``'s feature-space pass::

        state = kdlens.CKAState()
        for x, y in blocks:
            state.update(x, y)
        state.matrix("debiased")   # [2, 2]
    """

    def __init__(self, *, spatial: str = "avg", block_rows: Optional[int] = None):
        _check_choice("spatial", spatial, SPATIAL)
        self.spatial = spatial
        self.block_rows = block_rows
        self.widths: Optional[Tuple[int, ...]] = None
        self.n = 0
        self._state = c_void_p()
        self._free = None

    def _create(self, widths: Tuple[int, ...]) -> None:
        lib = _lib.lib()
        opts = _lib.CKAOpts()
        lib.kdl_cka_opts_init(byref(opts))
        c_widths = (c_size_t * len(widths))(*widths)
        _lib.check(lib.kdl_cka_state_new(len(widths), c_widths, byref(opts), byref(self._state)))
        self._free = weakref.finalize(self, lib.kdl_cka_state_free, self._state)
        self.widths = widths

    def update(self, *layers: ArrayLike) -> None:
        """Add one row block: one array per layer, the same layers in every call."""
        xs, rows = _layers(layers, "update")
        widths = tuple(_width(x, self.spatial) for x in xs)
        if self.widths is None:
            self._create(widths)
        elif widths != self.widths:
            raise ValueError(f"update: layer widths {widths}, the state has {self.widths}")
        lib = _lib.lib()
        step = _block_rows(widths, self.block_rows)
        for r0 in range(0, rows, step):
            blocks = [_double(x[r0:r0 + step], self.spatial) for x in xs]
            tensors = (_lib.Tensor * len(blocks))(*map(_tensor, blocks))
            _lib.check(lib.kdl_cka_accumulate(self._state, tensors, None))
            self.n += blocks[0].shape[0]

    def matrix(self, estimator: str = "biased") -> np.ndarray:
        """The [L, L] CKA matrix, ``"biased"`` (Kornblith et al. 2019) or
        ``"debiased"`` (unbiased HSIC); NaN where undefined."""
        _check_choice("estimator", estimator, ("biased", "debiased"))
        if self.widths is None:
            raise ValueError("matrix: no rows were added")
        m = POINTER(_lib.CKAMatrix)()
        _lib.check(_lib.lib().kdl_cka_finalize(self._state, byref(m)))
        return _matrix(m, estimator)


def _gram(xs: List[np.ndarray], kernel: str, estimator: str, theta: float) -> np.ndarray:
    lib = _lib.lib()
    tensors = (_lib.Tensor * len(xs))(*map(_tensor, xs))
    m = POINTER(_lib.CKAMatrix)()
    if kernel == "linear":
        _lib.check(lib.kdl_cka_gram_linear(tensors, len(xs), None, None, byref(m)))
    else:
        _lib.check(lib.kdl_cka_gram(tensors, len(xs), KERNELS[kernel], theta, byref(m)))
    return _matrix(m, estimator)


def _minibatch_order(n: int, seed: int) -> np.ndarray:
    """The rows in the cka command's seeded minibatch order."""
    h = _lib.lib().kdl_sample_hash
    keys = np.fromiter((h(seed, i, STREAM_BATCHES) for i in range(n)), dtype=np.uint64, count=n)
    return np.argsort(keys, kind="stable")


class _MinibatchState:
    """Minibatch CKA (Nguyen et al. 2021): one batch of m rows at a time."""

    def __init__(self, widths: Sequence[int], m: int):
        lib = _lib.lib()
        self._state = c_void_p()
        c_widths = (c_size_t * len(widths))(*widths)
        _lib.check(lib.kdl_cka_mb_state_new(len(widths), c_widths, m, byref(self._state)))
        self._free = weakref.finalize(self, lib.kdl_cka_mb_state_free, self._state)
        self.widths, self.m = tuple(widths), m

    def update(self, xs: Sequence[np.ndarray]) -> None:
        tensors = (_lib.Tensor * len(xs))(*map(_tensor, xs))
        _lib.check(_lib.lib().kdl_cka_mb_accumulate(self._state, tensors))

    def matrix(self) -> np.ndarray:
        m = POINTER(_lib.CKAMatrix)()
        _lib.check(_lib.lib().kdl_cka_mb_finalize(self._state, byref(m)))
        return _matrix(m, "minibatch")


def _minibatch(xs: List[np.ndarray], batch: int, seed: int) -> np.ndarray:
    n = xs[0].shape[0]
    if n < batch:
        raise ValueError(f"minibatch CKA: {n} samples, fewer than one batch of {batch}")
    order = _minibatch_order(n, seed)
    state = _MinibatchState([x.shape[1] for x in xs], batch)
    for b in range(n // batch):  # the remainder, fewer than a batch, is left out
        rows = order[b * batch:(b + 1) * batch]
        state.update([np.ascontiguousarray(x[rows]) for x in xs])
    return state.matrix()


def cka_matrix(layers: Sequence[ArrayLike], *, kernel: str = "linear",
               estimator: str = "biased", theta: float = 0.5, batch: int = 256, seed: int = 0,
               spatial: str = "avg", block_rows: Optional[int] = None) -> np.ndarray:
    """CKA between every pair of ``layers`` (arrays [N, ...] with the same N,
    row i of each the same sample), as the [L, L] matrix ``kdlens cka`` shows.

    Parameters
    ----------
    kernel : {"linear", "rbf"}
        ``"rbf"``: exp(-|x-y|^2 / (2 sigma^2)), sigma^2 = theta^2 times the
        median squared distance.
    estimator : {"biased", "debiased", "minibatch"}
        Biased HSIC (Kornblith et al. 2019), unbiased HSIC (Song et al.
        2012), or minibatch CKA (Nguyen et al. 2021; linear kernel only):
        batches of ``batch`` rows in a seeded order, the remainder left out.
    theta, batch, seed :
        As the command's ``--theta``, ``--batch`` and ``--seed``.
    spatial : {"avg", "max", "flatten"}
        How rank-3 [N, T, D] and rank-4 [N, C, H, W] arrays become [N, width].
    block_rows : int, optional
        Rows per block of the linear estimators (default: 64 MiB of float64).

    Linear CKA streams the rows through the feature-space sums (memory of
    the D_i x D_j products), or, when a layer is wider than N, uses the
    N x N Gram matrices, as the command does.  RBF and minibatch CKA work
    on all N rows in memory (2 L N^2 doubles); the command uses a seeded
    subsample of ``--subsample`` rows (2048), so the two agree when N is at
    most that.
    """
    _check_choice("kernel", kernel, tuple(KERNELS))
    _check_choice("estimator", estimator, ESTIMATORS)
    _check_choice("spatial", spatial, SPATIAL)
    if estimator == "minibatch" and kernel != "linear":
        raise ValueError("minibatch CKA uses the linear kernel: estimator='minibatch' "
                         "needs kernel='linear'")
    xs, n = _layers(layers, "cka_matrix")
    widths = [_width(x, spatial) for x in xs]
    if kernel == "linear" and estimator != "minibatch" and max(widths) <= n:
        state = CKAState(spatial=spatial, block_rows=block_rows)
        state.update(*xs)
        return state.matrix(estimator)
    doubles = [_double(x, spatial) for x in xs]
    if estimator == "minibatch":
        return _minibatch(doubles, batch, seed)
    return _gram(doubles, kernel, estimator, theta)


def cka(x: ArrayLike, y: ArrayLike, **options: Any) -> float:
    """CKA of two layers ``x`` [N, ...] and ``y`` [N, ...] (row i of both the
    same sample): linear, biased by default.  Takes :func:`cka_matrix`'s
    keyword options (``kernel``, ``estimator``, ``theta``, ``batch``,
    ``seed``, ``spatial``, ``block_rows``)::

        kdlens.cka(X, Y)                          # linear CKA
        kdlens.cka(X, Y, estimator="debiased")
        kdlens.cka(X, Y, kernel="rbf", theta=0.5)
    """
    return float(cka_matrix([x, y], **options)[0, 1])


def cka_stream(blocks: Iterable[Sequence[ArrayLike]], *, estimator: str = "biased",
               spatial: str = "avg", block_rows: Optional[int] = None) -> float:
    """CKA of two layers given as row blocks ``(x_block, y_block)``, for data
    that does not fit in memory: memory is independent of the row count.

    ``"biased"`` and ``"debiased"`` equal :func:`cka` on the concatenated
    blocks, whatever their sizes.  ``"minibatch"`` takes each block as one
    batch (every block must have the same rows, at least 4), so that the
    caller's loader decides the batches, as in Nguyen et al.::

        kdlens.cka_stream((x, y) for x, y in my_loader_of_numpy_blocks())
    """
    _check_choice("estimator", estimator, ESTIMATORS)
    if estimator != "minibatch":
        state = CKAState(spatial=spatial, block_rows=block_rows)
        for pair in blocks:
            state.update(*_pair(pair))
        return float(state.matrix(estimator)[0, 1])
    _check_choice("spatial", spatial, SPATIAL)
    mb = None
    for pair in blocks:
        xs = [_double(x, spatial) for x in _layers(_pair(pair), "cka_stream")[0]]
        if mb is None:
            mb = _MinibatchState([x.shape[1] for x in xs], xs[0].shape[0])
        mb.update(xs)
    if mb is None:
        raise ValueError("cka_stream: no blocks")
    return float(mb.matrix()[0, 1])


def _pair(blocks: Sequence[ArrayLike]) -> Sequence[ArrayLike]:
    if len(blocks) != 2:
        raise ValueError(f"cka_stream: expected (x_block, y_block), found {len(blocks)} arrays")
    return blocks


# ---- the KD criterion ---------------------------------------------------------------------

class KLResult:
    """What :func:`kl` finds: per temperature, the exact KD criterion
    tau^2 KL(p_t || p_s) (``"kl"``) and each logit approximation, with the
    fidelity statistics of ``kdlens kl``'s table ``kl``.

    ``rows`` holds one dict per temperature and approximation with that
    table's keys (``tau``, ``source``, ``approximation``, ``dim``, ``mean``,
    ``ratio``, ``pearson``, ``spearman``, ``relerr``, ``samples``,
    ``spearman_samples``); ``per_sample`` (with ``per_sample=True``) maps
    each approximation to its values [N, len(taus)].  ``float(result)`` is
    the mean KD criterion when there is one temperature.
    """

    def __init__(self, n: int, classes: int, taus: Tuple[float, ...], rows: Rows,
                 per_sample: Optional[Dict[str, np.ndarray]]):
        self.n = n
        self.classes = classes
        self.taus = taus
        self.rows = rows
        self.per_sample = per_sample

    def mean(self, approximation: str = "kl", tau: Optional[float] = None) -> float:
        """The mean of @approximation at @tau (None: the only temperature)."""
        if tau is None:
            if len(self.taus) != 1:
                raise ValueError(f"mean: {len(self.taus)} temperatures, say which with tau=")
            tau = self.taus[0]
        for row in self.rows:
            if row["approximation"] == approximation and row["tau"] == tau:
                return row["mean"]
        raise KeyError(f"no row for approximation {approximation!r} at tau {tau}")

    def __float__(self) -> float:
        return self.mean()

    def table(self) -> Union["pandas.DataFrame", Rows]:
        """``rows`` as a pandas DataFrame (a list of dicts without pandas)."""
        return tabulate(self.rows)

    def __repr__(self) -> str:
        means = ", ".join(f"tau={t:g}: {self.mean('kl', t):.6g}" for t in self.taus)
        return f"KLResult(n={self.n}, classes={self.classes}, kl mean {means})"


class KLState:
    """The KD criterion and its logit approximations, block by block.

    ``update(teacher_logits, student_logits)`` adds row blocks [m, C];
    :meth:`result` gives the :class:`KLResult`.  Memory is independent of
    the row count (the Spearman correlation uses a seeded reservoir of
    ``reservoir`` samples, exact below it), except for the values kept with
    ``per_sample=True``.
    """

    def __init__(self, tau: Union[float, Sequence[float]] = 4.0, *,
                 reservoir: int = 1 << 16, seed: int = 1, per_sample: bool = False,
                 block_rows: Optional[int] = None):
        taus = (tau,) if np.isscalar(tau) else tuple(tau)
        if not taus:
            raise ValueError("tau: no temperatures")
        self.taus = tuple(float(t) for t in taus)
        self.reservoir, self.seed, self.block_rows = reservoir, seed, block_rows
        self.classes: Optional[int] = None
        self.n = 0
        self._values: Optional[Dict[str, List[np.ndarray]]] = {} if per_sample else None
        self._state = c_void_p()
        self._free = None

    def _create(self, classes: int) -> None:
        lib = _lib.lib()
        opts = _lib.KLOpts()
        lib.kdl_kl_opts_init(byref(opts))
        taus = (c_double * len(self.taus))(*self.taus)
        opts.c, opts.ntau, opts.tau = classes, len(self.taus), taus
        opts.reservoir, opts.seed = self.reservoir, self.seed
        _lib.check(lib.kdl_kl_state_new(byref(opts), byref(self._state)))
        self._free = weakref.finalize(self, lib.kdl_kl_state_free, self._state)
        self.classes = classes

    def update(self, teacher_logits: ArrayLike, student_logits: ArrayLike) -> None:
        """Add the samples of one block: teacher and student logits [m, C]."""
        zt = _array(teacher_logits, "teacher_logits")
        zs = _array(student_logits, "student_logits")
        if zt.ndim != 2 or zs.ndim != 2 or zt.shape != zs.shape:
            raise ValueError(f"expected teacher and student logits of one shape [m, C], "
                             f"found {zt.shape} and {zs.shape}")
        if self.classes is None:
            self._create(zt.shape[1])
        elif zt.shape[1] != self.classes:
            raise ValueError(f"update: {zt.shape[1]} classes, the state has {self.classes}")
        lib = _lib.lib()
        step = _block_rows([2 * self.classes], self.block_rows)
        for r0 in range(0, zt.shape[0], step):
            bt, bs = _double(zt[r0:r0 + step], "avg"), _double(zs[r0:r0 + step], "avg")
            tt, ts = _tensor(bt), _tensor(bs)
            block = _lib.KLBlock(row0=self.n, zt=ctypes.pointer(tt), zs=ctypes.pointer(ts))
            _lib.check(lib.kdl_kl_accumulate(self._state, byref(block)))
            if self._values is not None:
                self._keep_values()
            self.n += bt.shape[0]

    def _keep_values(self) -> None:
        lib = _lib.lib()
        m = c_size_t()
        for v in range(_lib.KDL_KL_VALUE_COUNT):
            cols = []
            for itau in range(len(self.taus)):
                p = lib.kdl_kl_values(self._state, itau, v, byref(m))
                if not p:
                    break
                cols.append(np.ctypeslib.as_array(p, (m.value,)).copy())
            if cols:
                name = lib.kdl_kl_name(v).decode()
                self._values.setdefault(name, []).append(np.stack(cols, axis=1))

    def result(self) -> KLResult:
        """The statistics of every sample added so far."""
        if self.classes is None:
            raise ValueError("result: no rows were added")
        lib = _lib.lib()
        r = POINTER(_lib.KLResult)()
        _lib.check(lib.kdl_kl_finalize(self._state, byref(r)))
        try:
            res = r.contents
            rows = []
            for itau in range(res.ntau):
                t = res.tau[itau]
                for v in range(_lib.KDL_KL_VALUE_COUNT):
                    f = t.v[v]
                    if not f.available:
                        continue
                    rows.append({"tau": t.tau, "source": lib.kdl_kl_source(v).decode(),
                                 "approximation": lib.kdl_kl_name(v).decode(), "dim": f.dim,
                                 "mean": f.mean, "ratio": f.ratio, "pearson": f.pearson,
                                 "spearman": f.spearman, "relerr": f.relerr, "samples": res.n,
                                 "spearman_samples": res.spearman_n})
            n, classes = res.n, res.c
        finally:
            lib.kdl_kl_result_free(r)
        values = None
        if self._values is not None:
            values = {k: np.concatenate(v) for k, v in self._values.items()}
        return KLResult(n, classes, self.taus, rows, values)


def kl(teacher_logits: ArrayLike, student_logits: ArrayLike, *,
       tau: Union[float, Sequence[float]] = 4.0, reservoir: int = 1 << 16, seed: int = 1,
       per_sample: bool = False, block_rows: Optional[int] = None) -> KLResult:
    """The KD criterion tau^2 KL(softmax(z_t/tau) || softmax(z_s/tau)) per
    sample and its logit approximations, summarised as ``kdlens kl`` does.

    Parameters
    ----------
    teacher_logits, student_logits : arrays [N, C]
        Row i of both is the same sample.
    tau : float or sequence of floats
        Temperatures (default 4, as the command's ``-T``).
    reservoir, seed :
        The Spearman correlation's seeded subsample (the command's
        ``--spearman-samples`` and ``--seed``): exact up to ``reservoir``
        samples.
    per_sample : bool
        Also keep every per-sample value (``result.per_sample``).

    ``float(kdlens.kl(zt, zs, tau=4))`` is the mean criterion;
    ``.table()`` every approximation's fidelity.
    """
    state = KLState(tau, reservoir=reservoir, seed=seed, per_sample=per_sample,
                    block_rows=block_rows)
    state.update(teacher_logits, student_logits)
    return state.result()


def kl_stream(blocks: Iterable[Tuple[ArrayLike, ArrayLike]], *,
              tau: Union[float, Sequence[float]] = 4.0, reservoir: int = 1 << 16,
              seed: int = 1, per_sample: bool = False) -> KLResult:
    """:func:`kl` over row blocks ``(teacher_logits, student_logits)`` from
    any iterator; the same result as on the concatenated blocks."""
    state = KLState(tau, reservoir=reservoir, seed=seed, per_sample=per_sample)
    for zt, zs in blocks:
        state.update(zt, zs)
    return state.result()
