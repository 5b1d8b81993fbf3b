#!/usr/bin/env python3
"""A model of your own on a `crop` stage: a small 3D CNN, AD vs CN from one
hippocampus patch (README, "Your own stage"; the crop format is in
docs/artifacts.md).

Trains on the crop's train split with the lab's random shift (each patch moved
by up to `shift` voxels per axis, drawn per patch and per batch), predicts the
validation split's centre patches, and writes into $HCPIPE_OUT:
  predictions.tsv  as `evaluate` writes it, so `soft_vote` and auc.py take it
  metrics.json     "validation" (and "old" with --old) with the lab's metrics,
                   and what the run used: lr, epochs, threads, n_train
  model.pt         the trained state dict (torch.save)

Usage: my_cnn.py CROP_DIR [--old SUBJECTS_TSV] [--lr 0.001] [--epochs 8]
                 [--batch-size 8] [--seed 0]
It uses $HCPIPE_THREADS threads (the stage's `resources.cpu`).
"""
import argparse
import csv
import json
import os
import struct

import torch
from torch import nn


def read_safetensors(path):
    """{name: tensor} of a safetensors file: u64 header size, JSON header, raw bytes."""
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    kinds = {"F32": torch.float32, "I64": torch.int64}
    return {
        name: torch.frombuffer(bytearray(data[t["data_offsets"][0]:t["data_offsets"][1]]),
                               dtype=kinds[t["dtype"]]).reshape(t["shape"])
        for name, t in header.items() if name != "__metadata__"
    }


class SmallCNN(nn.Module):
    """Two convolution blocks and a global average: 3,778 weights (the lab's CNN has 22,786)."""

    def __init__(self, width=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1), nn.BatchNorm3d(width), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(width, 2 * width, 3, padding=1), nn.BatchNorm3d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.classify = nn.Linear(2 * width, 2)

    def forward(self, x):
        return self.classify(self.features(x))


def lab_metrics(truth, predicted):
    """The lab's compute_metrics (label 1 = AD is the positive class)."""
    pairs = list(zip(truth, predicted))
    tp = sum(t == 1 and p == 1 for t, p in pairs)
    tn = sum(t == 0 and p == 0 for t, p in pairs)
    fp = sum(t == 0 and p == 1 for t, p in pairs)
    fn = sum(t == 1 and p == 0 for t, p in pairs)
    ratio = lambda a, b: a / b if b else 0.0
    sens, spec = ratio(tp, tp + fn), ratio(tn, tn + fp)
    return {"accuracy": ratio(tp + tn, len(pairs)), "sensitivity": sens, "specificity": spec,
            "balanced_accuracy": (sens + spec) / 2, "n": len(pairs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("crop")
    ap.add_argument("--old", help="an age_filter stage's subjects.tsv: metrics on those too")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = os.environ["HCPIPE_OUT"]
    # One thread per CPU slot the stage holds: parallel stages then never oversubscribe.
    torch.set_num_threads(int(os.environ.get("HCPIPE_THREADS", "1")))
    torch.manual_seed(args.seed)

    meta = json.load(open(os.path.join(args.crop, "meta.json")))
    s = meta["shift"]
    d, h, w = meta["patch_shape"]
    train = read_safetensors(os.path.join(args.crop, "train.safetensors"))
    valid = read_safetensors(os.path.join(args.crop, "validation.safetensors"))
    # Row i of validation.tsv describes patch i.
    subjects = list(csv.DictReader(open(os.path.join(args.crop, "validation.tsv")), delimiter="\t"))

    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    patches, labels = train["patches"], train["labels"]
    for _ in range(args.epochs):
        model.train()
        for batch in torch.randperm(len(labels)).split(args.batch_size):
            # The lab's random shift: a window of the patch size at offset 0..2s per axis.
            o = torch.randint(0, 2 * s + 1, (len(batch), 3))
            x = torch.stack([patches[i, :, a:a + d, b:b + h, c:c + w]
                             for i, (a, b, c) in zip(batch.tolist(), o.tolist())])
            optimizer.zero_grad()
            loss_fn(model(x), labels[batch]).backward()
            optimizer.step()

    model.eval()
    with torch.no_grad():
        proba = model(valid["patches"][:, :, s:s + d, s:s + h, s:s + w]).double().softmax(1)
    truth = valid["labels"].tolist()
    predicted = proba.argmax(1).tolist()
    with open(os.path.join(out, "predictions.tsv"), "w") as f:
        f.write("participant_id\ttrue_label\tpredicted_label\tproba0\tproba1\n")
        for row, t, p, (p0, p1) in zip(subjects, truth, predicted, proba.tolist()):
            f.write(f"{row['participant_id']}\t{t}\t{p}\t{p0!r}\t{p1!r}\n")

    metrics = {"validation": lab_metrics(truth, predicted)}
    if args.old:
        old = {r["participant_id"] for r in csv.DictReader(open(args.old), delimiter="\t")}
        keep = [i for i, row in enumerate(subjects) if row["participant_id"] in old]
        metrics["old"] = lab_metrics([truth[i] for i in keep], [predicted[i] for i in keep])
    metrics.update(lr=args.lr, epochs=args.epochs, threads=torch.get_num_threads(),
                   n_train=len(labels))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    torch.save(model.state_dict(), os.path.join(out, "model.pt"))


if __name__ == "__main__":
    main()
