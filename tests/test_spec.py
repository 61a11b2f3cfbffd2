"""DataSpec: images and vectors, and the dicts saved in checkpoints (old and new)."""

import pytest

from noprop.settings import ConfigError
from noprop.spec import DataSpec


def test_a_checkpoint_written_before_input_shape_still_loads() -> None:
    old = {"channels": 3, "height": 32, "width": 32, "num_classes": 10}
    assert DataSpec.from_dict(old) == DataSpec.image(3, 32, 32, 10)


def test_to_dict_round_trips_for_images_and_vectors() -> None:
    for spec in (DataSpec.image(1, 8, 8, 10), DataSpec.vector(30, 2)):
        assert DataSpec.from_dict(spec.to_dict()) == spec


def test_vector_inputs_are_not_images_and_say_so() -> None:
    spec = DataSpec.vector(30, 2)
    assert not spec.is_image and spec.input_size == 30 and spec.describe() == "30 features"
    # a ConfigError: the CLI reports it in one line, whatever image-only code asked
    with pytest.raises(ConfigError, match="30 features are not images"):
        _ = spec.channels
