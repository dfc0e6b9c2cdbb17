"""Train a deep plain CNN teacher on Fashion-MNIST and dump every layer, to ask
where knowledge quality Q peaks with depth (``kdlens layers``).

Cooper et al. report that Q picks late-middle layers of deep networks.
The bundled example's teacher has only four feature layers, so it cannot show
that; this one has eleven.  It is VGG-like: ten conv3x3-BN-ReLU blocks of
32, 32, 64, 64, 128, 128, 128, 128, 128, 128 channels, 2 x 2 max-pooling after
blocks 1, 3, 5 and 7 (32 -> 2 pixels), then ``penult`` (linear to 128, ReLU) and
a linear head; it is trained with cross-entropy (the recipe's optimiser,
schedule and batch size) and dumped at checkpoints ``init`` and ``final`` on the
first ``--samples`` test images, conv maps as global averages.  A plain deep
net on an easy task is where the "tunnel effect" (Masarczyk et al. 2023),
late layers that compress rather than add separability, is expected.

Run from the repository root::

    /usr/bin/python3 datasets/fmnist_depth.py --out /tmp/fmnist-deep
    build/analysis/kdlens layers -t /tmp/fmnist-deep/teacher_deep.h5 -k 3

Everything is seeded and runs on the CPU with 2 threads; the test accuracy on
the full test set and the wall time are printed and written to
``provenance.json`` in the output directory.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import fmnist_recipe as recipe
import kdl_export

CHANNELS = (32, 32, 64, 64, 128, 128, 128, 128, 128, 128)
POOL_AFTER = (1, 3, 5, 7)
WIDTH = 128
QUICK_TRAIN_SIZE = 1000


def deep_net():
    """Feature layers ``blocks.0`` .. ``blocks.9`` and ``penult``; head ``head``."""
    return recipe.ConvNet(CHANNELS, WIDTH, pool_after=POOL_AFTER)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    recipe.add_common_args(p, f"train on the first {QUICK_TRAIN_SIZE} training images only")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default 2; 1 with --quick)")
    args = p.parse_args(argv)
    recipe.check_args(p, args, 2, 1, 1)
    return args


def main(argv=None):
    wall_start = time.time()
    args = parse_args(argv)
    recipe.torch_setup()
    torch.manual_seed(args.seed)

    x_train, y_train, x_test, y_test, test_labels = recipe.load_data(
        args.data, QUICK_TRAIN_SIZE if args.quick else None, prog="fmnist_depth.py")
    x_dump, y_dump = x_test[:args.samples], test_labels[:args.samples]

    model = deep_net()
    steps_per_epoch = -(-x_train.shape[0] // recipe.BATCH_SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps_per_epoch * args.epochs)
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=args.out)
    path = os.path.join(tmp, "teacher_deep.h5")

    def export(name, epoch):
        kdl_export.export_checkpoint(
            path, model, x_dump, y_dump, list(range(args.samples)), model.feature_layers(),
            model.head, "penult", name, step=epoch * steps_per_epoch, epoch=epoch,
            role="teacher", model_name="teacher_deep", dtype="float32", pool=(1, 1))

    try:
        export("init", 0)
        order = torch.Generator().manual_seed(args.seed + 100)
        model.train()
        for epoch in range(1, args.epochs + 1):
            total = 0.0
            for idx in torch.randperm(x_train.shape[0], generator=order).split(recipe.BATCH_SIZE):
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * idx.shape[0]
            print(f"teacher_deep: epoch {epoch}/{args.epochs} loss {total / x_train.shape[0]:.4f} "
                  f"({time.time() - wall_start:.0f} s)", flush=True)
        export("final", args.epochs)
        os.replace(path, os.path.join(args.out, "teacher_deep.h5"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    accuracy = (recipe.predict(model, x_test).argmax(1) == y_test).float().mean().item()
    prov = {"command": " ".join([sys.executable] + sys.argv), "seed": args.seed,
            "epochs": args.epochs, "quick": args.quick, "train_images": int(x_train.shape[0]),
            "dumped_test_samples": args.samples, "conv_channels": list(CHANNELS),
            "pool_after": list(POOL_AFTER), "penultimate_width": WIDTH,
            "parameters": sum(p.numel() for p in model.parameters()),
            "test_accuracy": round(accuracy, 4),
            "wall_seconds": round(time.time() - wall_start, 1)}
    with open(os.path.join(args.out, "provenance.json"), "w") as f:
        json.dump(prov, f, indent=2)
        f.write("\n")
    print(f"teacher_deep: test accuracy {accuracy:.4f}; wall time {prov['wall_seconds']:.0f} s; "
          f"wrote {os.path.join(args.out, 'teacher_deep.h5')}")


if __name__ == "__main__":
    main()
