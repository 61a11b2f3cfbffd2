"""AugLocal (Ma et al., ICLR 2024) on ``local``'s four blocks: each block's auxiliary network copies the
architecture of uniformly sampled later blocks, with its own parameters. It learns a tiny problem,
its depth and sampling rules are the paper's, and it passes the locality checker (chained)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import (
    blobs_accuracy,
    check_trains_from_the_command_line_and_the_classifier,
    make_blobs,
    tiny_method,
)
from noprop.locality import check_locality
from noprop.methods import METHODS
from noprop.methods.auglocal import AugLocal, pyramid_depths, sampled_blocks
from noprop.settings import ConfigError
from noprop.spec import DataSpec

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = make_blobs().spec


def test_auglocal_is_registered_and_chained_like_local():
    assert METHODS["auglocal"] is AugLocal
    assert AugLocal.locality_forward == "chained"


def test_depths_shrink_linearly_and_later_blocks_are_sampled_uniformly_ending_at_the_last():
    assert pyramid_depths(2, 0.5, 16) == [2] * 15  # ResNet-32 in 16 modules, d = 2: 2 - i/28 rounds to 2
    assert pyramid_depths(4, 1.0, 6) == [4, 3, 2, 2, 1]  # 4 - 3i/4: 4, 3.25, 2.5 (to even), 1.75, 1
    assert sampled_blocks(1, 3, 10) == [4, 7, 10]
    assert sampled_blocks(1, 2, 4) == [2, 4]  # 2.5 rounds to even
    assert sampled_blocks(2, 2, 4) == [3, 4]  # no more later blocks than the depth: all of them
    assert sampled_blocks(3, 2, 4) == [4]


def test_auxiliary_networks_copy_later_blocks_with_their_own_parameters():
    torch.manual_seed(0)
    method = AugLocal(DataSpec.image(1, 28, 28, 10))
    assert method.describe() == {"auxiliary_blocks": [[2, 4], [3, 4], [4]]}
    block_params = {id(p) for p in method.blocks.parameters()}
    assert not block_params & {id(p) for p in method.heads.parameters()}
    first = method.heads[0]  # like block 2 (conv 64, no pooling), like block 4 (FC 256), classifier
    assert first[0][0].out_channels == 64 and first[0][0].in_channels == 32
    assert first[1][1].out_features == 256 and first[2].out_features == 10
    x = torch.randn(3, 1, 28, 28)
    outs = method.eval().readout_logits(x)
    assert [o.shape for o in outs] == [(3, 10)] * 4
    torch.testing.assert_close(outs[-1], method.predict_logits(x))


def test_auglocal_pyramid_is_checked():
    with pytest.raises(ConfigError, match="auglocal_pyramid"):
        AugLocal(SPEC, auglocal_pyramid=1.5)


def test_auglocal_learns_tiny_data_well_above_chance():
    accuracy = blobs_accuracy("auglocal", epochs=3, block_order="interleaved")  # chance is 0.25
    assert accuracy > 0.6, accuracy


def test_auglocal_passes_the_locality_checker():
    report = check_locality(tiny_method(AugLocal), make_blobs(n_train=16, n_test=8))
    assert report.passed and report.forward == "chained", report.table()


def test_auglocal_trains_from_the_command_line_and_the_classifier(tmp_path: Path):
    results = check_trains_from_the_command_line_and_the_classifier("auglocal", tmp_path, batch_size=256)
    assert results["auxiliary_blocks"] == [[2, 4], [3, 4], [4]]
