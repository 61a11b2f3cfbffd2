"""Test accuracy of a (mid-epoch) checkpoint on a seeded random subset of the test set."""
import sys

import torch

from noprop.data import load_dataset
from noprop.run import load_run
from noprop.training.trainer import evaluate_accuracy

torch.set_num_threads(1)
path, n = sys.argv[1], int(sys.argv[2])
run = load_run(path)
print("epoch", run.checkpoint["epoch"], "step", run.checkpoint["step"], "train_seconds", run.checkpoint["train_seconds"])
data = load_dataset("mnist", "/work/shared/data/mnist", download=False, progress=False)
idx = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(0))[:n]
print("test accuracy on", n, "seeded random test images:", evaluate_accuracy(run.method, data.test_x[idx], data.test_y[idx]))
