"""The training loop. It knows the :class:`~noprop.methods.base.Method` interface and nothing else.

One optimizer per parameter group; a step on training unit ``u`` back-propagates ``u``'s local
loss and steps only the optimizers of the groups ``u`` names, then drops their gradients. Units
are visited in one of two orders:

* ``sequential`` (paper Algorithm 1): for each unit, a full pass over the training data;
* ``interleaved``: for each batch, a step on every unit.

Both do the same amount of work per epoch. After every epoch the model is evaluated, a row goes to
``metrics.csv`` and a checkpoint is written atomically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor
from tqdm.auto import tqdm

from noprop import __version__
from noprop.config import RunConfig, model_differences
from noprop.data.base import ClassificationData, batches, num_batches
from noprop.methods.base import Method
from noprop.training.checkpoint import (
    CheckpointError,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from noprop.training.device import peak_memory_mb, reset_peak_memory, resolve_device
from noprop.training.metrics import MetricsLog

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
METRICS = "metrics.csv"
CONFIG = "config.yaml"


def make_optimizers(method: Method, config: RunConfig) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per parameter group, so an idle group's state never changes."""
    kind = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[config.resolved().optimizer]
    return {
        name: kind(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        for name, params in method.parameter_groups().items()
        if params
    }


@torch.inference_mode()
def evaluate_accuracy(
    method: Method,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 1000,
    steps: int | None = None,
    deterministic: bool = False,
    seed: int = 1234,
) -> float:
    """Test accuracy with the method's own inference rule; the sampler noise is seeded."""
    return readout_accuracies(
        method, x, y, batch_size=batch_size, steps=steps, deterministic=deterministic, seed=seed
    )[-1]


@torch.inference_mode()
def readout_accuracies(
    method: Method,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 1000,
    steps: int | None = None,
    deterministic: bool = False,
    seed: int = 1234,
) -> list[float]:
    """Accuracy of the prediction read out after each inference step (the last is the final one)."""
    was_training = method.training
    method.eval()
    device = next(method.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    correct: Tensor | None = None
    for xb, yb in batches(x, y, batch_size):
        xb, yb = xb.to(device), yb.to(device)
        outs = method.readout_logits(xb, steps=steps, deterministic=deterministic, generator=generator)
        hits = torch.stack([(o.argmax(-1) == yb).sum() for o in outs])
        correct = hits if correct is None else correct + hits
    method.train(was_training)
    assert correct is not None, "cannot evaluate on an empty set"
    return (correct.double() / len(x)).tolist()


class Trainer:
    """Fits a method on in-memory data, writing metrics, checkpoints and results to ``run_dir``."""

    def __init__(
        self,
        method: Method,
        data: ClassificationData,
        config: RunConfig,
        run_dir: Path | None = None,
    ) -> None:
        self.config = config = config.resolved()
        self.device = resolve_device(config.device)
        self.method = method.to(self.device)
        self.data = data
        self.run_dir = run_dir
        self.optimizers = make_optimizers(method, config)
        self.units = method.training_units()
        self.metrics = MetricsLog(run_dir / METRICS if run_dir else None)
        self.epoch = 0
        self.train_seconds = 0.0

    # -- state ----------------------------------------------------------------------------
    def resolved_config(self) -> dict[str, Any]:
        return {**self.config.to_dict(), **self.config.method_hyperparameters()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "noprop_version": __version__,
            "config": self.resolved_config(),
            "spec": asdict(self.data.spec),
            "model": self.method.state_dict(),
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "epoch": self.epoch,
            "train_seconds": self.train_seconds,
            "rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        diffs = model_differences(state["config"], self.config)
        if asdict(self.data.spec) != state["spec"]:
            diffs.append(f"data shape: checkpoint has {state['spec']}, this run has {asdict(self.data.spec)}")
        if diffs:
            raise CheckpointError("checkpoint is from a different configuration: " + "; ".join(diffs))
        self.method.load_state_dict(state["model"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.epoch = int(state["epoch"])
        self.train_seconds = float(state["train_seconds"])
        torch.set_rng_state(state["rng"])

    def resume(self) -> None:
        """Continue from ``run_dir``'s checkpoint and metrics."""
        assert self.run_dir is not None
        self.load_state_dict(load_checkpoint(self.run_dir / CHECKPOINT, map_location=self.device))
        if (self.run_dir / METRICS).is_file():
            rows = MetricsLog.read(self.run_dir / METRICS)
            self.metrics.restore([r for r in rows if int(r["epoch"]) <= self.epoch])

    # -- training -------------------------------------------------------------------------
    def _schedule(self, epoch: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(unit, x, y) triples of one epoch in the configured order; shuffles are seeded."""
        x, y, bs = self.data.train_x, self.data.train_y, self.config.batch_size
        # the dataset's training augmentation if the run asks for it; seeded by the shuffle's generator
        aug = self.data.train_transform if self.config.augment else None

        def gen(*salt: int) -> torch.Generator:
            return torch.Generator().manual_seed(hash((self.config.seed, epoch, *salt)) % 2**63)

        if self.config.block_order == "sequential":
            for unit in range(len(self.units)):
                for xb, yb in batches(x, y, bs, shuffle=True, generator=gen(unit), transform=aug):
                    yield unit, xb, yb
        else:
            for xb, yb in batches(x, y, bs, shuffle=True, generator=gen(), transform=aug):
                for unit in range(len(self.units)):
                    yield unit, xb, yb

    def train_step(self, unit: int, x: Tensor, y: Tensor) -> dict[str, float]:
        """One local step: backward on unit's loss, step only the groups it owns."""
        out = self.method.unit_loss(unit, x, y)
        out.loss.backward()
        for group in self.units[unit].groups:
            if group in self.optimizers:
                self.optimizers[group].step()
                self.optimizers[group].zero_grad(set_to_none=True)
        return {"loss": out.loss.detach(), **out.terms}

    def train_epoch(self) -> dict[str, float]:
        self.method.train()
        total = len(self.units) * num_batches(len(self.data.train_x), self.config.batch_size)
        sums: dict[str, Tensor] = {}
        bar = tqdm(
            total=total,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            disable=not self.config.progress,
            leave=False,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        for unit, xb, yb in self._schedule(self.epoch):
            terms = self.train_step(unit, xb.to(self.device), yb.to(self.device))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
            if bar.n % 50 == 0:
                bar.set_postfix(unit=self.units[unit].name, loss=f"{float(terms['loss']):.3f}")
        bar.close()
        return {k: float(v) / total for k, v in sums.items()}

    def fit(self) -> dict[str, Any]:
        """Train up to ``config.epochs`` (continuing from ``self.epoch``) and write the results."""
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / CONFIG, yaml.safe_dump(self.resolved_config()))
        reset_peak_memory(self.device)
        accuracy = float("nan")
        while self.epoch < self.config.epochs:
            start = time.perf_counter()
            terms = self.train_epoch()
            seconds = time.perf_counter() - start
            self.train_seconds += seconds
            self.epoch += 1
            accuracy = self.evaluate()
            self.metrics.log({
                "epoch": self.epoch,
                **{f"train_{k}": round(v, 6) for k, v in terms.items()},
                "test_accuracy": accuracy,
                "epoch_seconds": round(seconds, 3),
                "samples_per_second": round(len(self.data.train_x) / seconds, 1),
            })
            if self.config.progress:
                tqdm.write(f"epoch {self.epoch}: loss {terms['loss']:.4f}  test accuracy {accuracy:.4f}")
            if self.run_dir is not None:
                save_checkpoint(self.run_dir / CHECKPOINT, self.state_dict())
        if self.metrics.rows:
            accuracy = float(self.metrics.rows[-1]["test_accuracy"])
        return self._write_results(accuracy)

    def evaluate(self) -> float:
        return evaluate_accuracy(
            self.method,
            self.data.test_x,
            self.data.test_y,
            steps=self.config.inference_steps,
            deterministic=self.config.eval_deterministic,
            seed=self.config.eval_seed,
        )

    def _write_results(self, accuracy: float) -> dict[str, Any]:
        n_seen = len(self.data.train_x) * self.epoch
        results = {
            "method": self.config.method,
            "dataset": self.data.name,
            "epochs": self.epoch,
            "test_accuracy": accuracy,
            "train_seconds": round(self.train_seconds, 3),
            "samples_per_second": round(n_seen / self.train_seconds, 1) if self.train_seconds else 0.0,
            "peak_memory_mb": round(peak_memory_mb(self.device), 1),
            "device": str(self.device),
            "torch_version": torch.__version__,
            "noprop_version": __version__,
            "seed": self.config.seed,
            "num_parameters": sum(p.numel() for p in self.method.parameters()),
            "block_order": self.config.block_order,
            "config": self.resolved_config(),
        }
        if self.run_dir is not None:
            atomic_write_json(self.run_dir / RESULTS, results)
        return results


def read_results(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / RESULTS).read_text())
