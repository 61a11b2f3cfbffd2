"""Test accuracy of a (mid-epoch) checkpoint on a seeded random subset of the test set.

    python eval_subset.py RUN N MNIST_DIR
"""
import sys

import torch

from noprop.data import load_dataset
from noprop.inference import accuracy
from noprop.saved_run import load_run

torch.set_num_threads(1)
path, n = sys.argv[1], int(sys.argv[2])
run = load_run(path)
progress = run.saved.progress
print("epoch", progress.epoch, "step", progress.step, "train_seconds", progress.train_seconds)
data = load_dataset("mnist", sys.argv[3], download=False, progress=False)
idx = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(0))[:n]
print("test accuracy on", n, "seeded random test images:",
      accuracy(run.method, data.test_x[idx], data.test_y[idx]))
