#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A teacher and a student exported through a shuffled DataLoader give the
same kdlens results as through an unshuffled one: kl, split, cka, layers and
dims agree to 1e-12 relative.  A third export writes the student's rows in a
shuffled order with explicit ids, so kdlens itself must pair the rows by
/sample_ids.  Skipped (77) without python3-torch."""
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import kdltest as kt  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
N, C, STEPS, RTOL = 96, 4, 40, 1e-12
EXPORTS = {}   # "shuffled" / "plain" / "rows-shuffled" -> directory with teacher.h5, student.h5


def setup():
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    sys.path.insert(0, os.path.join(ROOT, "datasets"))
    import kdl_export

    class Net(nn.Module):
        def __init__(self, channels, width):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU())
            self.penult = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                        nn.Linear(4 * channels, width), nn.ReLU())
            self.head = nn.Linear(width, C)

        def forward(self, x):
            return self.head(self.penult(self.enc(x)))

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(N) % C
    prototypes = torch.randn(C, 1, 6, 6, generator=g)
    x = prototypes[labels] + 0.8 * torch.randn(N, 1, 6, 6, generator=g)

    models = {}
    for role, channels, width, seed in (("teacher", 6, 12, 1), ("student", 3, 5, 2)):
        torch.manual_seed(seed)
        model = Net(channels, width)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
        snapshots = {0: {k: v.clone() for k, v in model.state_dict().items()}}
        for _ in range(STEPS):
            loss = F.cross_entropy(model(x), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        snapshots[STEPS] = {k: v.clone() for k, v in model.state_dict().items()}
        models[role] = (model, snapshots)

    dataset = TensorDataset(x, labels)
    shuffled = DataLoader(dataset, batch_size=16, shuffle=True,
                          generator=torch.Generator().manual_seed(5))
    plain = DataLoader(dataset, batch_size=16)
    order = torch.randperm(N, generator=g).numpy()
    rows_shuffled = [(x[order[i:i + 16]], labels[order[i:i + 16]]) for i in range(0, N, 16)]
    inputs = {"shuffled": {"teacher": (shuffled, labels, None), "student": (shuffled, labels, None)},
              "plain": {"teacher": (plain, labels, None), "student": (plain, labels, None)},
              "rows-shuffled": {"teacher": (plain, labels, None),
                                "student": (rows_shuffled, labels[order], order)}}
    for kind, roles in inputs.items():
        out = kt.tmpdir()
        EXPORTS[kind] = out
        for role, (data, y, ids) in roles.items():
            model, snapshots = models[role]
            for name, step in (("init", 0), ("final", STEPS)):
                model.load_state_dict(snapshots[step])
                kdl_export.export_checkpoint(
                    os.path.join(out, f"{role}.h5"), model, data, y, ids,
                    {"enc": model.enc, "penult": model.penult}, model.head, "penult", name,
                    step=step, role=role, model_name=role, dtype="float32",
                    grad_layers=["penult"])


COMMANDS = {
    "kl": lambda d: ["kl", "-t", d["t"], "-s", d["s"], "-c", "all", "-T", "1,4"],
    "split": lambda d: ["split", "-t", d["t"], "-s", d["s"], "-c", "all", "-T", "1,4"],
    "cka": lambda d: ["cka", d["t"], d["s"], "-c", "all", "--bootstrap", "20"],
    "layers": lambda d: ["layers", "-t", d["t"], "-s", d["s"], "-k", "1", "-c", "all"],
    "dims": lambda d: ["dims", "-t", d["t"], "-s", d["s"], "-c", "all"],
}


def results(kind, command):
    """The result tables of one command on one export, its directory replaced by DIR."""
    d = EXPORTS[kind]
    files = {"t": os.path.join(d, "teacher.h5"), "s": os.path.join(d, "student.h5")}
    doc = kt.run_json(*COMMANDS[command](files))
    assert doc["results"], f"{command}: no results"
    return strip(doc["results"], d)


def strip(value, d):
    if isinstance(value, str):
        return value.replace(d, "DIR")
    if isinstance(value, list):
        return [strip(v, d) for v in value]
    if isinstance(value, dict):
        return {k: strip(v, d) for k, v in value.items()}
    return value


def assert_same(a, b, where):
    """Equal structure and strings; numbers within RTOL relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), f"{where}: {a!r} vs {b!r}"
        else:
            assert abs(a - b) <= RTOL * max(abs(a), abs(b)), f"{where}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def check(kind, command):
    assert_same(results("plain", command), results(kind, command), f"{command} ({kind})")


def test_exports_hold_the_same_ids():
    import h5py
    for kind, d in EXPORTS.items():
        for role in ("teacher", "student"):
            with h5py.File(os.path.join(d, f"{role}.h5")) as f:
                ids = np.sort(f["sample_ids"][()])
                assert ids.tolist() == list(range(N)), f"{kind} {role}: {ids}"


def test_kl():
    check("shuffled", "kl")
    check("rows-shuffled", "kl")


def test_split():
    check("shuffled", "split")
    check("rows-shuffled", "split")


def test_cka():
    check("shuffled", "cka")
    check("rows-shuffled", "cka")


def test_layers():
    check("shuffled", "layers")
    check("rows-shuffled", "layers")


def test_dims():
    check("shuffled", "dims")
    check("rows-shuffled", "dims")


if __name__ == "__main__":
    try:
        import torch  # noqa: F401
    except ImportError:
        print("python3-torch is not installed: skipped")
        sys.exit(77)
    setup()
    kt.main(globals())
