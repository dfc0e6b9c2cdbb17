"""Write a PyTorch model's internals in the kdlens HDF5 dump schema (version 1).

One call of :func:`export_checkpoint` runs a model over a fixed set of samples
and appends one checkpoint group to an HDF5 file::

    /                       attrs: kdlens_format=1, role, model
    /labels                 int64 [N]
    /sample_ids             int64 [N]
    /checkpoints/<name>/    attrs: step (int64), epoch (int, optional)
        logits              [N, C]
        features/<layer>    [N, ...]            attr depth (0 = closest to input)
        gradients/logits    [N, C]              attrs loss="cross_entropy", tau=1.0
        gradients/features/<layer>              optional, same shape as the feature
        head/weight         float32 [C, D_pen]  attr input = <layer> on the group
        head/bias           float32 [C]

Feature layers are captured with forward hooks on the given modules, whole
or through a select function that picks part of the output (the class token
``t[:, 0]`` of a vision transformer's ``[B, T, D]`` output).  The
gradients are those of the plain cross-entropy with the ground-truth label at
temperature 1, per sample, whatever loss the model was trained with, so that
dumps from different models and training recipes are comparable.

Per-sample gradients come from one backward pass per batch: the model runs in
eval mode, where (for the layers used here: convolutions, linear layers,
BatchNorm with running statistics, pooling, dropout disabled) every sample's
outputs depend on that sample only.  The gradient of the batch *sum* of the
per-sample losses with respect to sample n's logits or features is therefore
exactly that sample's own gradient.  This does not hold for models that mix
samples in eval mode (BatchNorm forced into train mode, attention across the
batch); do not export those.

Which sample each row holds is always written to ``/sample_ids``, and the rows
are in ascending id order whenever the exporter can choose the order: for a
tensor of inputs and for a ``DataLoader`` over a map-style data set (which it
re-reads through its own index-carrying loader, whatever the caller's sampler
or shuffling did).  A shuffled and an unshuffled export of the same data are
therefore the same file, byte for byte.  Other iterables of batches are
written in the order they come and need the caller's ``sample_ids``.
"""

import warnings

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, Subset

FORMAT_VERSION = 1
DTYPES = {"float16": np.float16, "float32": np.float32}
CHUNK_ROWS = 256
CHUNK_BYTES = 1 << 20
GZIP_LEVEL = 4


def export_checkpoint(path, model, inputs, labels, sample_ids, layers, head,
                      head_input, checkpoint, step, epoch=None,
                      role="student", model_name=None, dtype="float16",
                      grad_layers=(), pool=None, batch_size=256):
    """Run ``model`` on ``inputs`` and append checkpoint ``checkpoint`` to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file; created if missing, otherwise opened for appending.  Its
        root attributes (role, model), labels and sample ids must match.
    model : torch.nn.Module
        Returns the logits ``[B, C]``.  Put in eval mode for the export and
        restored to its previous mode afterwards; parameters are not changed
        and their ``.grad`` is not touched.
    inputs : torch.Tensor, DataLoader or iterable
        The samples, in one of three forms:

        - a tensor ``[N, ...]`` of all inputs, run in batches of ``batch_size``;
        - a ``torch.utils.data.DataLoader`` over a map-style data set: the
          exporter takes the set of samples one pass of its sampler visits
          (shuffled or not, a custom sampler, a ``Subset``), then reads them
          itself, in ascending id order, with the loader's batch size,
          collate_fn and workers.  Its ``collate_fn`` must keep the samples
          of a batch in order;
        - any other iterable of batches (a list, a generator, a DataLoader
          over an ``IterableDataset``): written in the order it yields, so
          ``sample_ids`` is required.

        A batch may be a tensor or a tuple/list whose first element is the
        input (so a loader yielding ``(x, y)`` works).  When its second
        element is a 1-D integer tensor, it must equal the exported labels
        of those samples: a disagreement means ``labels`` is in another order
        and is refused.
    labels : array-like of int
        Ground-truth classes; also the targets of the exported gradients.
        One per sample, in the order of the data: the tensor's rows, the
        DataLoader's ``dataset`` (``labels[i]`` belongs to ``dataset[i]``,
        whatever order the loader visits), or the iterable's samples.
    sample_ids : array-like of int, or None
        Index of each sample in its source data set (aligns dumps), unique,
        in the same order as ``labels``; written as given.  None: the row
        number of a tensor, or for a DataLoader the index into its data set,
        taken through any ``Subset`` to the underlying data set (so exports
        from a data set and from a Subset of it share ids).  An iterable
        that is not such a DataLoader cannot be given None.
    layers : dict[str, torch.nn.Module or (torch.nn.Module, callable)]
        Feature layers, name -> module whose output is stored, in order from
        input to output: the order gives the ``depth`` attribute.  Names may
        contain dots.  A module's output must be a tensor with a leading batch
        dimension and must not be modified in place later in the forward pass.
        A pair ``(module, select)`` stores ``select(output)`` instead: the
        part of the module's output that is the feature, e.g. the class token
        of a transformer, ``(model.encoder, lambda t: t[:, 0])`` for an
        output ``[B, T, D]``.  ``select`` must keep the batch dimension and
        only pick entries of the output (indexing, slicing, reshaping: no
        arithmetic), which the exporter verifies on every batch; the
        gradient of a selected layer is then the gradient with respect to
        the picked entries.
    head : torch.nn.Linear
        The final layer, ``logits = head(h)``; its output must be the model's
        output and its input the (flattened) feature ``head_input``, after
        its ``select`` if it has one.
    head_input : str
        Name in ``layers`` of the feature that feeds ``head``.
    checkpoint : str
        Name of the checkpoint group; an existing name is refused.
    step : int
        Training step of this checkpoint (attr ``step``).
    epoch : int, optional
        Training epoch (attr ``epoch``), omitted if None.
    role : {"teacher", "student"}
    model_name : str, optional
        Root attribute ``model``; defaults to the model's class name.
    dtype : {"float16", "float32"}
        Storage type of logits, features and gradients.  The head is always
        stored as float32.
    grad_layers : iterable of str
        Layers (names in ``layers``) whose per-sample gradients are stored
        under ``gradients/features``.
    pool : tuple (k_h, k_w) or dict[str, tuple], optional
        Adaptive-average-pool 4-D feature maps (and their gradients) to
        ``k_h x k_w`` before storing; a dict pools only the layers it names.
        Pooled datasets get attrs ``pool="adaptive_avg"`` and
        ``pooled_from=[H, W]``.  When H and W are divisible by the pooled
        size every output cell averages an equal block, so the global average
        over H, W (what kdlens uses by default) is unchanged; other sizes
        raise a warning.  A pooled gradient is the block average of dL/df.
    batch_size : int
        Batch size used when ``inputs`` is a tensor.

    The file's rows are in ascending ``sample_ids`` order for a tensor or a
    DataLoader over a map-style data set, and in the iterable's order
    otherwise; ``/labels`` and ``/sample_ids`` follow the rows.

    Raises
    ------
    ValueError
        Bad arguments, an existing checkpoint name, a file whose root
        attributes, labels or sample ids differ, a head that does not match
        the model, values that overflow float16, repeated sample ids (or a
        sampler that visits a sample twice), labels that disagree with the
        batches' own, or an iterable without ``sample_ids``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    layers, selects = _split_layers(layers)
    grad_layers = list(grad_layers)
    for name in [checkpoint] + list(layers):
        if not name or "/" in name:
            raise ValueError(f"name {name!r} must be non-empty and contain no '/'")
    for name in [head_input] + grad_layers:
        if name not in layers:
            raise ValueError(f"layer {name!r} is not one of the feature layers {list(layers)}")
    pools = _pool_sizes(pool, layers)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if sample_ids is not None:
        sample_ids = np.asarray(sample_ids, dtype=np.int64)
        if sample_ids.shape != labels.shape:
            raise ValueError(f"labels and sample_ids must be 1-D of equal length, got "
                             f"{labels.shape} and {sample_ids.shape}")
    if model_name is None:
        model_name = type(model).__name__
    labels, sample_ids, batches = _rows(inputs, labels, sample_ids, batch_size)

    with h5py.File(path, "a") as f:
        _prepare_root(f, path, role, model_name, labels, sample_ids)
        _append_checkpoint(f, path, checkpoint, step, epoch, lambda group: _write_checkpoint(
            group, model, batches, labels, sample_ids, layers, selects, head, head_input,
            DTYPES[dtype], grad_layers, pools))


def _append_checkpoint(f, path, checkpoint, step, epoch, write):
    """Create the group of ``checkpoint`` with its attributes and fill it with
    ``write(group)``; on any failure the group is removed again."""
    ckpts = f.require_group("checkpoints")
    if checkpoint in ckpts:
        raise ValueError(f"{path}: checkpoint {checkpoint!r} already exists; "
                         "choose another name or write a new file")
    group = ckpts.create_group(checkpoint)
    try:
        group.attrs["step"] = np.int64(step)
        if epoch is not None:
            group.attrs["epoch"] = int(epoch)
        write(group)
    except BaseException:
        del ckpts[checkpoint]
        raise


def _split_layers(layers):
    """Split ``layers`` into name -> module and name -> select for the pairs."""
    modules, selects = {}, {}
    for name, value in dict(layers).items():
        if isinstance(value, tuple):
            if len(value) != 2 or not callable(value[1]):
                raise ValueError(f"layer {name!r}: expected a module or a pair "
                                 "(module, select function)")
            value, selects[name] = value
        if not isinstance(value, torch.nn.Module):
            raise ValueError(f"layer {name!r}: expected a torch.nn.Module, "
                             f"got {type(value).__name__}")
        modules[name] = value
    return modules, selects


def _rows(inputs, labels, sample_ids, batch_size):
    """Decide which sample each row of the file holds.

    Returns the labels and sample ids in row order and a generator of
    (row, x, y) batches for :func:`_write_checkpoint`."""
    if isinstance(inputs, torch.Tensor):
        if inputs.shape[0] != labels.shape[0]:
            raise ValueError(f"inputs have {inputs.shape[0]} samples, labels {labels.shape[0]}")
        ids = np.arange(labels.shape[0], dtype=np.int64) if sample_ids is None else sample_ids
        pos = _ascending(np.arange(labels.shape[0]), ids)
        return labels[pos], ids[pos], _tensor_batches(inputs, pos, batch_size)
    if isinstance(inputs, DataLoader) and not isinstance(inputs.dataset, IterableDataset):
        n_data = len(inputs.dataset)
        if labels.shape[0] != n_data:
            raise ValueError(f"labels has {labels.shape[0]} entries, the DataLoader's dataset "
                             f"{n_data}: give one per sample of loader.dataset, in its order")
        ids = _dataset_ids(inputs.dataset) if sample_ids is None else sample_ids
        pos, step = _visited(inputs)
        pos = _ascending(pos, ids)
        return labels[pos], ids[pos], _loader_batches(inputs, pos, step)
    if sample_ids is None:
        raise ValueError(f"the order of the samples of a {type(inputs).__name__} is unknown: "
                         "pass sample_ids (one per sample, in the order they come) or a "
                         "DataLoader over a map-style dataset")
    _check_unique(sample_ids)
    return labels, sample_ids, _iterable_batches(inputs)


def _ascending(pos, ids):
    """The positions ``pos`` sorted by their ids, which must be unique."""
    pos = pos[np.argsort(ids[pos], kind="stable")]
    _check_unique(ids[pos])
    return pos


def _check_unique(ids):
    """Refuse a sample id that occurs twice: rows could not be told apart."""
    ids = np.sort(ids)
    twice = ids[1:][ids[1:] == ids[:-1]]
    if twice.size:
        raise ValueError(f"sample id {twice[0]} occurs more than once: sample ids must be unique")


def _dataset_ids(dataset):
    """Each index of ``dataset`` as an index of the data set under any Subsets."""
    ids = np.arange(len(dataset), dtype=np.int64)
    while isinstance(dataset, Subset):
        parent = np.asarray(dataset.indices, dtype=np.int64)
        ids = parent[ids]
        dataset = dataset.dataset
        ids = np.where(ids < 0, ids + len(dataset), ids)
    return ids


def _visited(loader):
    """The dataset indices one pass of the loader's sampler visits, and its batch size."""
    if loader.batch_sampler is None:
        raise ValueError("a DataLoader with batch_size=None yields unbatched samples: "
                         "give it a batch_size")
    batches = [list(b) for b in loader.batch_sampler]
    pos = np.asarray([i for b in batches for i in b])
    if pos.size == 0:
        raise ValueError("the DataLoader yields no samples")
    n_data = len(loader.dataset)
    if pos.dtype.kind not in "iu" or pos.min() < 0 or pos.max() >= n_data:
        raise ValueError(f"the DataLoader's sampler yields {pos[0]!r}...; expected indices "
                         f"0..{n_data - 1} of its dataset")
    pos = pos.astype(np.int64)
    counts = np.bincount(pos, minlength=n_data)
    if counts.max() > 1:
        raise ValueError(f"the DataLoader visits dataset index {int(counts.argmax())} more than "
                         "once (sampling with replacement?): each sample must be exported once")
    return pos, loader.batch_size or max(len(b) for b in batches)


def _tensor_batches(inputs, pos, batch_size):
    for row in range(0, pos.shape[0], batch_size):
        yield row, inputs[torch.from_numpy(pos[row:row + batch_size])], None


def _loader_batches(loader, pos, batch_size):
    """Read the samples ``pos`` (dataset indices in row order) through a copy of
    ``loader`` whose batches carry their indices."""
    row_of = np.full(len(loader.dataset), -1, dtype=np.int64)
    row_of[pos] = np.arange(pos.shape[0])
    chunks = [pos[i:i + batch_size].tolist() for i in range(0, pos.shape[0], batch_size)]
    options = dict(num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                   timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                   generator=loader.generator)
    if loader.num_workers > 0:
        options.update(multiprocessing_context=loader.multiprocessing_context,
                       prefetch_factor=loader.prefetch_factor)
    if getattr(loader, "pin_memory_device", ""):
        options["pin_memory_device"] = loader.pin_memory_device
    indexed = DataLoader(_Indexed(loader.dataset), batch_sampler=chunks,
                         collate_fn=_IndexedCollate(loader.collate_fn), **options)
    for index, batch in indexed:
        rows = row_of[index.numpy()]
        if not np.array_equal(rows, np.arange(rows[0], rows[0] + rows.shape[0])):
            raise RuntimeError("kdlens.export: a batch's samples are not consecutive rows")
        x, y = _split_batch(batch)
        yield int(rows[0]), x, y


def _iterable_batches(batches):
    row = 0
    for batch in batches:
        x, y = _split_batch(batch)
        yield row, x, y
        row += x.shape[0]


class _Indexed(torch.utils.data.Dataset):
    """``dataset[i]`` as ``(i, dataset[i])``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return index, self.dataset[index]


class _IndexedCollate:
    """Collates ``(i, sample)`` pairs into ``(indices, collate_fn(samples))``."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, items):
        index = torch.as_tensor([i for i, _ in items], dtype=torch.int64)
        return index, self.collate_fn([sample for _, sample in items])


def _split_batch(batch):
    """The inputs of a batch and, if it carries them, its integer labels [B]."""
    if not isinstance(batch, (tuple, list)):
        return batch, None
    x, y = batch[0], batch[1] if len(batch) > 1 else None
    if (isinstance(y, torch.Tensor) and y.ndim == 1 and y.shape[0] == x.shape[0]
            and not y.is_floating_point() and not y.is_complex() and y.dtype != torch.bool):
        return x, y
    return x, None


def _check_batch_labels(y_batch, labels, sample_ids):
    """Refuse labels that disagree with the ones the batch carries."""
    if y_batch is None:
        return
    bad = np.flatnonzero(y_batch.cpu().numpy() != labels)
    if bad.size:
        raise ValueError(f"sample id {sample_ids[bad[0]]}: the batch's label is "
                         f"{int(y_batch[bad[0]])}, labels has {labels[bad[0]]}; give labels in "
                         "the order of the data (for a DataLoader, of loader.dataset)")


def _pool_sizes(pool, layers):
    """Map layer name -> (k_h, k_w) for the layers to pool."""
    if pool is None:
        return {}
    if isinstance(pool, dict):
        unknown = set(pool) - set(layers)
        if unknown:
            raise ValueError(f"pool names unknown layers {sorted(unknown)}")
        return {name: tuple(size) for name, size in pool.items()}
    return {name: tuple(pool) for name in layers}


def _prepare_root(f, path, role, model_name, labels, sample_ids):
    """Create the root attributes, labels and sample ids, or check they match."""
    if "kdlens_format" not in f.attrs:
        f.attrs["kdlens_format"] = FORMAT_VERSION
        f.attrs["role"] = role
        f.attrs["model"] = model_name
        f.create_dataset("labels", data=labels)
        f.create_dataset("sample_ids", data=sample_ids)
        return
    found = {key: f.attrs.get(key) for key in ("kdlens_format", "role", "model")}
    expected = {"kdlens_format": FORMAT_VERSION, "role": role, "model": model_name}
    for key, value in expected.items():
        if found[key] != value:
            raise ValueError(f"{path}: root attr {key} is {found[key]!r}, this export "
                             f"has {value!r}")
    for name, data in (("labels", labels), ("sample_ids", sample_ids)):
        if name not in f or not np.array_equal(f[name][()], data):
            raise ValueError(f"{path}: /{name} differs from this export's {name}")


def _write_checkpoint(group, model, batches, labels, sample_ids, layers, selects, head,
                      head_input, dtype, grad_layers, pools):
    """Run the model batch by batch and stream every dataset into ``group``.

    ``batches`` yields (row, x, y): the inputs of rows ``row, row + 1, ...``
    and the labels the batch itself carries, or None."""
    n_total = labels.shape[0]
    device = next(model.parameters()).device
    writer = _Writer(group, n_total, dtype)
    was_training = model.training
    model.eval()
    try:
        written = 0
        for row, x, y_batch in batches:
            y = labels[row:row + x.shape[0]]
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"inputs have more samples than the {n_total} labels")
            _check_batch_labels(y_batch, y, sample_ids[row:row + x.shape[0]])
            out = _forward_backward(model, x.to(device), torch.as_tensor(y, device=device),
                                    layers, selects, head, head_input, grad_layers)
            for key, value in out.items():
                name = key.rsplit("/", 1)[-1]
                writer.write(key, value, row, pools.get(name) if "features/" in key else None)
            written += x.shape[0]
        if written != n_total:
            raise ValueError(f"inputs have {written} samples, labels {n_total}")
    finally:
        model.train(was_training)

    for depth, name in enumerate(layers):
        group["features"][name].attrs["depth"] = depth
    grads = group["gradients"]
    grads.attrs["loss"] = "cross_entropy"
    grads.attrs["tau"] = 1.0
    grads.attrs["target"] = "label"
    grads.attrs["note"] = ("per-sample gradient of the plain cross-entropy with the "
                           "label at tau=1, whatever loss the model was trained with")
    hg = group.create_group("head")
    hg.attrs["input"] = head_input
    hg.create_dataset("weight", data=head.weight.detach().cpu().numpy().astype(np.float32))
    bias = head.bias if head.bias is not None else torch.zeros(head.out_features)
    hg.create_dataset("bias", data=bias.detach().cpu().numpy().astype(np.float32))


def _forward_backward(model, x, y, layers, selects, head, head_input, grad_layers):
    """One batch: logits, hooked features and per-sample CE gradients, as numpy."""
    feats, versions, head_io, raws, picks = {}, {}, {}, {}, {}

    def capture(name):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}, "
                                "expected a tensor")
            if name in feats:
                raise ValueError(f"layer {name!r} ran twice in one forward pass")
            versions[name] = output._version
            if name in selects:
                raws[name] = output
                output, picks[name] = _select(selects[name], output, name, x.shape[0])
            feats[name] = output
        return hook

    def capture_head(module, args, output):
        head_io["input"], head_io["output"] = args[0], output

    handles = [module.register_forward_hook(capture(name)) for name, module in layers.items()]
    handles.append(head.register_forward_hook(capture_head))
    try:
        if x.is_floating_point():
            x = x.detach().requires_grad_(True)
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()

    missing = [name for name in layers if name not in feats]
    if missing:
        raise ValueError(f"layers {missing} did not run in the forward pass")
    for name, t in feats.items():
        if raws.get(name, t)._version != versions[name]:
            raise ValueError(f"layer {name!r}: its output was modified in place later in "
                             "the forward pass (e.g. ReLU(inplace=True)); hook another module")
    _check_head(logits, head_io, feats[head_input], head_input)

    wrt = [logits] + [raws.get(name, feats[name]) for name in grad_layers]
    loss = F.cross_entropy(logits.float(), y, reduction="sum")
    grads = list(torch.autograd.grad(loss, wrt))
    for i, name in enumerate(grad_layers, 1):
        if name in picks:   # d loss / d (picked entries) = those entries of d loss / d output
            grads[i] = grads[i].reshape(-1)[picks[name]]

    out = {"logits": logits, "gradients/logits": grads[0]}
    out.update({f"features/{name}": t for name, t in feats.items()})
    out.update({f"gradients/features/{name}": g for name, g in zip(grad_layers, grads[1:])})
    return {key: t.detach().float().cpu().numpy() for key, t in out.items()}


def _select(select, output, name, batch):
    """``select(output)`` and the flat indices into ``output`` of its entries.

    Refuses a ``select`` that does not keep the batch dimension or that does
    more than pick entries: applied to the entries' flat indices (an integer
    tensor shaped like ``output``), it must give indices whose entries of
    ``output`` are exactly ``select(output)``."""
    feature = select(output)
    if not isinstance(feature, torch.Tensor) or feature.ndim == 0 or feature.shape[0] != batch:
        raise ValueError(f"layer {name!r}: its select function must return a tensor that "
                         "keeps the batch dimension")
    n = output.numel()
    flat = torch.arange(n, dtype=torch.int32 if n < 2**31 else torch.int64, device=output.device)
    try:
        picked = select(flat.reshape(output.shape))
    except (RuntimeError, TypeError):   # e.g. mean() of an integer tensor
        picked = None
    ok = isinstance(picked, torch.Tensor) and not picked.is_floating_point() and \
        picked.shape == feature.shape and bool(torch.all((picked >= 0) & (picked < n)))
    if ok:
        index = picked.long()
        ok = torch.equal(output.detach().reshape(-1)[index], feature.detach())
    if not ok:
        raise ValueError(f"layer {name!r}: its select function must only pick entries of the "
                         "module's output (indexing, slicing, reshaping), not compute new values")
    return feature, index


def _check_head(logits, head_io, feature, head_input):
    """Refuse a head whose input/output do not match the feature and the logits."""
    if not head_io:
        raise ValueError("the head did not run in the forward pass")
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError("the model must return logits of shape [B, C]")
    if head_io["output"] is not logits and not torch.equal(head_io["output"], logits):
        raise ValueError("the model's output is not the head's output: logits must be "
                         "z = W h + b with no later operation")
    h = feature.reshape(feature.shape[0], -1)
    if h.shape != head_io["input"].shape or not torch.equal(h, head_io["input"]):
        raise ValueError(f"the head's input is not the output of layer {head_input!r}")


class _Writer:
    """Creates chunked, compressed datasets on first use and fills them by rows."""

    def __init__(self, group, n_total, dtype):
        self.group, self.n_total, self.dtype = group, n_total, dtype

    def write(self, key, value, row, pool):
        attrs = {}
        if pool is not None and value.ndim == 4:
            value, attrs = _pool(value, pool, key)
        if key not in self.group:
            self._create(key, value.shape[1:], attrs)
        with np.errstate(over="ignore"):
            stored = value.astype(self.dtype)
        if not np.array_equal(np.isfinite(stored), np.isfinite(value)):
            raise ValueError(f"{key}: values overflow {np.dtype(self.dtype).name}; "
                             "export with dtype='float32'")
        self.group[key][row:row + value.shape[0]] = stored

    def _create(self, key, tail, attrs):
        row_bytes = int(np.prod(tail, dtype=np.int64)) * np.dtype(self.dtype).itemsize
        rows = max(1, min(CHUNK_ROWS, CHUNK_BYTES // max(row_bytes, 1), self.n_total))
        ds = self.group.create_dataset(key, shape=(self.n_total,) + tuple(tail),
                                       dtype=self.dtype, chunks=(rows,) + tuple(tail),
                                       compression="gzip", compression_opts=GZIP_LEVEL,
                                       shuffle=True)
        ds.attrs.update(attrs)


def _pool(value, size, key):
    """Adaptive-average-pool [B, Ch, H, W] to ``size``; return array and attrs."""
    h, w = value.shape[2:]
    if h % size[0] or w % size[1]:
        warnings.warn(f"{key}: pooling {h}x{w} to {size[0]}x{size[1]} uses unequal blocks; "
                      "the global average over H, W is not preserved")
    pooled = F.adaptive_avg_pool2d(torch.from_numpy(value), size).numpy()
    return pooled, {"pool": "adaptive_avg", "pooled_from": np.array([h, w], dtype=np.int64)}
