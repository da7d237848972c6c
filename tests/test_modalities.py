"""ModalitySpec registry and input validation."""
import pytest
import torch

from robustmm.errors import InputShapeError, InputValueError, UnknownNameError
from robustmm.modalities import CONTINUOUS_MODALITIES, MODALITIES, get_modality


def test_every_continuous_modality_has_a_sane_spec():
    assert set(CONTINUOUS_MODALITIES) == {"image", "video", "audio", "depth", "thermal", "pointcloud"}
    for m in CONTINUOUS_MODALITIES:
        spec = MODALITIES[m]
        lo, hi = spec.domain
        assert lo < hi
        assert spec.norm in ("linf", "l2")
        assert list(spec.eps_grid) == sorted(spec.eps_grid) and spec.eps_grid[0] > 0
        assert len(spec.eps_grid) % 2 == 1  # a well-defined middle budget
        assert spec.eps_grid[-1] < (hi - lo) / 2  # budgets are small relative to the range
        assert spec.eps_unit and spec.description


def test_pixel_grid_is_k_over_255_and_middle_is_4():
    spec = get_modality("image")
    assert [round(e * 255) for e in spec.eps_grid] == [1, 2, 4, 8, 16]
    assert spec.format_eps(spec.middle_eps) == "4/255"


def test_unknown_modality_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'audio'"):
        get_modality("audoi")


@pytest.mark.parametrize(
    "x, err, msg",
    [
        (torch.rand(2, 3, 8), InputShapeError, "expected shape"),
        (torch.rand(2, 4, 8, 8), InputShapeError, "expected shape"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.long), InputShapeError, "floating-point"),
        (torch.full((2, 3, 8, 8), float("nan")), InputValueError, "NaN"),
        (torch.rand(2, 3, 8, 8) + 1.5, InputValueError, r"\[0, 1\]"),
        (torch.rand(0, 3, 8, 8), InputShapeError, "empty"),
    ],
)
def test_image_validation_errors(x, err, msg):
    with pytest.raises(err, match=msg):
        get_modality("image").validate(x)


def test_valid_inputs_pass():
    get_modality("image").validate(torch.rand(2, 3, 17, 9))
    get_modality("audio").validate(torch.rand(2, 100) * 2 - 1)
    get_modality("pointcloud").validate(torch.rand(2, 50, 6) * 2 - 1)
    with pytest.raises(InputShapeError):
        get_modality("pointcloud").validate(torch.rand(2, 50, 3))


def test_image_like_follows_the_sample_shape():
    """(C, H, W) samples -- and video, image-like frame by frame -- are image-like; nothing else is."""
    like = {name for name, spec in MODALITIES.items() if spec.image_like}
    assert like == {"image", "depth", "thermal", "video"}
    from robustmm.attacks.patch import IMAGE_LIKE

    assert set(IMAGE_LIKE) == like


def test_norms_are_plain_strings():
    import json

    from robustmm.modalities import Norm

    assert Norm.LINF == "linf" and Norm("l2") is Norm.L2 and json.dumps([Norm.L2]) == '["l2"]'
    assert f"{Norm.LINF}" == "linf" and repr(Norm.L2) == "'l2'"
    assert all(MODALITIES[m].norm is Norm.LINF for m in CONTINUOUS_MODALITIES)
