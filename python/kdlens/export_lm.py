"""Write a PyTorch causal language model's next-token predictions as a kdlens dump.

One call of :func:`export_lm_checkpoint` runs a model that returns logits
``[B, T, V]`` over a fixed set of token sequences and appends one checkpoint
group to an HDF5 file in the kdlens schema (version 1).  Every token that has
a next token is one sample (one row); the next token is its label::

    /                       attrs: kdlens_format=1, role, model
    /labels                 int64 [N]   the next token
    /sample_ids             int64 [N]   sequence_id * T + t (t: column in input_ids)
    /sequence_ids           int64 [N]   the sequence of each token
    /positions              int32 [N]   its position among its sequence's tokens
    /checkpoints/<name>/    attrs: step (int64), epoch (int, optional)
        logits              [N, V]              when dense=True
        logits_topk/indices int32 [N, k]        when topk=k: the k largest logits,
        logits_topk/values  [N, k]              in decreasing order
        logits_topk/logsumexp float32 [N]       the full-vocabulary normaliser
        features/<layer>    [N, D]              hooked [B, T, D] outputs
        head/weight, head/bias                  when a head is given

Padding is not written: a column ``t`` of sequence ``s`` gives a row when it
and column ``t + 1`` are tokens (``attention_mask`` 1, and not ``pad_id``).
Rows are in sequence order, then column order.  No gradients are written.

Causal models do not mix the sequences of a batch, so each row is what the
model gives the sequence alone (up to floating-point rounding of the batched
matrix products); padding on the left shifts the positions of a sequence,
which only models with absolute position embeddings that ignore the mask
would notice: give such a model right padding.
"""

import h5py
import numpy as np
import torch

from .export import (DTYPES, _append_checkpoint, _check_head, _prepare_root, _split_layers,
                     _Writer)


def export_lm_checkpoint(path, model, input_ids, checkpoint, step, *, attention_mask=None,
                         pad_id=None, sequence_ids=None, dense=True, topk=None, layers=None,
                         head=None, head_input=None, epoch=None, role="student",
                         model_name=None, dtype="float16", batch_size=8):
    """Run ``model`` on ``input_ids`` and append checkpoint ``checkpoint`` to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file; created if missing, otherwise opened for appending.  Its
        root attributes, labels, sample ids, sequence ids and positions must
        match this export's (same data, same padding).
    model : torch.nn.Module
        ``model(input_ids)`` (or ``model(input_ids, attention_mask=mask)``
        when a mask is given) returns the logits ``[B, T, V]``, or a tuple
        whose first element they are, or an object with ``.logits`` (as
        Hugging Face models do).  Run in eval mode under ``torch.no_grad()``;
        its mode is restored afterwards.
    input_ids : torch.Tensor
        Integer tokens ``[S, T]``, S sequences padded to T.
    checkpoint : str
        Name of the checkpoint group; an existing name is refused.
    step : int
        Training step of this checkpoint (attr ``step``).
    attention_mask : torch.Tensor, optional
        ``[S, T]``, nonzero for a token, 0 for padding; passed to the model
        as ``attention_mask=``.
    pad_id : int, optional
        The padding token: columns holding it are padding.  With neither a
        mask nor ``pad_id`` every column is a token.
    sequence_ids : array-like of int, optional
        Id of each sequence (unique, non-negative); default ``0 .. S - 1``.
    dense : bool
        Write the dense logits ``[N, V]``.
    topk : int, optional
        Also write the ``topk`` largest logits of each row, their indices and
        the log-normaliser ``logsumexp`` of the whole row (float32); at least
        one of ``dense`` and ``topk`` is needed.
    layers : dict[str, torch.nn.Module or (torch.nn.Module, callable)], optional
        Hidden states to store, name -> module, from input to output (the
        order gives the ``depth`` attribute).  A module's output must be
        ``[B, T, D]``, or a tuple whose first element is; a pair
        ``(module, select)`` stores ``select(output)``, which must be
        ``[B, T, D]``.  The rows kept are the samples' tokens.
    head : torch.nn.Linear, optional
        The output layer, ``logits = head(h)`` with ``h`` the layer
        ``head_input`` (a name in ``layers``); written as ``head/`` after
        checking that its input and output are that layer and the logits.
    epoch, role, model_name
        As for :func:`kdlens.export.export_checkpoint`.
    dtype : {"float16", "float32"}
        Storage type of logits, top-k values and features (the log-normaliser
        and the head are always float32).
    batch_size : int
        Sequences per forward pass.

    Raises
    ------
    ValueError
        Bad arguments, an existing checkpoint name, a file whose root data
        differ, a model output that is not ``[B, T, V]``, a hidden state that
        is not ``[B, T, D]``, a head that does not match, values that
        overflow float16, or no token with a next token.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    if not dense and not topk:
        raise ValueError("nothing to write: give dense=True or topk=k")
    if topk is not None and (int(topk) != topk or topk < 1):
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    layers, selects = _split_layers(layers or {})
    for name in [checkpoint] + list(layers):
        if not name or "/" in name:
            raise ValueError(f"name {name!r} must be non-empty and contain no '/'")
    if (head is None) != (head_input is None):
        raise ValueError("give both head and head_input, or neither")
    if head_input is not None and head_input not in layers:
        raise ValueError(f"head_input {head_input!r} is not one of the layers {list(layers)}")
    tokens = _tokens(input_ids, attention_mask, pad_id, sequence_ids)
    if model_name is None:
        model_name = type(model).__name__

    with h5py.File(path, "a") as f:
        _prepare_root(f, path, role, model_name, tokens["labels"], tokens["sample_ids"])
        _prepare_tokens(f, path, tokens)
        _append_checkpoint(f, path, checkpoint, step, epoch, lambda group: _write(
            group, model, input_ids, attention_mask, tokens, dense, topk, layers, selects,
            head, head_input, DTYPES[dtype], batch_size))


def _tokens(input_ids, attention_mask, pad_id, sequence_ids):
    """Which tokens an export of ``input_ids`` writes: ``keep`` [S, T] (the columns
    written), then per row ``labels``, ``sample_ids``, ``sequence_ids``, ``positions``."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or \
            input_ids.is_floating_point():
        raise ValueError("input_ids must be an integer tensor [S, T]")
    ids = input_ids.detach().cpu().numpy().astype(np.int64)
    n_seq, n_col = ids.shape
    valid = np.ones(ids.shape, dtype=bool)
    if attention_mask is not None:
        if tuple(attention_mask.shape) != ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                             f"input_ids {ids.shape}")
        valid &= attention_mask.detach().cpu().numpy() != 0
    if pad_id is not None:
        valid &= ids != pad_id
    if sequence_ids is None:
        sequence_ids = np.arange(n_seq, dtype=np.int64)
    sequence_ids = np.asarray(sequence_ids, dtype=np.int64)
    if sequence_ids.shape != (n_seq,) or (n_seq and sequence_ids.min() < 0) or \
            np.unique(sequence_ids).size != n_seq:
        raise ValueError(f"sequence_ids must be {n_seq} unique non-negative integers")
    keep = np.zeros(ids.shape, dtype=bool)
    keep[:, :-1] = valid[:, :-1] & valid[:, 1:]
    if not keep.any():
        raise ValueError("no token has a next token: nothing to export")
    seq, col = np.nonzero(keep)          # row-major: sequence order, then column order
    positions = (np.cumsum(valid, axis=1) - 1)[seq, col]
    return {"keep": keep, "labels": ids[seq, col + 1], "sequence_ids": sequence_ids[seq],
            "sample_ids": sequence_ids[seq] * n_col + col,
            "positions": positions.astype(np.int32)}


def _prepare_tokens(f, path, tokens):
    """Create /sequence_ids and /positions, or check they match."""
    for name, dtype in (("sequence_ids", np.int64), ("positions", np.int32)):
        data = tokens[name].astype(dtype)
        if name not in f:
            f.create_dataset(name, data=data)
        elif not np.array_equal(f[name][()], data):
            raise ValueError(f"{path}: /{name} differs from this export's {name}")


def _logits_of(output):
    """The logits tensor of a model's output."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    elif not isinstance(output, torch.Tensor) and hasattr(output, "logits"):
        output = output.logits
    if not isinstance(output, torch.Tensor) or output.ndim != 3:
        raise ValueError("the model must return logits of shape [B, T, V]")
    return output


def _write(group, model, input_ids, mask, tokens, dense, topk, layers, selects, head,
           head_input, dtype, batch_size):
    """Run the model batch by batch and stream the kept rows into ``group``."""
    n_total = tokens["labels"].shape[0]
    keep = tokens["keep"]
    values = _Writer(group, n_total, dtype)
    exact = _Writer(group, n_total, np.float32)
    indices = _Writer(group, n_total, np.int32)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    row = 0
    try:
        with torch.no_grad():
            for s0 in range(0, input_ids.shape[0], batch_size):
                x = input_ids[s0:s0 + batch_size].to(device)
                m = None if mask is None else mask[s0:s0 + batch_size].to(device)
                out = _forward(model, x, m, layers, selects, head, head_input)
                sel = torch.from_numpy(keep[s0:s0 + batch_size]).to(device)
                n = int(sel.sum())
                if n == 0:
                    continue
                z = out.pop("logits")[sel]
                if z.shape[-1] < 2 or (topk and topk > z.shape[-1]):
                    raise ValueError(f"topk={topk} is more than the {z.shape[-1]} classes")
                if dense:
                    values.write("logits", z.float().cpu().numpy(), row, None)
                if topk:
                    v, i = torch.topk(z.float(), int(topk), dim=1)
                    values.write("logits_topk/values", v.cpu().numpy(), row, None)
                    indices.write("logits_topk/indices", i.cpu().numpy(), row, None)
                    lse = torch.logsumexp(z.double(), dim=1)
                    exact.write("logits_topk/logsumexp", lse.cpu().numpy(), row, None)
                for name, h in out.items():
                    values.write(f"features/{name}", h[sel].float().cpu().numpy(), row, None)
                row += n
    finally:
        model.train(was_training)
    for depth, name in enumerate(layers):
        group["features"][name].attrs["depth"] = depth
    if head is not None:
        hg = group.create_group("head")
        hg.attrs["input"] = head_input
        hg.create_dataset("weight", data=head.weight.detach().cpu().numpy().astype(np.float32))
        bias = head.bias if head.bias is not None else torch.zeros(head.out_features)
        hg.create_dataset("bias", data=bias.detach().cpu().numpy().astype(np.float32))


def _forward(model, x, mask, layers, selects, head, head_input):
    """One batch: the logits [B, T, V] and the hooked hidden states [B, T, D]."""
    feats, head_io = {}, {}

    def capture(name):
        def hook(module, args, output):
            if isinstance(output, (tuple, list)) and output:
                output = output[0]
            if name in selects:
                output = selects[name](output)
            if not isinstance(output, torch.Tensor) or output.ndim != 3 or \
                    tuple(output.shape[:2]) != tuple(x.shape):
                raise ValueError(f"layer {name!r}: expected a hidden state [B, T, D] with "
                                 f"[B, T] = {list(x.shape)}")
            if name in feats:
                raise ValueError(f"layer {name!r} ran twice in one forward pass")
            feats[name] = output.clone()
        return hook

    def capture_head(module, args, output):
        head_io["input"], head_io["output"] = args[0], output

    handles = [module.register_forward_hook(capture(name)) for name, module in layers.items()]
    if head is not None:
        handles.append(head.register_forward_hook(capture_head))
    try:
        logits = _logits_of(model(x) if mask is None else model(x, attention_mask=mask))
    finally:
        for handle in handles:
            handle.remove()
    if tuple(logits.shape[:2]) != tuple(x.shape):
        raise ValueError(f"the model returned {list(logits.shape)}, expected [B, T, V] with "
                         f"[B, T] = {list(x.shape)}")
    missing = [name for name in layers if name not in feats]
    if missing:
        raise ValueError(f"layers {missing} did not run in the forward pass")
    if head is not None:
        v, d = logits.shape[-1], feats[head_input].shape[-1]
        io = head_io and {"input": head_io["input"].reshape(-1, d),
                          "output": head_io["output"].reshape(-1, v)}
        _check_head(logits.reshape(-1, v), io, feats[head_input].reshape(-1, d), head_input)
    return {"logits": logits, **feats}
