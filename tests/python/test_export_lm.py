"""Tests of kdlens.export_lm; run as ``/usr/bin/python3 tests/python/test_export_lm.py``.

A tiny GPT-style teacher and student (datasets/lm_example.py's TinyGPT, word
tokens of the licences in /usr/share/common-licenses, no download) are trained
for about a minute; their exports are compared, in float64, with the models'
outputs computed here one sequence at a time without padding, and read by
``kdlens inspect`` and ``kdlens kl --topk``.  Prints ``N passed, M failed``.
"""

import csv
import io
import os
import subprocess
import sys
import tempfile
import traceback

import h5py
import numpy as np

try:
    import torch
except ImportError:  # CI installs python3-torch; elsewhere this test is skipped
    print("python3-torch is not installed: skipped")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "datasets"))
import lm_example as lm  # noqa: E402
from kdlens import export_lm  # noqa: E402  (lm_example put python/ on the path)

PAD = 0
LENGTHS = [33, 20, 5, 1, 33, 12, 2, 33]   # 1: no row; 2: one row
TOPK = 16
MODELS = {}


def models():
    """The teacher and student, trained once (about a minute on a loaded CPU)."""
    if not MODELS:
        torch.set_num_threads(2)
        ids, _ = lm.corpus()
        data, seqs = lm.split(ids)
        torch.manual_seed(1)
        teacher = lm.train(lm.TinyGPT(d=64, n_blocks=2, heads=4), data, steps=300, seed=1)
        torch.manual_seed(2)
        student = lm.train(lm.TinyGPT(d=32, n_blocks=1, heads=2), data, steps=200, seed=2,
                           teacher=teacher)
        padded = seqs[:len(LENGTHS)].clone()
        for s, n in enumerate(LENGTHS):
            padded[s, n:] = PAD
        MODELS.update(teacher=teacher, student=student, seqs=padded)
    return MODELS["teacher"], MODELS["student"], MODELS["seqs"]


def kdlens_binary():
    return os.environ.get("KDLENS") or os.path.join(HERE, "..", "..", "build", "analysis",
                                                    "kdlens")


def reference(model, seqs):
    """Per kept row, in float64 and one unpadded sequence at a time: the logits, the
    hidden state of every block, labels, sequence ids, positions and sample ids."""
    m = type(model)(vocab=lm.VOCAB, d=model.head.in_features, n_blocks=len(model.blocks),
                    heads=model.blocks[0].attn.num_heads)
    m.load_state_dict(model.state_dict())
    m = m.double().eval()
    out = {k: [] for k in ("logits", "blocks", "labels", "seq", "pos", "ids")}
    hidden = []
    hooks = [b.register_forward_hook(lambda mod, a, o: hidden.append(o)) for b in m.blocks]
    with torch.no_grad():
        for s, n in enumerate(LENGTHS):
            if n < 2:
                continue
            hidden.clear()
            z = m(seqs[s:s + 1, :n])[0, :-1]
            out["logits"].append(z.numpy())
            out["blocks"].append(np.stack([h[0, :-1].numpy() for h in hidden]))
            out["labels"] += seqs[s, 1:n].tolist()
            out["seq"] += [s] * (n - 1)
            out["pos"] += list(range(n - 1))
            out["ids"] += [s * seqs.shape[1] + t for t in range(n - 1)]
    for h in hooks:
        h.remove()
    return {k: np.concatenate(v, axis=1 if k == "blocks" else 0) if k in ("logits", "blocks")
            else np.array(v) for k, v in out.items()}


def export(path, model, seqs, **kwargs):
    layers = {f"blocks.{i}": b for i, b in enumerate(model.blocks)}
    layers["ln"] = model.ln
    args = dict(pad_id=PAD, role="teacher", dtype="float32", batch_size=3, layers=layers,
                head=model.head, head_input="ln")
    args.update(kwargs)
    export_lm.export_lm_checkpoint(path, model, seqs, "final", 300, **args)


def test_teacher_dense_topk_equal_the_model():
    teacher, _, seqs = models()
    export("t.h5", teacher, seqs, topk=TOPK)
    ref = reference(teacher, seqs)
    with h5py.File("t.h5") as f:
        g = f["checkpoints/final"]
        n = sum(max(n - 1, 0) for n in LENGTHS)
        assert f["labels"].shape == (n,), f"padding rows written: {f['labels'].shape} != {n}"
        assert np.array_equal(f["labels"][()], ref["labels"])
        assert np.array_equal(f["sequence_ids"][()], ref["seq"])
        assert np.array_equal(f["positions"][()], ref["pos"])
        assert f["positions"].dtype == np.int32 and f["sequence_ids"].dtype == np.int64
        assert np.array_equal(f["sample_ids"][()], ref["ids"])
        z = g["logits"][()].astype(np.float64)
        err = np.abs(z - ref["logits"]).max()
        assert err < 1e-4, f"dense logits differ from the model's by {err}"
        for i in range(len(teacher.blocks)):
            h = g[f"features/blocks.{i}"]
            assert h.attrs["depth"] == i
            err = np.abs(h[()].astype(np.float64) - ref["blocks"][i]).max()
            assert err < 1e-4, f"blocks.{i} differs from the model's hidden state by {err}"
        w, b = teacher.head.weight.detach().numpy(), teacher.head.bias.detach().numpy()
        assert g["head"].attrs["input"] == "ln"
        assert np.array_equal(g["head/weight"][()], w) and np.array_equal(g["head/bias"][()], b)
        ix = g["logits_topk/indices"][()]
        vals = g["logits_topk/values"][()].astype(np.float64)
        lse = g["logits_topk/logsumexp"][()].astype(np.float64)
    rows = np.arange(n)[:, None]
    assert ix.shape == (n, TOPK) and vals.shape == (n, TOPK)
    err = np.abs(vals - ref["logits"][rows, ix]).max()
    assert err < 1e-4, f"top-k values differ from the model's logits there by {err}"
    rest = ref["logits"].copy()
    rest[rows, ix] = -np.inf
    assert np.all(vals.min(axis=1) >= rest.max(axis=1) - 1e-4), "stored classes not the top k"
    assert np.all(np.diff(vals, axis=1) <= 0), "top-k values not in decreasing order"
    zmax = ref["logits"].max(axis=1)
    exact = zmax + np.log(np.exp(ref["logits"] - zmax[:, None]).sum(axis=1))
    err = np.abs(lse - exact).max()
    assert err < 1e-4, f"logsumexp differs by {err}"


def test_mask_and_pad_id_agree():
    teacher, _, seqs = models()
    mask = (seqs != PAD).long()
    none = dict(layers={}, head=None, head_input=None)
    export("a.h5", teacher, seqs, topk=4, dense=False, pad_id=None, attention_mask=mask, **none)
    export("b.h5", teacher, seqs, topk=4, dense=False, **none)
    with h5py.File("a.h5") as a, h5py.File("b.h5") as b:
        for key in ("labels", "sample_ids", "sequence_ids", "positions",
                    "checkpoints/final/logits_topk/indices"):
            assert np.array_equal(a[key][()], b[key][()]), key
        assert "logits" not in a["checkpoints/final"]


def test_refusals():
    teacher, _, seqs = models()
    for kwargs, words in ((dict(dense=False), "nothing to write"),
                          (dict(topk=lm.VOCAB + 1), "more than"),
                          (dict(sequence_ids=[0] * len(LENGTHS)), "unique")):
        try:
            export("r.h5", teacher, seqs, **kwargs)
        except ValueError as e:
            assert words in str(e), f"{kwargs}: {e}"
        else:
            raise AssertionError(f"{kwargs} was accepted")
    with h5py.File("r.h5", "a") as f:
        assert "final" not in f.get("checkpoints", {}), "a refused export left its checkpoint"


def test_kdlens_reads_the_dumps():
    teacher, student, seqs = models()
    export("t.h5", teacher, seqs, topk=TOPK)
    export("s.h5", student, seqs, role="student", dtype="float16")
    kdlens = kdlens_binary()
    for path in ("t.h5", "s.h5"):
        run = subprocess.run([kdlens, "inspect", path], capture_output=True, text=True)
        assert run.returncode == 0, f"inspect {path}: {run.returncode} {run.stderr}"
    run = subprocess.run([kdlens, "inspect", "t.h5"], capture_output=True, text=True)
    assert "logits_topk" in run.stdout, "inspect does not list logits_topk"
    run = subprocess.run([kdlens, "kl", "-t", "t.h5", "-s", "s.h5", "--topk", "1,4,16", "-T",
                          "1,2", "--format", "csv", "--table", "kl_topk"],
                         capture_output=True, text=True)
    assert run.returncode == 0, f"kl --topk: {run.returncode} {run.stderr}"
    rows = [r for r in csv.DictReader(io.StringIO(run.stdout)) if r.get("approximation")
            in ("topk_renorm", "topk_tail", "sampled", "hard")]
    assert rows, f"kl --topk printed no kl_topk rows:\n{run.stdout[:2000]}"


def main():
    passed = failed = 0
    for name, fn in sorted(globals().items()):
        if not name.startswith("test_") or not callable(fn):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                fn()
                passed += 1
                print(f"ok   {name}")
            except Exception:
                failed += 1
                print(f"FAIL {name}")
                traceback.print_exc()
            finally:
                os.chdir(cwd)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
