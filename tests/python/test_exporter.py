"""Tests of kdlens.export; run as ``/usr/bin/python3 tests/python/test_exporter.py``.

Plain script, no pytest: every ``test_*`` function runs in a fresh temporary
directory, and the script prints ``N passed, M failed`` and exits non-zero on
any failure.  The reference values are computed independently here: one
sample at a time, with our own hooks and autograd.
"""

import os
import subprocess
import sys
import tempfile
import traceback
import warnings

import h5py
import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, IterableDataset, Subset, TensorDataset
except ImportError:  # CI installs python3-torch; elsewhere this test is skipped
    print("python3-torch is not installed: skipped")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from kdlens import export as kdl_export  # noqa: E402

N, C = 9, 4
SAMPLE_IDS = np.arange(100, 100 + N)


class Tiny(nn.Module):
    """conv-BN-ReLU [3, 4, 4] -> maxpool-flatten-linear-ReLU [6] -> head [4]."""

    def __init__(self, inplace=False):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3),
                                 nn.ReLU(inplace=inplace))
        self.penult = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 6), nn.ReLU())
        self.head = nn.Linear(6, C)

    def forward(self, x):
        return self.head(self.penult(self.enc(x)))


def make_model(seed=0, **kwargs):
    """A Tiny model with random weights and non-trivial BatchNorm running statistics,
    left in train mode (so exporting in train mode would give different values)."""
    torch.manual_seed(seed)
    model = Tiny(**kwargs)
    bn = model.enc[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return model.train()


def make_data(seed=1):
    """Inputs [N, 1, 4, 4] and labels [N] that cover every class."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 1, 4, 4, generator=g)
    labels = np.array([3, 0, 2, 1, 1, 3, 0, 2, 3])
    return x, labels


def layers_of(model):
    return {"enc.0": model.enc, "penult": model.penult}


def export(path, model, x, labels, checkpoint="final", **kwargs):
    """export_checkpoint with this file's defaults, overridable by keyword."""
    args = dict(layers=layers_of(model), head=model.head, head_input="penult",
                checkpoint=checkpoint, step=7, epoch=2, role="student", model_name="tiny",
                dtype="float32", grad_layers=["enc.0", "penult"], batch_size=4,
                sample_ids=SAMPLE_IDS)
    args.update(kwargs)
    kdl_export.export_checkpoint(path, model, x, labels, **args)


def reference(model, x_i, y_i):
    """Logits, features and CE gradients of ONE sample, computed independently."""
    model.eval()
    feats = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, name=name: feats.__setitem__(name, out))
             for name, m in layers_of(model).items()]
    z = model(x_i.unsqueeze(0))
    for h in hooks:
        h.remove()
    loss = F.cross_entropy(z, torch.tensor([int(y_i)]))
    gz, g_enc, g_pen = torch.autograd.grad(loss, [z, feats["enc.0"], feats["penult"]])
    model.train()
    out = {"logits": z, "gradients/logits": gz, "features/enc.0": feats["enc.0"],
           "features/penult": feats["penult"], "gradients/features/enc.0": g_enc,
           "gradients/features/penult": g_pen}
    return {k: v.detach()[0].numpy() for k, v in out.items()}


def assert_close(actual, expected, what, rtol=1e-5, atol=1e-6):
    if not np.allclose(actual, expected, rtol=rtol, atol=atol):
        err = np.max(np.abs(np.asarray(actual, np.float64) - expected))
        raise AssertionError(f"{what}: max abs error {err:.3g}")


def assert_raises(exc, fn, match):
    try:
        fn()
    except exc as e:
        if match not in str(e):
            raise AssertionError(f"expected {match!r} in the message, got {e!r}")
        return
    raise AssertionError(f"{exc.__name__} was not raised ({match!r})")


def test_per_sample_gradients_match_one_sample_autograd(tmp):
    model, (x, labels) = make_model(), make_data()
    path = os.path.join(tmp, "a.h5")
    export(path, model, x, labels)
    with h5py.File(path) as f:
        ck = f["checkpoints/final"]
        for i in (0, 3, 4, 8):            # across batches of 4, including the last one
            ref = reference(model, x[i], labels[i])
            for key, value in ref.items():
                assert_close(ck[key][i], value, f"sample {i} {key}")
        g = ck["gradients/logits"][()]
        assert_close(g.sum(axis=1), np.zeros(N), "CE logit gradients sum to zero")


def test_export_leaves_model_unchanged(tmp):
    model, (x, labels) = make_model(), make_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export(os.path.join(tmp, "a.h5"), model, x, labels)
    assert model.training, "train mode was not restored"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    assert all(p.grad is None for p in model.parameters()), "parameter .grad was written"


def test_frozen_model_and_iterable_inputs(tmp):
    model, (x, labels) = make_model(), make_data()
    a, b = os.path.join(tmp, "a.h5"), os.path.join(tmp, "b.h5")
    export(a, model, x, labels)
    for p in model.parameters():
        p.requires_grad_(False)
    loader = [(x[i:i + 2], torch.as_tensor(labels[i:i + 2])) for i in range(0, N, 2)]
    export(b, model, loader, labels)
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for key in ("logits", "gradients/logits", "gradients/features/enc.0"):
            assert_close(fb["checkpoints/final"][key][()], fa["checkpoints/final"][key][()], key)


def test_head_reproduces_logits(tmp):
    model, (x, labels) = make_model(), make_data()
    path = os.path.join(tmp, "a.h5")
    export(path, model, x, labels)
    with h5py.File(path) as f:
        ck = f["checkpoints/final"]
        h = ck["features"][ck["head"].attrs["input"]][()]
        z = h @ ck["head/weight"][()].T + ck["head/bias"][()]
        assert_close(z, ck["logits"][()], "W h + b")


def test_schema(tmp):
    model, (x, labels) = make_model(), make_data()
    path = os.path.join(tmp, "a.h5")
    export(path, model, x, labels, dtype="float16", grad_layers=["penult"])
    with h5py.File(path) as f:
        assert f.attrs["kdlens_format"] == 1 and isinstance(f.attrs["kdlens_format"], np.integer)
        assert f.attrs["role"] == "student" and f.attrs["model"] == "tiny"
        assert f["labels"].dtype.kind in "iu" and list(f["labels"][()]) == list(labels)
        assert f["sample_ids"].dtype == np.int64 and list(f["sample_ids"][()]) == list(SAMPLE_IDS)
        ck = f["checkpoints/final"]
        assert ck.attrs["step"] == 7 and ck.attrs["step"].dtype == np.int64
        assert ck.attrs["epoch"] == 2
        assert [ck["features"][n].attrs["depth"] for n in ("enc.0", "penult")] == [0, 1]
        assert ck["head"].attrs["input"] == "penult"
        assert ck["gradients"].attrs["loss"] == "cross_entropy"
        assert ck["gradients"].attrs["tau"] == 1.0
        assert list(ck["gradients/features"]) == ["penult"]
        shapes = {"logits": (N, C), "features/enc.0": (N, 3, 4, 4), "features/penult": (N, 6),
                  "gradients/logits": (N, C), "gradients/features/penult": (N, 6)}
        for key, shape in shapes.items():
            ds = ck[key]
            assert ds.shape == shape, f"{key}: shape {ds.shape}"
            assert ds.dtype == np.float16, f"{key}: dtype {ds.dtype}"
            assert ds.chunks is not None and ds.chunks[1:] == shape[1:], f"{key}: chunks {ds.chunks}"
            assert ds.compression == "gzip", f"{key}: compression {ds.compression}"
        assert ck["head/weight"].shape == (C, 6) and ck["head/weight"].dtype == np.float32
        assert ck["head/bias"].shape == (C,) and ck["head/bias"].dtype == np.float32


def test_append_and_refuse_duplicates(tmp):
    model, (x, labels) = make_model(), make_data()
    path = os.path.join(tmp, "a.h5")
    export(path, model, x, labels, checkpoint="init", step=0, epoch=None)
    with torch.no_grad():
        model.head.bias.add_(1.0)
    export(path, model, x, labels, checkpoint="final")
    assert_raises(ValueError, lambda: export(path, model, x, labels, checkpoint="init"),
                  "checkpoint 'init' already exists; choose another name")
    assert_raises(ValueError, lambda: export(path, model, x, labels, checkpoint="other",
                                             role="teacher"), "role")
    assert_raises(ValueError, lambda: export(path, model, x, labels[::-1].copy(),
                                             checkpoint="other"), "labels")
    with h5py.File(path) as f:
        assert sorted(f["checkpoints"]) == ["final", "init"]
        assert "epoch" not in f["checkpoints/init"].attrs
        assert f["checkpoints/init"].attrs["step"] == 0
        shift = f["checkpoints/final/logits"][()] - f["checkpoints/init/logits"][()]
        assert_close(shift, np.ones((N, C)), "init kept, final appended")


def test_pooling_keeps_global_average(tmp):
    model, (x, labels) = make_model(), make_data()
    full, pooled = os.path.join(tmp, "full.h5"), os.path.join(tmp, "pooled.h5")
    export(full, model, x, labels)
    export(pooled, model, x, labels, pool=(2, 2))
    with h5py.File(full) as ff, h5py.File(pooled) as fp:
        for key in ("features/enc.0", "gradients/features/enc.0"):
            a, b = ff["checkpoints/final"][key], fp["checkpoints/final"][key]
            assert b.shape == (N, 3, 2, 2), f"{key}: pooled shape {b.shape}"
            assert b.attrs["pool"] == "adaptive_avg" and list(b.attrs["pooled_from"]) == [4, 4]
            assert_close(b[()].mean(axis=(2, 3)), a[()].mean(axis=(2, 3)), f"{key} global average")
            assert_close(b[()][:, :, 0, 1], a[()][:, :, :2, 2:].mean(axis=(2, 3)), f"{key} block")
        pen = fp["checkpoints/final/features/penult"]
        assert pen.shape == (N, 6) and "pool" not in pen.attrs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(os.path.join(tmp, "uneven.h5"), model, x, labels, pool=(3, 3))
    assert any("not preserved" in str(w.message) for w in caught), "no warning for uneven pool"


def test_bad_models_are_refused(tmp):
    model, (x, labels) = make_model(), make_data()
    path = os.path.join(tmp, "a.h5")
    assert_raises(ValueError, lambda: export(path, model, x, labels, head_input="enc.0"),
                  "head's input")
    inplace = make_model(inplace=True)
    in_place_layers = {"enc.bn": inplace.enc[1], "penult": inplace.penult}
    assert_raises(ValueError, lambda: export(path, inplace, x, labels, layers=in_place_layers,
                                             grad_layers=["penult"]), "in place")
    with torch.no_grad():
        model.head.weight.mul_(1e7)
    assert_raises(ValueError, lambda: export(path, model, x, labels, dtype="float16"), "overflow")
    with h5py.File(path) as f:
        assert len(f["checkpoints"]) == 0, "a failed export left a checkpoint behind"


class TinyViT(nn.Module):
    """ViT-like: 2x2 patches of [1, 4, 4] -> tokens [B, 5, D] with a class token ->
    one attention + MLP block -> LayerNorm -> head on the class token t[:, 0]."""

    def __init__(self, d=6):
        super().__init__()
        self.embed = nn.Linear(4, d)
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, 5, d))
        self.qkv = nn.Linear(d, 3 * d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.block = nn.Identity()   # marks the block's output [B, T, D] for hooks
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, C)

    def forward(self, x):
        b = x.shape[0]
        patches = x.unfold(2, 2, 2).unfold(3, 2, 2).reshape(b, 4, 4)
        t = torch.cat([self.cls.expand(b, -1, -1), self.embed(patches)], 1) + self.pos
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        t = self.block(t + a @ v + self.mlp(t + a @ v))
        return self.head(self.norm(t)[:, 0])


def cls_token(t):
    return t[:, 0]


def export_vit(path, model, x, labels, role="student", **kwargs):
    args = dict(layers={"block": (model.block, cls_token), "cls": (model.norm, cls_token)},
                head=model.head, head_input="cls", checkpoint="final", step=1, role=role,
                model_name="vit", dtype="float32", batch_size=4, sample_ids=SAMPLE_IDS,
                grad_layers=["block", "cls"])
    args.update(kwargs)
    kdl_export.export_checkpoint(path, model, x, labels, **args)


def kdlens_binary():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get("KDLENS") or os.path.join(here, "..", "..", "build", "analysis",
                                                    "kdlens")


def test_vit_head_on_a_slice_of_the_block_output(tmp):
    x, labels = make_data()
    torch.manual_seed(5)
    student, teacher = TinyViT().train(), TinyViT().train()
    path, tpath = os.path.join(tmp, "s.h5"), os.path.join(tmp, "t.h5")
    export_vit(path, student, x, labels)
    export_vit(tpath, teacher, x, labels, role="teacher")

    student.eval()
    inner = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: inner.__setitem__(n, out))
             for n, m in (("block", student.block), ("norm", student.norm))]
    z = student(x)
    for h in hooks:
        h.remove()
    loss = F.cross_entropy(z, torch.as_tensor(labels), reduction="sum")
    g_block, g_norm = torch.autograd.grad(loss, [inner["block"], inner["norm"]])
    z, inner = z.detach(), {k: v.detach() for k, v in inner.items()}
    assert inner["block"].shape == (N, 5, 6), inner["block"].shape
    with h5py.File(path) as f:
        ck = f["checkpoints/final"]
        assert ck["features/cls"].shape == (N, 6), ck["features/cls"].shape
        assert_close(ck["features/cls"][()], inner["norm"][:, 0].numpy(), "features/cls")
        assert_close(ck["features/block"][()], inner["block"][:, 0].numpy(), "features/block")
        assert_close(ck["logits"][()], z.numpy(), "logits")
        assert ck["head"].attrs["input"] == "cls"
        w, b = ck["head/weight"][()], ck["head/bias"][()]
        assert_close(ck["features/cls"][()] @ w.T + b, z.numpy(), "head(cls) = logits")
        assert list(ck["features"]) == ["block", "cls"]
        assert_close(ck["gradients/features/cls"][()], g_norm[:, 0].numpy(), "grad cls")
        assert_close(ck["gradients/features/block"][()], g_block[:, 0].numpy(), "grad block")
        assert_close(ck["gradients/features/cls"][()], ck["gradients/logits"][()] @ w,
                     "grad cls = W^T grad logits")

    kdlens = kdlens_binary()
    for args in (["inspect", path], ["kl", "-t", tpath, "-s", path, "-c", "all"]):
        run = subprocess.run([kdlens] + args, capture_output=True, text=True)
        assert run.returncode == 0, f"kdlens {' '.join(args)}: {run.returncode} {run.stderr}"
        assert run.stdout.strip(), f"kdlens {args[0]}: no output"
    assert "cls" in subprocess.run([kdlens, "inspect", path], capture_output=True,
                                   text=True).stdout


def test_vit_wrong_slice_and_computing_selects_are_refused(tmp):
    x, labels = make_data()
    torch.manual_seed(5)
    model = TinyViT()
    path = os.path.join(tmp, "v.h5")

    def refused(select, match):
        layers = {"cls": model.norm if select is None else (model.norm, select)}
        assert_raises(ValueError, lambda: export_vit(path, model, x, labels, layers=layers,
                                                     grad_layers=[]), match)

    refused(lambda t: t[:, 1], "head's input")        # the wrong token
    refused(None, "head's input")                      # the whole [B, T, D] output
    refused(lambda t: t.mean(1), "only pick entries")  # computes, does not pick
    refused(lambda t: t[0], "batch dimension")
    with h5py.File(path) as f:
        assert len(f["checkpoints"]) == 0, "a failed export left a checkpoint behind"


def loader(x, labels, shuffle, dataset=None, **kwargs):
    """A DataLoader yielding (x, y) batches of 4 over ``dataset`` (default: all of x)."""
    if dataset is None:
        dataset = TensorDataset(x, torch.as_tensor(labels))
    return DataLoader(dataset, batch_size=4, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(3), **kwargs)


def assert_rows_are(path, model, x, labels, ids, sample_ids):
    """/sample_ids is ``ids``; row r holds sample x[sample_ids[r]] with its label."""
    with h5py.File(path) as f:
        assert f["sample_ids"].dtype == np.int64, f["sample_ids"].dtype
        assert list(f["sample_ids"][()]) == list(ids), f"sample_ids {list(f['sample_ids'][()])}"
        assert list(f["labels"][()]) == list(labels[sample_ids]), "labels"
        ck = f["checkpoints/final"]
        for row, i in enumerate(sample_ids):
            for key, value in reference(model, x[i], labels[i]).items():
                assert_close(ck[key][row], value, f"row {row} (sample {i}) {key}")


def test_shuffled_and_plain_loaders_write_every_row_with_its_id(tmp):
    x, labels = make_data()
    for role, seed in (("teacher", 0), ("student", 5)):
        model = make_model(seed)
        for shuffle in (True, False):
            path = os.path.join(tmp, f"{role}-{shuffle}.h5")
            export(path, model, loader(x, labels, shuffle), labels, sample_ids=None, role=role)
            assert_rows_are(path, model, x, labels, range(N), range(N))


def test_loader_with_given_ids_writes_them_in_ascending_order(tmp):
    model, (x, labels) = make_model(), make_data()
    ids = SAMPLE_IDS[::-1]               # ids[i] names dataset[i]: 108, 107, ..., 100
    path = os.path.join(tmp, "a.h5")
    export(path, model, loader(x, labels, shuffle=True), labels, sample_ids=ids)
    assert_rows_are(path, model, x, labels, SAMPLE_IDS, np.arange(N)[::-1])


def test_shuffled_unshuffled_and_tensor_exports_are_byte_identical(tmp):
    model, (x, labels) = make_model(), make_data()
    paths = [os.path.join(tmp, f"{name}.h5") for name in ("shuffled", "plain", "tensor")]
    for path, inputs in zip(paths, (loader(x, labels, True), loader(x, labels, False), x)):
        export(path, model, inputs, labels, sample_ids=None, checkpoint="init")
        export(path, model, inputs, labels, sample_ids=None, checkpoint="final")
    contents = [open(path, "rb").read() for path in paths]
    assert contents[0] == contents[1] == contents[2], "the three exports differ"


def test_subset_and_sampler_ids_name_samples_of_the_underlying_dataset(tmp):
    model, (x, labels) = make_model(), make_data()
    full = TensorDataset(x, torch.as_tensor(labels))
    subset = Subset(full, [7, 2, 5, 0, 8])
    path = os.path.join(tmp, "subset.h5")
    export(path, model, loader(x, None, True, subset), labels[subset.indices], sample_ids=None)
    assert_rows_are(path, model, x, labels, [0, 2, 5, 7, 8], [0, 2, 5, 7, 8])
    nested = Subset(subset, [4, 1, 3])   # samples 8, 2, 0
    path = os.path.join(tmp, "nested.h5")
    export(path, model, loader(x, None, True, nested, num_workers=1),
           labels[[8, 2, 0]], sample_ids=None)
    assert_rows_are(path, model, x, labels, [0, 2, 8], [0, 2, 8])
    sampler = torch.utils.data.SubsetRandomSampler([6, 1, 3])
    path = os.path.join(tmp, "sampler.h5")
    export(path, model, DataLoader(full, batch_size=2, sampler=sampler), labels, sample_ids=None)
    assert_rows_are(path, model, x, labels, [1, 3, 6], [1, 3, 6])


def test_sample_ids_none_numbers_the_rows_of_a_tensor(tmp):
    model, (x, labels) = make_model(), make_data()
    path = os.path.join(tmp, "a.h5")
    export(path, model, x, labels, sample_ids=None)
    assert_rows_are(path, model, x, labels, range(N), range(N))


class Stream(IterableDataset):
    """(x, y) samples in a fixed shuffled order the exporter cannot see."""

    def __init__(self, x, labels, order):
        self.x, self.labels, self.order = x, labels, order

    def __iter__(self):
        return iter([(self.x[i], int(self.labels[i])) for i in self.order])


def test_unknown_order_needs_ids_and_given_ids_are_used(tmp):
    model, (x, labels) = make_model(), make_data()
    order = [4, 0, 7, 2, 8, 1, 3, 6, 5]
    stream = DataLoader(Stream(x, labels, order), batch_size=4)
    batches = ((x[order[i:i + 4]], torch.as_tensor(labels[order[i:i + 4]])) for i in range(0, N, 4))
    for inputs in (stream, batches):
        assert_raises(ValueError, lambda: export(os.path.join(tmp, "a.h5"), model, inputs,
                                                 labels[order], sample_ids=None),
                      "pass sample_ids")
    path = os.path.join(tmp, "b.h5")
    export(path, model, stream, labels[order], sample_ids=order)
    assert_rows_are(path, model, x, labels, order, order)


def test_disagreeing_labels_and_repeated_samples_are_refused(tmp):
    model, (x, labels) = make_model(), make_data()
    path = os.path.join(tmp, "a.h5")
    shuffled = loader(x, labels, True)
    seen = np.concatenate([y.numpy() for _, y in loader(x, labels, True)])  # one shuffled order
    assert_raises(ValueError, lambda: export(path, model, shuffled, seen, sample_ids=None,
                                             checkpoint="a"), "the batch's label")
    assert_raises(ValueError, lambda: export(path, model, shuffled, labels[:5], sample_ids=None,
                                             checkpoint="b"), "loader.dataset")
    repeated = np.zeros(N, dtype=np.int64)
    assert_raises(ValueError, lambda: export(path, model, shuffled, labels, sample_ids=repeated,
                                             checkpoint="c"), "sample id 0 occurs more than once")
    assert_raises(ValueError, lambda: export(path, model, x, labels, sample_ids=repeated,
                                             checkpoint="d"), "occurs more than once")
    twice = DataLoader(TensorDataset(x, torch.as_tensor(labels)), batch_size=4,
                       sampler=torch.utils.data.RandomSampler(x, replacement=True, num_samples=20))
    assert_raises(ValueError, lambda: export(path, model, twice, labels, sample_ids=None,
                                             checkpoint="e"), "more than once")
    if os.path.exists(path):
        with h5py.File(path) as f:
            assert len(f.get("checkpoints", {})) == 0, "a refused export left a checkpoint"


def main():
    tests = [(name, fn) for name, fn in globals().items() if name.startswith("test_")]
    torch.set_num_threads(1)
    passed = failed = 0
    for name, fn in tests:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                fn(tmp)
            except Exception:
                failed += 1
                print(f"FAIL {name}")
                traceback.print_exc()
            else:
                passed += 1
                print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
