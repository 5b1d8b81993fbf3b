#!/usr/bin/env python3
"""ROC AUC of a `predictions.tsv` (README, "Your own stage"; docs/artifacts.md).

Usage: auc.py PREDICTIONS_TSV. Writes $HCPIPE_OUT/metrics.json:
{"auc": ..., "n": ..., "n_AD": ..., "n_CN": ...}. The AUC is the probability that
a random AD subject gets a higher `proba1` than a random CN subject (ties count
half): the area under the ROC curve, without scikit-learn.
"""
import csv
import json
import os
import sys

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
ad = [float(r["proba1"]) for r in rows if r["true_label"] == "1"]
cn = [float(r["proba1"]) for r in rows if r["true_label"] == "0"]
if not ad or not cn:
    sys.exit(f"auc.py: {sys.argv[1]} needs both AD and CN subjects for an AUC")
wins = sum((a > c) + 0.5 * (a == c) for a in ad for c in cn)
metrics = {"auc": wins / (len(ad) * len(cn)), "n": len(rows), "n_AD": len(ad), "n_CN": len(cn)}
with open(os.path.join(os.environ["HCPIPE_OUT"], "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
