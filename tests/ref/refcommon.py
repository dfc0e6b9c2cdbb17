# SPDX-License-Identifier: MIT
"""Shared pieces of the CKA / layer-quality reference tests: dump writing and
kdlens's seeded sampling (metrics/sample.c) re-implemented in numpy."""
import h5py
import numpy as np

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(z):
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def khash(seed, ids, stream):
    """kdl_sample_hash(seed, id, stream) for an array of ids (uint64 wraps)."""
    with np.errstate(over="ignore"):
        ids = np.asarray(ids, dtype=np.uint64)
        s = _mix64(np.uint64(seed))
        st = np.uint64(stream) * np.uint64(0xD1B54A32D192ED03)
        return _mix64(_mix64(s ^ ids) ^ st)


def uniform(seed, ids, stream):
    h = khash(seed, ids, stream)
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


def poisson1(seed, ids, replicate):
    u = uniform(seed, ids, (1 << 63) + replicate)
    k = np.zeros(len(u), dtype=np.int64)
    p = np.exp(-1.0)
    cdf = np.full(len(u), p)
    for j in range(1, 31):
        more = u > cdf
        if not more.any():
            break
        k[more] = j
        p /= j
        cdf = cdf + p
    return k


def select(n, count, seed, stream, labels=None, nclasses=0):
    """kdl_sample_select(): rows with the smallest hashes, per class when labelled."""
    keys = khash(seed, np.arange(n), stream)
    order = np.lexsort((np.arange(n), keys))
    if labels is None:
        return np.sort(order[:count])
    taken = np.zeros(nclasses, dtype=np.int64)
    out = []
    for r in order:
        c = labels[r]
        if taken[c] < count:
            taken[c] += 1
            out.append(r)
    return np.sort(np.array(out, dtype=np.int64))


def write_dump(path, checkpoints, labels, role="teacher", order=None, ids=None):
    """checkpoints: {name: (step, {layer: (array, depth)}, logits)}; order permutes rows."""
    n = len(next(iter(checkpoints.values()))[2])
    order = np.arange(n) if order is None else order
    with h5py.File(path, "w") as f:
        f.attrs["kdlens_format"] = 1
        f.attrs["role"] = role
        f.attrs["model"] = role + "-ref"
        if labels is not None:
            f.create_dataset("labels", data=np.asarray(labels)[order].astype(np.int64))
        if ids is not None:
            f.create_dataset("sample_ids", data=np.asarray(ids)[order].astype(np.int64))
        for name, (step, layers, logits) in checkpoints.items():
            g = f.create_group("checkpoints/" + name)
            g.attrs["step"] = np.int64(step)
            for lname, (arr, depth) in layers.items():
                d = g.create_dataset("features/" + lname, data=arr[order])
                d.attrs["depth"] = depth
            g.create_dataset("logits", data=logits[order])
