#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Write the hostile-input corpus into OUTDIR: one small file per case and
OUTDIR/manifest.json, which run-cases.py reads.

usage: mkcases.py OUTDIR [--list]

Each case is one defect (or one oddity) on top of a small valid dump
(N = 48 samples, C = 4 classes, seeded), made with h5py and numpy and, where
h5py cannot write the defect, by patching bytes of the written file.  Every
file stays small: declared sizes are huge, stored data is not.

A manifest entry says what the case provokes and what kdlens must do with it:
"expect" maps each command (inspect, kl, cka; report, layers, dims and split
for the valid pairs) to the exit status
wanted; 1 means refused with one line on stderr naming the file, 0 means
valid (odd but valid input: no output on stderr).  "role" says which side of
kl the case takes ("teacher": kl -t CASE -s PARTNER; "student": kl -t PARTNER
-s CASE); "partner" names the other file ("self" for the case itself).
Entries with "make" are not files: run-cases.py makes them at run time (a
FIFO, a directory, ...).
"""
import json
import os
import shutil
import struct
import sys
import zlib

import h5py
import numpy as np

N, C = 48, 4
TEACHER_WIDTHS = (6, 5)
STUDENT_WIDTHS = (4, 3)
BASE_T, BASE_S = "base-teacher.h5", "base-student.h5"
ODD_T = "odd name ü %s%n \"q\" 'a' teacher.h5"
ODD_S = "odd name ü %s%n \"q\" 'a' student.h5"

CASES = []


def case(name, provokes, expect=1, role="teacher", partner=None, report=False, file=None,
         make=None):
    """Register a case writer; @expect is an int or a {command: status} dict."""
    def register(fn):
        e = expect if isinstance(expect, dict) else {}
        status = expect if isinstance(expect, int) else 1
        cmds = {c: e.get(c, status) for c in ("inspect", "kl", "cka")}
        if report:  # a valid pair: every command
            for c in ("report", "layers", "dims", "split"):
                cmds[c] = e.get(c, 0)
        CASES.append({
            "name": name,
            "file": file or (name + ".h5" if not make else name),
            "provokes": provokes,
            "expect": cmds,
            "role": role,
            "partner": partner or (BASE_S if role == "teacher" else BASE_T),
            "make": make,
            "writer": fn,
        })
        return fn
    return register


# ---- the valid dump every case starts from ---------------------------------------


def fill(f, role, *, widths=None, dtype="f4", chunk_rows=None, gzip=None,
         checkpoints=(("final", 10),), layer_names=None, sample_ids=True, order=None,
         head=True, gradients=True, n=N, c=C):
    """Write a complete schema-v1 dump into the open file @f.

    The head produces the logits exactly (z = W h + b on the last layer), the
    gradients are the cross-entropy ones; @order permutes the stored samples.
    """
    widths = widths or (TEACHER_WIDTHS if role == "teacher" else STUDENT_WIDTHS)
    names = layer_names or ["layer%d" % (k + 1) for k in range(len(widths))]
    rng = np.random.default_rng(1 if role == "teacher" else 2)
    order = np.arange(n) if order is None else order
    labels = (np.arange(n) * 7 % c).astype(np.int32)

    def put(g, path, data, rows=True):
        kw = {}
        if chunk_rows and rows:
            kw["chunks"] = (min(chunk_rows, data.shape[0]),) + data.shape[1:]
            if gzip is not None:
                kw["compression"] = "gzip"
                kw["compression_opts"] = gzip
        return g.create_dataset(path, data=(data[order] if rows else data).astype(dtype), **kw)

    f.attrs["kdlens_format"] = 1
    f.attrs["role"] = role
    f.attrs["model"] = role + "-hostile"
    f.create_dataset("labels", data=labels[order])
    if sample_ids:
        f.create_dataset("sample_ids", data=(100 + np.arange(n, dtype=np.int64))[order])
    for ck, step in checkpoints:
        g = f.create_group("checkpoints/" + ck)
        g.attrs["step"] = np.int64(step)
        g.attrs["epoch"] = np.int64(step // 5)
        hs = [rng.standard_normal((n, w)) for w in widths]
        w = rng.standard_normal((c, widths[-1]))
        b = rng.standard_normal(c)
        z = hs[-1] @ w.T + b
        for k, (lname, h) in enumerate(zip(names, hs)):
            put(g, "features/" + lname, h).attrs["depth"] = np.int64(k)
        put(g, "logits", z)
        if gradients:
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            gz = p - np.eye(c)[labels]
            put(g, "gradients/logits", gz)
            put(g, "gradients/features/" + names[-1], gz @ w)
        if head:
            hd = g.create_group("head")
            put(hd, "weight", w, rows=False)
            put(hd, "bias", b, rows=False)
            hd.attrs["input"] = names[-1]


def dump(path, role="teacher", libver=None, userblock=0, **kw):
    with h5py.File(path, "w", libver=libver, userblock_size=userblock) as f:
        fill(f, role, **kw)


def replaced(path, name, new, role="teacher"):
    """A valid dump whose object @name is replaced by @new: a value or link
    to store there, or a function (file, name) that makes the object."""
    with h5py.File(path, "w") as f:
        fill(f, role)
        del f[name]
        if callable(new):
            new(f, name)
        else:
            f[name] = new


def poked(path, name, at, value, role="teacher", **kw):
    """A valid dump with @value written into dataset @name at index @at."""
    with h5py.File(path, "w") as f:
        fill(f, role, **kw)
        v = f[name][...]
        v[at] = value
        f[name][...] = v


# ---- byte patching ---------------------------------------------------------------


def read(path):
    with open(path, "rb") as fp:
        return fp.read()


def find1(data, needle, what):
    """The offset of the only occurrence of @needle; fail loudly otherwise."""
    at = data.find(needle)
    if at < 0 or data.find(needle, at + 1) >= 0:
        raise SystemExit("mkcases: %s: expected one match, found %s" %
                         (what, "none" if at < 0 else "several"))
    return at


def patch(path, offset, new):
    with open(path, "r+b") as fp:
        fp.seek(offset)
        fp.write(new)


def object_addr(path, name):
    with h5py.File(path, "r") as f:
        return h5py.h5o.get_info(f[name].id).addr


def chunk_info(path, name, index=0):
    with h5py.File(path, "r") as f:
        return f[name].id.get_chunk_info(index)


def chunk_key(path, name, index=0):
    """Offset of chunk @index's v1 B-tree key: size (4), filter mask (4),
    offsets (8 per dimension + 1), then the chunk's address (8)."""
    with h5py.File(path, "r") as f:
        ndim = f[name].ndim
        info = f[name].id.get_chunk_info(index)
    key = struct.pack("<II", info.size, info.filter_mask)
    key += struct.pack("<%dQ" % (ndim + 1), *info.chunk_offset, 0)
    key += struct.pack("<Q", info.byte_offset)
    return find1(read(path), key, "B-tree key of %s chunk %d" % (name, index)), info


def dataspace_msg(path, dims, start=0):
    """Offset of the first v1 dataspace message [ver 1, rank, flags, 5 reserved,
    dims] with @dims at or after @start, and its flags (1: max dims follow)."""
    data = read(path)
    body = struct.pack("<%dQ" % len(dims), *dims)
    for flags in (1, 0):
        head = struct.pack("<BBB5x", 1, len(dims), flags)
        at = data.find(head + body, start)
        if at >= 0:
            return at, flags
    raise SystemExit("mkcases: no dataspace message with dims %r" % (dims,))


def patch_dims(path, dims, new, start=0):
    """Give the first dataspace with @dims at or after @start the dims @new
    (and the same max dims, when it stores them)."""
    at, flags = dataspace_msg(path, dims, start)
    body = struct.pack("<%dQ" % len(new), *new)
    patch(path, at + 8, body + (body if flags & 1 else b""))


def attr_msg(path, name):
    """(message start, version, name offset) of the attribute message called @name."""
    data = read(path)
    p = find1(data, name.encode() + b"\0", "attribute " + name)
    if data[p - 9] == 3:
        return p - 9, 3, p
    if data[p - 8] == 1:
        return p - 8, 1, p
    raise SystemExit("mkcases: attribute %s: unknown message version" % name)


def gheap(path, text):
    """(collection offset, object offset) of the global heap object holding @text."""
    data = read(path)
    col = find1(data, b"GCOL", "global heap collection")
    obj = find1(data, struct.pack("<Q", len(text)) + text.encode(), "heap object " + text) - 8
    return col, obj


def vlen_ref(path, text):
    """Offset of the vlen descriptor [length 4, heap address 8, index 4] pointing at @text."""
    data = read(path)
    col, obj = gheap(path, text)
    index = struct.unpack_from("<H", data, obj)[0]
    ref = struct.pack("<IQI", len(text), col, index)
    return find1(data, ref, "vlen reference to " + text)


F16 = bytes.fromhex("11200f00" "02000000" "0000" "1000" "0a" "05" "00" "0a" "0f000000")
F32 = bytes.fromhex("11201f00" "04000000" "0000" "2000" "17" "08" "00" "17" "7f000000")


def obj_header_version(path, name, byte=0x0B):
    """Break the object header of @name: a version number HDF5 does not know."""
    addr = object_addr(path, name)
    data = read(path)
    assert data[addr] in (1, ord("O")), "unexpected object header at %d" % addr
    patch(path, addr, bytes([byte]) if data[addr] == 1 else b"XHDR")


def zeros_stream(nbytes, rounds=1):
    """A zlib stream that inflates to @nbytes zeros (a multiple of 16 MiB),
    compressed @rounds times.  One fully flushed deflate block of 16 MiB of
    zeros is repeated: it refers to nothing before it, so the copies decode
    alike; the Adler-32 of n zeros is ((n mod 65521) << 16) | 1."""
    piece = 1 << 24
    assert nbytes % piece == 0
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = z.compress(bytes(piece)) + z.flush(zlib.Z_FULL_FLUSH)
    raw = (b"\x78\xda" + block * (nbytes // piece) + b"\x03\x00" +
           struct.pack(">I", ((nbytes % 65521) << 16) | 1))
    for _ in range(rounds - 1):
        raw = zlib.compress(raw, 9)
    return raw


def bare(f):
    """The root attributes and an empty checkpoint "final": a dump to add
    datasets of any declared size to, by hand."""
    f.attrs["kdlens_format"] = 1
    f.attrs["role"] = "teacher"
    g = f.create_group("checkpoints/final")
    g.attrs["step"] = np.int64(1)
    return g


def new_dataset(f, path, shape, dtype, chunks=None, filters=(), fill=None):
    """A dataset created through the low-level API (several deflate filters,
    early allocation off), never written."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)  # the same bytes on every run
    if chunks:
        dcpl.set_chunk(chunks)
    for level in filters:
        dcpl.set_deflate(level)
    if fill is not None:
        dcpl.set_fill_value(np.array(fill, dtype=dtype))
    space = h5py.h5s.create_simple(shape)
    parent, _, leaf = path.rpartition("/")
    g = f.require_group(parent) if parent else f
    h5py.h5d.create(g.id, leaf.encode(), h5py.h5t.py_create(np.dtype(dtype)), space,
                    dcpl=dcpl)
    return g[leaf]


# ---- the cases -------------------------------------------------------------------

LOGITS = "checkpoints/final/logits"
HEAD_W = "checkpoints/final/head/weight"


@case("base-teacher", "nothing: the valid teacher every case is paired with", expect=0,
      partner=BASE_S, report=True, file=BASE_T)
def _(p):
    dump(p, "teacher", chunk_rows=16, gzip=4)


@case("base-student", "nothing: the valid student every case is paired with", expect=0,
      role="student", partner=BASE_T, report=True, file=BASE_S)
def _(p):
    dump(p, "student")


# -- compressed chunks --


def gzip_teacher(p, **kw):
    dump(p, "teacher", chunk_rows=16, gzip=9, **kw)


@case("gzip-chunk-index-short",
      "the chunk index says a gzip chunk is half its stored length (truncated deflate stream)")
def _(p):
    gzip_teacher(p)
    at, info = chunk_key(p, LOGITS, 1)
    patch(p, at, struct.pack("<I", info.size // 2))


@case("gzip-chunk-index-past-eof",
      "the chunk index gives a gzip chunk a size that runs past the end of the file")
def _(p):
    gzip_teacher(p)
    at, info = chunk_key(p, LOGITS, 1)
    patch(p, at, struct.pack("<I", os.path.getsize(p) - info.byte_offset + 4096))


@case("gzip-chunk-garbled", "the bytes of a stored gzip chunk are overwritten (bad deflate data)")
def _(p):
    gzip_teacher(p)
    info = chunk_info(p, LOGITS, 1)
    patch(p, info.byte_offset + 2, b"\xff" * (info.size - 2))


@case("gzip-chunk-inflates-short",
      "a gzip chunk inflates to 8 bytes where its shape needs 256 (the rest is never written)")
def _(p):
    gzip_teacher(p)
    with h5py.File(p, "r+") as f:
        f[LOGITS].id.write_direct_chunk((16, 0), zlib.compress(bytes(8)))


@case("gzip-bomb",
      "a 256-byte gzip chunk whose stream inflates to 256 MiB (file ~260 KB)")
def _(p):
    gzip_teacher(p)
    with h5py.File(p, "r+") as f:
        f[LOGITS].id.write_direct_chunk((16, 0), zeros_stream(256 << 20))


@case("gzip-bomb-nested",
      "logits compressed twice (two deflate filters); one chunk inflates to 4 GiB (file ~20 KB)")
def _(p):
    dump(p, "teacher")
    with h5py.File(p, "r+") as f:
        z = f[LOGITS][...]
        del f[LOGITS]
        d = new_dataset(f, LOGITS, z.shape, "f4", chunks=(16, C), filters=(9, 9))
        for r in (0, 32):
            d.id.write_direct_chunk((r, 0), zlib.compress(zlib.compress(z[r:r + 16].tobytes())))
        d.id.write_direct_chunk((16, 0), zeros_stream(4 << 30, rounds=2))


@case("chunk-addr-past-eof", "the chunk index points a chunk past the end of the file")
def _(p):
    gzip_teacher(p)
    at, info = chunk_key(p, LOGITS, 1)
    patch(p, at + 8 + 8 * 3, struct.pack("<Q", 1 << 40))


@case("chunk-btree-loop",
      "the chunk index B-tree node claims level 1 and points to itself as its child")
def _(p):
    gzip_teacher(p)
    at, info = chunk_key(p, LOGITS, 0)
    data = read(p)
    node = data.rfind(b"TREE", 0, at)
    patch(p, node + 5, b"\x01")
    patch(p, at + 8 + 8 * 3, struct.pack("<Q", node))


@case("chunk-btree-signature", "the chunk index B-tree node has a broken signature")
def _(p):
    gzip_teacher(p)
    at, info = chunk_key(p, LOGITS, 0)
    node = read(p).rfind(b"TREE", 0, at)
    patch(p, node, b"TRAP")


# -- declared sizes far beyond what is stored --


@case("declared-huge-unwritten",
      "logits declared [2^40, 2^20] float32 (chunked), never written; no other dataset",
      partner="self")
def _(p):
    with h5py.File(p, "w") as f:
        bare(f)
        new_dataset(f, LOGITS, (1 << 40, 1 << 20), "f4", chunks=(1, 1 << 16))


@case("declared-huge-contiguous",
      "contiguous logits whose dataspace is patched to [2^40, 2^20] (storage for 48 x 4)",
      partner="self")
def _(p):
    with h5py.File(p, "w") as f:
        bare(f).create_dataset("logits", data=np.ones((N, C), "f4"))
    patch_dims(p, (N, C), (1 << 40, 1 << 20))


@case("rows-2e40-consistent",
      "a consistent dump of 2^40 samples: labels, logits, features, head; chunks never written",
      partner="self")
def _(p):
    n = 1 << 40
    with h5py.File(p, "w") as f:
        g = bare(f)
        new_dataset(f, "labels", (n,), "i1", chunks=(1 << 20,))
        new_dataset(f, LOGITS, (n, C), "f4", chunks=(1 << 16, C))
        for k, w in enumerate(TEACHER_WIDTHS):
            d = new_dataset(f, "checkpoints/final/features/layer%d" % (k + 1), (n, w), "f4",
                            chunks=(1 << 16, w))
            d.attrs["depth"] = np.int64(k)
        hd = g.create_group("head")
        hd["weight"] = np.ones((C, TEACHER_WIDTHS[-1]), "f4")
        hd["bias"] = np.ones(C, "f4")
        hd.attrs["input"] = "layer2"


@case("labels-2e31", "/labels declared with 2^31 rows (chunked, never written); the rest N = 48")
def _(p):
    with h5py.File(p, "w") as f:
        fill(f, "teacher")
        del f["labels"]
        new_dataset(f, "labels", (1 << 31,), "i4", chunks=(1 << 20,))


@case("feature-2e28-wide",
      "the head's input layer is [48, 2^28] float32 and the head weight [4, 2^28] "
      "(chunked, never written)")
def _(p):
    with h5py.File(p, "w") as f:
        fill(f, "teacher")
        d = new_dataset(f, "checkpoints/final/features/wide", (N, 1 << 28), "f4",
                        chunks=(1, 1 << 20))
        d.attrs["depth"] = np.int64(5)
        hd = f["checkpoints/final/head"]
        del hd["weight"], f["checkpoints/final/gradients/features"]
        new_dataset(f, "checkpoints/final/head/weight", (C, 1 << 28), "f4", chunks=(1, 1 << 20))
        hd.attrs["input"] = "wide"


@case("dims-overflow",
      "a 4-D feature whose dataspace is patched to [48, 2^32, 2^32, 2] (element count overflows)")
def _(p):
    with h5py.File(p, "w") as f:
        fill(f, "teacher")
        d = f.create_dataset("checkpoints/final/features/conv", data=np.ones((N, 3, 5, 7), "f4"))
        d.attrs["depth"] = np.int64(5)
    patch_dims(p, (N, 3, 5, 7), (N, 1 << 32, 1 << 32, 2))


@case("dataspace-rank-33", "the logits' dataspace message claims rank 33 (HDF5 allows 32)")
def _(p):
    dump(p, "teacher")
    at, flags = dataspace_msg(p, (N, C), object_addr(p, LOGITS))
    patch(p, at + 1, b"\x21")


# -- attributes, strings and the global heap --


@case("role-vlen-length-short",
      "the vlen descriptor of attribute role says 1 byte; its heap object holds 7")
def _(p):
    dump(p, "teacher")
    patch(p, vlen_ref(p, "teacher"), struct.pack("<I", 1))


@case("role-vlen-length-huge", "the vlen descriptor of attribute role says 2^31 - 1 bytes")
def _(p):
    dump(p, "teacher")
    patch(p, vlen_ref(p, "teacher"), struct.pack("<I", 0x7FFFFFFF))


@case("role-vlen-heap-address", "the vlen descriptor of attribute role points past the end of file")
def _(p):
    dump(p, "teacher")
    patch(p, vlen_ref(p, "teacher") + 4, struct.pack("<Q", 1 << 40))


@case("role-vlen-heap-index", "the vlen descriptor of attribute role names heap object 999")
def _(p):
    dump(p, "teacher")
    patch(p, vlen_ref(p, "teacher") + 12, struct.pack("<I", 999))


@case("gheap-object-size", "the global heap object holding role claims 2^40 bytes")
def _(p):
    dump(p, "teacher")
    col, obj = gheap(p, "teacher")
    patch(p, obj + 8, struct.pack("<Q", 1 << 40))


@case("gheap-collection-size", "the global heap collection holding role claims 2^40 bytes")
def _(p):
    dump(p, "teacher")
    col, obj = gheap(p, "teacher")
    patch(p, col + 8, struct.pack("<Q", 1 << 40))


@case("gheap-signature", "the global heap collection holding role has a broken signature")
def _(p):
    dump(p, "teacher")
    col, obj = gheap(p, "teacher")
    patch(p, col, b"GCOX")


@case("attr-name-size", "attribute message kdlens_format claims a 65535-byte name")
def _(p):
    dump(p, "teacher")
    msg, ver, name = attr_msg(p, "kdlens_format")
    patch(p, msg + 2, b"\xff\xff")


@case("attr-datatype-class", "attribute message step holds a datatype of class 15 (none such)")
def _(p):
    dump(p, "teacher")
    msg, ver, name = attr_msg(p, "step")
    nsize = struct.unpack_from("<H", read(p), msg + 2)[0]
    dt = name + (nsize if ver == 3 else (nsize + 7) // 8 * 8)
    patch(p, dt, bytes([(read(p)[dt] & 0xF0) | 0x0F]))


@case("attr-dataspace-huge",
      "attribute step is stored as a 1-element array whose dataspace is patched to 2^25 "
      "elements")
def _(p):
    with h5py.File(p, "w") as f:
        fill(f, "teacher")
        f["checkpoints/final"].attrs["step"] = np.array([10], dtype=np.int64)
    patch_dims(p, (1,), (1 << 25,), object_addr(p, "checkpoints/final"))


@case("attr-step-string", "attribute step is a string, attribute kdlens_format a float")
def _(p):
    with h5py.File(p, "w") as f:
        fill(f, "teacher")
        f.attrs["kdlens_format"] = 1.0
        f["checkpoints/final"].attrs["step"] = "ten"


# -- floating-point datatypes --


def float_type_patched(dtype, proto, offset, value):
    """A writer: a dump stored as @dtype whose logits' datatype message
    (@proto: the bytes HDF5 writes for the type) gets @value at @offset.
    Each dataset holds its own copy of the message: only the logits' changes."""
    def writer(p):
        dump(p, "teacher", dtype=dtype)
        at = read(p).find(proto, object_addr(p, LOGITS))
        patch(p, at + offset, value)
    return writer


# Offsets in a float datatype message: 4 size, 10 precision, 12 exponent
# location, 13 exponent size, 15 mantissa size.
for _name, _dtype, _proto, _at, _value, _what in [
        ("float16-mantissa-overlap", "f2", F16, 15, b"\x0e",
         "the logits' float16 type says mantissa bits 0..13 (they overlap the exponent)"),
        ("float16-exponent-zero", "f2", F16, 13, b"\x00",
         "the logits' float16 type has a 0-bit exponent"),
        ("float16-exponent-huge", "f2", F16, 12, b"\x3c\x40",
         "the logits' float16 type has a 64-bit exponent at bit 60 of a 16-bit value"),
        ("float-size-absurd", "f4", F32, 4, struct.pack("<I", 1 << 30),
         "the logits' float32 type claims to be 2^30 bytes wide"),
        ("float-precision-absurd", "f4", F32, 10, struct.pack("<H", 60000),
         "the logits' float32 type claims a precision of 60000 bits")]:
    case(_name, _what)(float_type_patched(_dtype, _proto, _at, _value))


# -- optional objects that exist but cannot be used --


@case("sample-ids-unopenable", "/sample_ids exists but its object header is damaged")
def _(p):
    dump(p, "teacher")
    obj_header_version(p, "sample_ids")


@case("head-unopenable", "the head group exists but its object header is damaged")
def _(p):
    dump(p, "teacher")
    obj_header_version(p, "checkpoints/final/head")


@case("gradients-unopenable", "gradients/logits exists but its object header is damaged")
def _(p):
    dump(p, "teacher")
    obj_header_version(p, "checkpoints/final/gradients/logits")


@case("labels-unopenable", "/labels exists but its object header is damaged")
def _(p):
    dump(p, "teacher")
    obj_header_version(p, "labels")


@case("logits-unopenable", "the logits exist but their object header is damaged")
def _(p):
    dump(p, "teacher")
    obj_header_version(p, LOGITS)


@case("sample-ids-compact-short",
      "/sample_ids is compact (in its object header), whose stored size is patched to 8 of "
      "its 384 bytes (fuzz-join find: libhdf5 1.10's H5Dread copied past the buffer)")
def _(p):
    def compact(f, name):
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        dcpl.set_obj_track_times(False)
        ids = 100 + np.arange(N, dtype=np.int64)
        d = h5py.h5d.create(f.id, name.encode(), h5py.h5t.NATIVE_INT64,
                            h5py.h5s.create_simple((N,)), dcpl=dcpl)
        d.write(h5py.h5s.ALL, h5py.h5s.ALL, ids)
    replaced(p, "sample_ids", compact)
    # Layout message v3, class 0 (compact), then the 2-byte size of the data.
    at = find1(read(p), struct.pack("<BBH", 3, 0, 8 * N) + struct.pack("<q", 100),
               "compact layout of sample_ids")
    patch(p, at + 2, struct.pack("<H", 8))


@case("sample-ids-dangling", "/sample_ids is a soft link to a path that does not exist")
def _(p):
    replaced(p, "sample_ids", h5py.SoftLink("/nowhere"))


@case("gradients-dangling", "gradients is a soft link to a path that does not exist")
def _(p):
    replaced(p, "checkpoints/final/gradients", h5py.SoftLink("/nowhere/gradients"))


@case("head-weight-external-missing",
      "head/weight is an external link to a file that does not exist")
def _(p):
    replaced(p, HEAD_W, h5py.ExternalLink("no-such-file.h5", "/weight"))


@case("head-weight-external-fifo",
      "head/weight is an external link into a FIFO nobody writes (run-cases.py makes it)")
def _(p):
    replaced(p, HEAD_W, h5py.ExternalLink("hostile-fifo", "/weight"))


@case("labels-soft-loop", "/labels is a soft link to itself")
def _(p):
    replaced(p, "labels", h5py.SoftLink("/labels"))


@case("features-hard-cycle", "features/ holds a hard link to its own group (a cycle)")
def _(p):
    with h5py.File(p, "w") as f:
        fill(f, "teacher")
        g = f["checkpoints/final/features"]
        g["loop"] = g


# -- objects of the wrong kind --


@case("labels-group", "/labels is a group, not a dataset")
def _(p):
    replaced(p, "labels", lambda f, name: f.create_group(name))


@case("labels-string", "/labels is a dataset of strings")
def _(p):
    replaced(p, "labels", np.array([b"cat"] * N))


@case("labels-enum", "/labels is an HDF5 enum (integer base type)")
def _(p):
    dt = h5py.enum_dtype({"a": 0, "b": 1, "c": 2, "d": 3}, basetype="i1")
    replaced(p, "labels", lambda f, name: f.create_dataset(
        name, data=(np.arange(N) % C).astype("i1"), dtype=dt))


@case("labels-scalar", "/labels is a scalar dataset")
def _(p):
    replaced(p, "labels", np.int32(3))


@case("labels-out-of-range", "/labels holds class 4 of classes 0..3 and -1")
def _(p):
    poked(p, "labels", [5, 9], [C, -1])


@case("topk-index-duplicate-huge",
      "logits_topk/indices repeats a class within a row and holds one far beyond C")
def _(p):
    with h5py.File(p, "w") as f:
        fill(f, "teacher")
        n = f["labels"].shape[0]
        ix = np.tile(np.arange(3, dtype=np.int64), (n, 1))
        ix[4, 2] = ix[4, 0]
        ix[9, 1] = 2 ** 62
        f["checkpoints/final/logits_topk/indices"] = ix
        f["checkpoints/final/logits_topk/values"] = np.zeros((n, 3), "f4")


@case("head-dataset", "head is a dataset, not a group")
def _(p):
    replaced(p, "checkpoints/final/head", np.ones((C, TEACHER_WIDTHS[-1]), "f4"))


@case("head-weight-string", "head/weight is a dataset of strings")
def _(p):
    replaced(p, HEAD_W, np.array([[b"w"] * TEACHER_WIDTHS[-1]] * C))


@case("logits-group", "the logits are a group, not a dataset")
def _(p):
    replaced(p, LOGITS, lambda f, name: f.create_group(name))


@case("logits-compound", "the logits are a compound type of two floats")
def _(p):
    replaced(p, LOGITS, np.zeros((N, C), dtype=[("re", "f4"), ("im", "f4")]))


@case("checkpoints-dataset", "/checkpoints is a dataset, not a group")
def _(p):
    replaced(p, "checkpoints", np.ones(3))


@case("logits-empty", "the logits are [0, 4]; /labels [0]")
def _(p):
    with h5py.File(p, "w") as f:
        fill(f, "teacher")
        del f["labels"], f["sample_ids"], f[LOGITS]
        f["labels"] = np.zeros(0, "i4")
        f[LOGITS] = np.zeros((0, C), "f4")


@case("format-2", "kdlens_format = 2 (a newer format)")
def _(p):
    with h5py.File(p, "w") as f:
        fill(f, "teacher")
        f.attrs["kdlens_format"] = 2


@case("sample-ids-duplicate", "/sample_ids holds one id twice", role="student")
def _(p):
    poked(p, "sample_ids", 7, 100 + 3, role="student")  # the id of sample 3


# -- whole-file damage --


def truncated(frac=None, at=None):
    def writer(p):
        dump(p, "teacher")
        size = os.path.getsize(p)
        with open(p, "r+b") as fp:
            fp.truncate(at if at is not None else int(size * frac))
    return writer


for _name, _kw, _what in [
        ("truncated-8", {"at": 8}, "the first 8 bytes (the signature) only"),
        ("truncated-40", {"at": 40}, "cut inside the superblock"),
        ("truncated-800", {"at": 800}, "cut after the root group's header"),
        ("truncated-25pc", {"frac": 0.25}, "a quarter of the file"),
        ("truncated-50pc", {"frac": 0.5}, "half of the file"),
        ("truncated-75pc", {"frac": 0.75}, "three quarters of the file"),
        ("truncated-tail", {"frac": 0.995}, "all but the last bytes")]:
    case(_name, "a valid dump truncated: " + _what)(truncated(**_kw))


@case("empty", "an empty file")
def _(p):
    open(p, "wb").close()


@case("not-hdf5", "a text file")
def _(p):
    with open(p, "w") as fp:
        fp.write("teacher,student\n1,2\n")


@case("signature-only", "the HDF5 signature followed by 4 KiB of 0xff")
def _(p):
    with open(p, "wb") as fp:
        fp.write(b"\x89HDF\r\n\x1a\n" + b"\xff" * 4096)


@case("superblock-eof-huge", "the superblock's end-of-file address is 2^60")
def _(p):
    dump(p, "teacher")
    # Superblock v0: signature 8, versions 8, sizes/K 8, flags 4, then base,
    # free-space, EOF and driver addresses (8 each).
    patch(p, 24 + 8 + 8, struct.pack("<Q", 1 << 60))


@case("superblock-root-garbage", "the superblock's root group address points into the data")
def _(p):
    dump(p, "teacher")
    patch(p, 24 + 32 + 8, struct.pack("<Q", os.path.getsize(p) - 200))


@case("root-header-garbled", "the root group's object header is overwritten with 0xa5")
def _(p):
    dump(p, "teacher")
    addr = object_addr(p, "/")
    patch(p, addr, b"\xa5" * 64)


# -- values --


@case("nan-logits", "a NaN in the teacher's logits")
def _(p):
    poked(p, LOGITS, (17, 2), np.nan)


@case("inf-feature", "an Inf in the student's last feature layer (the head's input)",
      role="student")
def _(p):
    poked(p, "checkpoints/final/features/layer2", (30, 1), -np.inf, role="student")


@case("nan-float16-head", "a NaN in a float16 head weight (cka does not read the head)",
      expect={"inspect": 1, "kl": 1, "cka": 0})
def _(p):
    poked(p, HEAD_W, (1, 1), np.nan, dtype="f2")


@case("nan-gradient", "a NaN in the logit gradients (cka does not read them)",
      expect={"inspect": 1, "kl": 1, "cka": 0})
def _(p):
    poked(p, "checkpoints/final/gradients/logits", (0, 0), np.nan)


# -- valid but odd --


@case("odd-names", "checkpoint, layer and file names with spaces, non-ASCII, '%' and quotes",
      expect=0, partner=ODD_S, report=True, file=ODD_T)
def _(p):
    dump(p, "teacher", layer_names=["conv 1.ü%n\"'", "頭 %s 'pen'"],
         checkpoints=(("step 5 ü %d \"early\"", 5), ("fin%nal 'ü'", 10)))


@case("odd-names-student", "the student of odd-names, with odd names of its own", expect=0,
      role="student", partner=ODD_T, report=True, file=ODD_S)
def _(p):
    dump(p, "student", layer_names=["a b%%c", "ü \"pen\" %x"],
         checkpoints=(("ep 1 %s", 1), ("ep 2 'ü'", 2), ("ep \"3\" %n", 3)))


@case("odd-name-inf", "an Inf in a file whose name has spaces, non-ASCII, '%' and quotes",
      file="odd ü %s%n \"inf\" 'x'.h5")
def _(p):
    poked(p, LOGITS, (3, 3), np.inf)


@case("long-names", "a 300-byte student checkpoint name and 300-byte layer names", expect=0,
      role="student", report=True)
def _(p):
    dump(p, "student", layer_names=["L" * 299 + "1", "L" * 299 + "2"],
         checkpoints=(("c" * 300, 3),))


@case("dotdot-names", "a student checkpoint and a layer named '..'", expect=0, role="student",
      report=True)
def _(p):
    dump(p, "student", layer_names=["..", "..."], checkpoints=(("..", 1), ("...", 2)))


@case("flat-student", "a student whose root is its only checkpoint (no /checkpoints)", expect=0,
      role="student", report=True)
def _(p):
    with h5py.File(p, "w") as f:
        fill(f, "student")
        g = f["checkpoints/final"]
        for k in list(g.keys()):
            f.move("checkpoints/final/" + k, k)
        del f["checkpoints"]


@case("latest-format", "a teacher in HDF5's newest format (v3 superblock, new chunk indexes), "
      "gzip + shuffle + fletcher32", expect=0, report=True)
def _(p):
    with h5py.File(p, "w", libver="latest") as f:
        fill(f, "teacher")
        z = f[LOGITS][...]
        del f[LOGITS]
        f.create_dataset(LOGITS, data=z, chunks=(5, C), maxshape=(None, C), compression="gzip",
                         shuffle=True, fletcher32=True)


@case("userblock", "a valid student behind a 4 KiB user block", expect=0, role="student")
def _(p):
    dump(p, "student", userblock=4096)


@case("permuted-float64", "a float64 student stored in another sample order, joined on ids",
      expect=0, role="student", report=True)
def _(p):
    dump(p, "student", dtype="f8", order=np.random.default_rng(5).permutation(N))


# -- not regular files: made by run-cases.py --

case("input-fifo", "the input is a FIFO nobody writes", make="fifo")(None)
case("input-directory", "the input is a directory", make="directory")(None)
case("input-devnull", "the input is /dev/null", make="devnull")(None)
case("input-devzero", "the input is /dev/zero", make="devzero")(None)
case("input-missing", "the input does not exist", make="missing")(None)
case("input-symlink-loop", "the input is a symbolic link to itself", make="symlink-loop")(None)


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    out = argv[1]
    if "--list" in argv[2:]:
        for c in CASES:
            print("%-28s %s" % (c["name"], c["provokes"]))
        return 0
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for c in CASES:
        if c["writer"]:
            c["writer"](os.path.join(out, c["file"]))
    manifest = [{k: v for k, v in c.items() if k != "writer"} for c in CASES]
    with open(os.path.join(out, "manifest.json"), "w") as fp:
        json.dump(manifest, fp, indent=1, ensure_ascii=False)
        fp.write("\n")
    total = sum(os.path.getsize(os.path.join(out, c["file"])) for c in CASES if c["writer"])
    print("mkcases: %d cases, %d files, %d bytes in %s" %
          (len(CASES), sum(1 for c in CASES if c["writer"]), total, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
