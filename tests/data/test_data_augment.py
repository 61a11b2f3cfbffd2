"""CIFAR's crop-and-flip augmentation: what it computes, that it is seeded, and that the trainer
applies it only when the run asks for it (the paper trains without augmentation)."""

from __future__ import annotations

import pytest
import torch

from noprop.cli import build_parser
from noprop.config import RunConfig
from noprop.data import ClassificationData, batches
from noprop.data.augment import RandomCropFlip, cifar_augmentation
from noprop.run import build_trainer
from noprop.settings import ConfigError


def _crops(x: torch.Tensor, p: int, fill: float) -> list[torch.Tensor]:
    """Every crop (and its mirror) of one zero-padded image: what the augmentation may return."""
    c, h, w = x.shape
    padded = torch.full((c, h + 2 * p, w + 2 * p), fill)
    padded[:, p : p + h, p : p + w] = x
    out = []
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out += [crop, crop.flip(-1)]
    return out


def test_each_output_is_a_padded_crop_or_its_mirror() -> None:
    x = torch.randn(16, 2, 6, 5)
    out = RandomCropFlip(padding=2, fill=(-3.0, -3.0))(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for xi, oi in zip(x, out, strict=True):
        assert any(torch.equal(oi, c) for c in _crops(xi, 2, -3.0))


def test_augmentation_is_reproducible_from_the_generator() -> None:
    x = torch.randn(64, 3, 32, 32)
    aug = cifar_augmentation((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    a = aug(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(8)))


def test_padding_is_a_black_pixel_in_normalised_units() -> None:
    aug = cifar_augmentation((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    assert aug.fill == (-2.0, -2.0, -2.0)


def test_about_half_the_images_are_mirrored_and_all_shifts_occur() -> None:
    # a horizontal ramp: its direction shows the flip, its value at the centre the shift
    w, p = 16, 4
    x = torch.arange(w, dtype=torch.float32).expand(4000, 1, w, w).clone()
    out = RandomCropFlip(padding=p, fill=(-100.0,))(x, torch.Generator().manual_seed(0))
    left, right = out[:, 0, w // 2, w // 2 - 1], out[:, 0, w // 2, w // 2]  # never padding
    mirrored = left > right
    assert 0.45 < mirrored.float().mean().item() < 0.55
    shifts = torch.where(mirrored, left, right) - w // 2  # value = column index + shift
    assert sorted(set(shifts.long().tolist())) == list(range(-p, p + 1))


def test_batches_draws_augmentation_after_the_shuffle_from_one_generator() -> None:
    x, y = torch.randn(10, 1, 4, 4), torch.arange(10)
    calls = []

    def record(xb: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        calls.append(g)
        return xb + 1

    g = torch.Generator().manual_seed(0)
    out = list(batches(x, y, 4, shuffle=True, generator=g, transform=record))
    assert len(calls) == 3 and all(c is g for c in calls)
    assert all(torch.equal(xb, x[yb] + 1) for xb, yb in out)  # labels untouched, images transformed


def _blobs(n_train: int, n_test: int) -> ClassificationData:
    g = torch.Generator().manual_seed(0)
    y, yt = torch.arange(n_train) % 4, torch.arange(n_test) % 4
    return ClassificationData("blobs", torch.randn(n_train, 1, 8, 8, generator=g), y,
                              torch.randn(n_test, 1, 8, 8, generator=g), yt, num_classes=4)


class _Counting:
    def __init__(self) -> None:
        self.images = 0

    def __call__(self, xb: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        self.images += len(xb)
        return xb


def test_trainer_applies_the_transform_only_when_augment_is_on() -> None:
    data = _blobs(64, 16)
    data.train_transform = counter = _Counting()
    config = RunConfig(epochs=1, batch_size=32, num_blocks=2, device="cpu", progress=False)
    trainer = build_trainer(config, data)
    assert sum(1 for _ in trainer._epoch_batches(0)) == 4 and counter.images == 0  # default: paper, none
    trainer.config = trainer.config.replace(augment=True)
    for _unit, xb, _yb in trainer._epoch_batches(0):
        assert xb.shape == (32, 1, 8, 8)
    assert counter.images == 2 * 64  # sequential order: one pass over the data per block


def test_augment_on_data_without_an_augmentation_is_refused() -> None:
    data = _blobs(64, 16)  # no train_transform, like MNIST or a table
    config = RunConfig(epochs=1, batch_size=32, num_blocks=2, device="cpu", progress=False, augment=True)
    with pytest.raises(ConfigError, match="augment applies to datasets with a training augmentation"):
        build_trainer(config, data)


def test_augment_flag_defaults_off_like_the_paper() -> None:
    parse = build_parser().parse_args
    assert RunConfig().augment is False
    assert "augment" not in vars(parse(["train"]))  # untouched: the config's value stands
    assert parse(["train", "--augment"]).augment is True
    assert parse(["train", "--no-augment"]).augment is False
