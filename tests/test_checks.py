"""One validation per value (``mobilenets.checks``): a range is written once and the library's
entry points and the command line refuse the same values with the same words."""
import math

import pytest

from mobilenets.checks import RANGES, check_choice, check_int, check_range
from mobilenets.engine.data import BatchTransform
from mobilenets.tasks.classification.train import make_config

# eval_crop's range, from its meaning (a side over the image side; > 1 adds a zero border, up to
# twice the image): (0, 2].
IN_CROP = [1e-9, 0.5, 0.875, 1, 32 / 28, 2]
OUT_OF_CROP = [0, -0.5, 2.0001, 3, math.inf, math.nan, True, "1", None]


@pytest.mark.parametrize("value", IN_CROP)
def test_eval_crop_in_range_passes(value):
    assert check_range("eval_crop", value) == value


@pytest.mark.parametrize("value", OUT_OF_CROP)
def test_eval_crop_out_of_range_is_named(value):
    with pytest.raises(ValueError, match=r"^eval_crop must be a number in \(0, 2\], got "):
        check_range("eval_crop", value)


def test_the_library_and_the_command_line_share_eval_crops_rule(tmp_path, refused):
    words = "eval_crop must be a number in (0, 2], got"
    for build in (lambda: make_config("smoke", eval_crop=3.0),
                  lambda: BatchTransform(32, False, eval_crop=3.0)):
        with pytest.raises(ValueError) as e:
            build()
        assert str(e.value) == f"{words} 3.0"
    refused(["eval", tmp_path / "m.safetensors", "--eval-crop", "3"], f"{words} '3'")
    refused(["train", "--preset", "smoke", "--set", "eval_crop=3", "--out", tmp_path / "run"],
            f"{words} 3.0")


def test_one_range_per_shared_value():
    # Seeds: NumPy's legacy range, 0 to 2**32 - 1 (label_seed is a seed too).
    for name in ("seed", "label_seed"):
        assert check_range(name, 2 ** 32 - 1) == 2 ** 32 - 1
        with pytest.raises(ValueError, match=f"^{name} must be an integer from 0 to 4294967295"):
            check_range(name, 2 ** 32)
    with pytest.raises(ValueError, match=r"^resolution must be an integer >= 32, got 31"):
        check_range("resolution", 31)
    with pytest.raises(ValueError, match=r"^width_mult must be a finite number > 0, got 0"):
        check_range("width_mult", 0)
    # A name given its own rule: the message names the value, the rule is another's.
    with pytest.raises(ValueError, match=r"^teacher_seed must be an integer from 0"):
        check_range("teacher_seed", -1, "seed")
    assert set(RANGES) >= {"seed", "eval_crop", "resolution", "width_mult", "min_crop_area"}


def test_counts_and_choices():
    assert check_int("groups", 3) == 3 and check_int("unlabeled", 0, 0) == 0
    for bad in (0, 1.0, True, "2"):
        with pytest.raises(ValueError, match=r"^groups must be an integer >= 1, got "):
            check_int("groups", bad)
    assert check_choice("padding", "keras", ("symmetric", "tf_same", "keras")) == "keras"
    with pytest.raises(ValueError, match=r"^padding must be one of symmetric, tf_same, keras; "
                                         r"got 'same'$"):
        check_choice("padding", "same", ("symmetric", "tf_same", "keras"))


def test_the_models_and_the_configs_use_the_shared_checks():
    import mobilenets as M

    with pytest.raises(ValueError, match="^padding must be one of symmetric, tf_same, keras"):
        M.MobileNetV1(0.25, padding="same")
    with pytest.raises(ValueError, match="^width_mult must be a finite number > 0"):
        M.MobileNetV2(0)
    with pytest.raises(ValueError, match="^optimizer must be one of rmsprop, sgd, adamw"):
        make_config("smoke", optimizer="adam")
