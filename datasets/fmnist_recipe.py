"""Train a teacher and three students on Fashion-MNIST and dump them for kdlens.

Models (every block's output is a feature layer; the last one feeds the head):

* ``teacher``        CNN, 3 conv blocks (32-64-128 channels), penultimate width 64, CE.
* ``student_ce``     small CNN, 2 conv blocks (8-16), penultimate width 32, CE.
* ``student_kd``     the same small CNN from the same initial weights and data
                     order, trained with KD: 0.1 * CE + 0.9 * tau^2 KL(p_t || p_s), tau = 4
                     (mdistiller's KD weights).
* ``student_narrow`` the small CNN with penultimate width 4 < C - 1 = 9, trained with KD.

Each model is dumped with :mod:`kdl_export` at checkpoints ``init`` (step 0),
``early`` (end of epoch 1), ``middle`` (end of epoch epochs // 2) and ``final``,
on the first ``--samples`` images of the test set.  Conv feature maps are
average-pooled to ``--pool`` x ``--pool`` (all maps are 16, 8 or 4 wide, so
pool sizes 1, 2 and 4 keep the global average exact; the default 1 stores the
global average that kdlens uses by default).  Gradients are stored for the
logits of every model and, for the teacher only, for the head's input layer
(kdlens's gradient sources use the teacher's feature gradient, not the
student's; leaving the students' out keeps the dumps small).

Everything is seeded and runs on the CPU with 2 threads.  At the end the test
accuracy of every model on the full 10,000-image test set, the wall time and the
command are written to PROVENANCE.md and provenance.json in the output directory.

Run from the repository root::

    /usr/bin/python3 datasets/fmnist_recipe.py --out datasets/example
    /usr/bin/python3 datasets/fmnist_recipe.py --out /tmp/fmnist-quick --quick
"""

import argparse
import gzip
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import kdl_export

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530          # Fashion-MNIST training-set pixel statistics
NUM_CLASSES = 10
TAU, CE_WEIGHT, KD_WEIGHT = 4.0, 0.1, 0.9
BATCH_SIZE = 128
LEARNING_RATE = 2e-3
QUICK_TRAIN_SIZE = 4000
QUICK_EPOCHS = 4


class ConvNet(nn.Module):
    """Conv blocks (conv3x3-BN-ReLU[-maxpool2]) -> flatten-linear-ReLU -> linear head.

    Feature layers are ``blocks.0`` .. ``blocks.{k-1}`` and ``penult``; the head
    is ``head`` and takes ``penult``'s output.
    """

    def __init__(self, channels, width, image_size=32, pool_after=None):
        """``pool_after``: indices of the blocks that end with the max-pool
        (default every block)."""
        super().__init__()
        pool_after = range(len(channels)) if pool_after is None else pool_after
        blocks, in_ch, side = [], 1, image_size
        for i, out_ch in enumerate(channels):
            mods = [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU()]
            if i in pool_after:
                mods.append(nn.MaxPool2d(2))
                side //= 2
            blocks.append(nn.Sequential(*mods))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.penult = nn.Sequential(nn.Flatten(), nn.Linear(in_ch * side * side, width),
                                    nn.ReLU())
        self.head = nn.Linear(width, NUM_CLASSES)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(self.penult(x))

    def feature_layers(self):
        """Name -> module of every feature layer, input to output."""
        layers = {f"blocks.{i}": block for i, block in enumerate(self.blocks)}
        layers["penult"] = self.penult
        return layers


MODELS = {
    # name: (role, channels, penultimate width, loss, init seed offset)
    "teacher": ("teacher", (32, 64, 128), 64, "ce", 0),
    "student_ce": ("student", (8, 16), 32, "ce", 1),
    "student_kd": ("student", (8, 16), 32, "kd", 1),
    "student_narrow": ("student", (8, 16), 4, "kd", 2),
}


def load_split(data_dir, split):
    """Images (uint8 [N, 28, 28]) and labels (int64 [N]) of 'train' or 't10k'."""
    with gzip.open(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{data_dir}: {split} has {images.shape[0]} images, "
                         f"{labels.shape[0]} labels")
    return images, labels


def load_data(data_dir, train_limit=None, prog="fmnist_recipe.py"):
    """(x_train, y_train, x_test, y_test, test_labels) from ``data_dir``, the
    training set cut to its first ``train_limit`` images if given; a missing
    or malformed file ends the program with one line naming it."""
    try:
        train_images, train_labels = load_split(data_dir, "train")
        test_images, test_labels = load_split(data_dir, "t10k")
    except (OSError, ValueError) as e:
        sys.exit(f"{prog}: cannot read Fashion-MNIST from {data_dir}: {e}")
    if train_limit is not None:
        train_images, train_labels = train_images[:train_limit], train_labels[:train_limit]
    return (to_input(train_images), torch.from_numpy(train_labels), to_input(test_images),
            torch.from_numpy(test_labels), test_labels)


def add_common_args(p, quick_help):
    """The options both Fashion-MNIST scripts take: --out, --samples, --seed,
    --quick (help ``quick_help``) and --data."""
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--samples", type=int, default=2000,
                   help="test images to dump, the first N of the test set (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--data", default=DATA_DIR, help=f"Fashion-MNIST idx .gz files ({DATA_DIR})")


def check_args(p, args, epochs, quick_epochs, min_epochs, why=""):
    """Default --epochs (``quick_epochs`` with --quick), and refuse fewer than
    ``min_epochs`` (``why`` says why) or a --samples outside 1..10000."""
    if args.epochs is None:
        args.epochs = quick_epochs if args.quick else epochs
    if args.epochs < min_epochs:
        p.error(f"--epochs must be at least {min_epochs}{why}")
    if not 1 <= args.samples <= 10000:
        p.error("--samples must be between 1 and 10000")


def torch_setup():
    """2 CPU threads and deterministic algorithms: the same bytes every run."""
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)


def to_input(images):
    """uint8 [N, 28, 28] -> normalised float32 [N, 1, 32, 32] (zero-padded by 2)."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return (F.pad(x, (2, 2, 2, 2)) - MEAN) / STD


def kd_loss(logits, labels, teacher_logits):
    """0.1 * CE + 0.9 * tau^2 * KL(p_t || p_s), batch mean (mdistiller's KD)."""
    log_ps = F.log_softmax(logits / TAU, dim=1)
    log_pt = F.log_softmax(teacher_logits / TAU, dim=1)
    kl = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
    return CE_WEIGHT * F.cross_entropy(logits, labels) + KD_WEIGHT * TAU ** 2 * kl


def predict(model, x, batch_size=1000):
    """Logits of ``model`` in eval mode, restoring its mode afterwards."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(b) for b in torch.split(x, batch_size)])
    model.train(was_training)
    return out


def train(name, args, data, teacher_logits=None):
    """Train one model, exporting it at its checkpoints; return (model, record)."""
    role, channels, width, loss_kind, seed_offset = MODELS[name]
    torch.manual_seed(args.seed + seed_offset)
    model = ConvNet(channels, width)
    x_train, y_train, x_dump, y_dump, ids_dump = data
    steps_per_epoch = -(-x_train.shape[0] // BATCH_SIZE)
    total_steps = steps_per_epoch * args.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps)
    checkpoints = {0: "init", 1: "early", args.epochs // 2: "middle", args.epochs: "final"}
    layers = model.feature_layers()

    def export(epoch):
        kdl_export.export_checkpoint(
            os.path.join(args.tmp, f"{name}.h5"), model, x_dump, y_dump, ids_dump,
            layers, model.head, "penult", checkpoints[epoch], step=epoch * steps_per_epoch,
            epoch=epoch, role=role, model_name=name, dtype=args.dtype,
            grad_layers=["penult"] if role == "teacher" else [], pool=(args.pool, args.pool))

    start = time.time()
    export(0)
    # The same data order for every model, so student_ce and student_kd differ
    # only in their loss.
    order = torch.Generator().manual_seed(args.seed + 100)
    model.train()
    for epoch in range(1, args.epochs + 1):
        total = 0.0
        for idx in torch.randperm(x_train.shape[0], generator=order).split(BATCH_SIZE):
            logits = model(x_train[idx])
            if loss_kind == "kd":
                loss = kd_loss(logits, y_train[idx], teacher_logits[idx])
            else:
                loss = F.cross_entropy(logits, y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * idx.shape[0]
        if epoch in checkpoints:
            export(epoch)
        print(f"{name}: epoch {epoch}/{args.epochs} loss {total / x_train.shape[0]:.4f} "
              f"({time.time() - start:.0f} s)", flush=True)
    record = {"role": role, "loss": "KD (tau=4, 0.1 CE + 0.9 KD)" if loss_kind == "kd" else "CE",
              "conv_channels": list(channels), "penultimate_width": width,
              "parameters": sum(p.numel() for p in model.parameters()),
              "checkpoints": {checkpoints[e]: {"epoch": e, "step": e * steps_per_epoch}
                              for e in sorted(checkpoints)},
              "train_seconds": round(time.time() - start, 1)}
    return model, record


def parse_args(argv):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, f"train on the first {QUICK_TRAIN_SIZE} training images only")
    p.add_argument("--dtype", choices=sorted(kdl_export.DTYPES), default="float16",
                   help="storage type of logits, features and gradients (default float16)")
    p.add_argument("--pool", type=int, choices=(1, 2, 4), default=1,
                   help="pool conv feature maps to POOL x POOL (default 1)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs per model, at least 4 (default 6; 4 with --quick)")
    args = p.parse_args(argv)
    check_args(p, args, 6, QUICK_EPOCHS, 4, " (checkpoints init, early, middle, final)")
    return args


def main(argv=None):
    """Run the recipe; see the module docstring."""
    wall_start = time.time()
    args = parse_args(argv)
    torch_setup()
    np.random.seed(args.seed)

    x_train, y_train, x_test, y_test, test_labels = load_data(
        args.data, QUICK_TRAIN_SIZE if args.quick else None)
    ids_dump = np.arange(args.samples)
    data = (x_train, y_train, x_test[:args.samples], test_labels[:args.samples], ids_dump)

    os.makedirs(args.out, exist_ok=True)
    args.tmp = tempfile.mkdtemp(prefix=".partial-", dir=args.out)
    try:
        records = {}
        teacher, records["teacher"] = train("teacher", args, data)
        teacher_logits = predict(teacher, x_train)
        models = {"teacher": teacher}
        for name in ("student_ce", "student_kd", "student_narrow"):
            models[name], records[name] = train(name, args, data, teacher_logits)
        for name, model in models.items():
            pred = predict(model, x_test).argmax(1)
            records[name]["test_accuracy"] = round((pred == y_test).float().mean().item(), 4)
        for name in models:
            os.replace(os.path.join(args.tmp, f"{name}.h5"), os.path.join(args.out, f"{name}.h5"))
    finally:
        shutil.rmtree(args.tmp, ignore_errors=True)

    for name, record in records.items():
        record["file_bytes"] = os.path.getsize(os.path.join(args.out, f"{name}.h5"))
        print(f"{name}: test accuracy {record['test_accuracy']:.4f} "
              f"({record['file_bytes'] / 1e6:.2f} MB)")
    prov = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "seed": args.seed, "epochs": args.epochs, "quick": args.quick,
        "train_images": int(x_train.shape[0]), "dumped_test_samples": args.samples,
        "dumped_class_counts": np.bincount(data[3], minlength=NUM_CLASSES).tolist(),
        "dtype": args.dtype, "pool": [args.pool, args.pool],
        "wall_seconds": round(time.time() - wall_start, 1),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "h5py": h5py.__version__},
        "models": records,
    }
    with open(os.path.join(args.out, "provenance.json"), "w") as f:
        json.dump(prov, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "PROVENANCE.md"), "w") as f:
        f.write(provenance_markdown(prov))
    print(f"wall time {prov['wall_seconds']:.0f} s; wrote {args.out}")


def provenance_markdown(prov):
    """Human-readable PROVENANCE.md from the provenance record."""
    total = sum(r["file_bytes"] for r in prov["models"].values())
    lines = [
        "# Fashion-MNIST kdlens dumps: provenance",
        "",
        "Produced by `datasets/fmnist_recipe.py` (run from the repository root):",
        "",
        "```",
        prov["command"],
        "```",
        "",
        f"- seed {prov['seed']}, {prov['epochs']} epochs per model, "
        f"{prov['train_images']} training images{' (--quick)' if prov['quick'] else ''}, "
        f"Adam lr {LEARNING_RATE} with cosine decay, batch {BATCH_SIZE}, no augmentation",
        f"- dumped: the first {prov['dumped_test_samples']} test images "
        f"(sample_ids 0..{prov['dumped_test_samples'] - 1}), class counts "
        f"{prov['dumped_class_counts']}",
        f"- stored as {prov['dtype']}, gzip level {kdl_export.GZIP_LEVEL} with shuffle, "
        f"chunks of up to {kdl_export.CHUNK_ROWS} rows; head weights float32",
        f"- reductions: conv feature maps (16x16, 8x8, 4x4) adaptive-average-pooled to "
        f"{prov['pool'][0]}x{prov['pool'][1]} (attrs pool, pooled_from; global averages are "
        "exact); feature gradients only for the teacher's head input `penult` (none for students)",
        "- gradients: plain cross-entropy with the label at tau=1 for every model, "
        "whatever its training loss",
        f"- wall time {prov['wall_seconds']:.0f} s on {torch.get_num_threads()} CPU threads; "
        + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()),
        "",
        "| model | role | loss | conv channels | penultimate width | parameters "
        "| test accuracy (10k) | checkpoints (epoch) | file |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in prov["models"].items():
        ckpts = ", ".join(f"{c} ({v['epoch']})" for c, v in r["checkpoints"].items())
        lines.append(f"| {name} | {r['role']} | {r['loss']} | {r['conv_channels']} "
                     f"| {r['penultimate_width']} | {r['parameters']} "
                     f"| {100 * r['test_accuracy']:.2f} % | {ckpts} "
                     f"| {name}.h5, {r['file_bytes'] / 1e6:.2f} MB |")
    lines += ["", f"Total size of the dumps: {total / 1e6:.2f} MB.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
