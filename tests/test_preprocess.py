"""Pre-processing: resize modes, colour order, layout, dtype, mean/std, and the way back."""

import numpy as np
import pytest

from edge_agent.bundle.manifest import InputSpec
from edge_agent.preprocess import Preprocessor


def spec(**kw) -> InputSpec:
    return InputSpec.model_validate({"width": 8, "height": 4, **kw})


def test_stretch_rgb_nchw_float_with_mean_std():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:] = (10, 20, 30)  # BGR
    p = Preprocessor(spec(mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5]))
    tensor, tr = p(img)
    assert tensor.shape == (1, 3, 4, 8) and tensor.dtype == np.float32
    expected = (np.array([30, 20, 10]) / 255 - [0.1, 0.2, 0.3]) / 0.5  # RGB order
    np.testing.assert_allclose(tensor[0, :, 0, 0], expected, rtol=1e-5)
    assert (tr.scale_x, tr.scale_y, tr.pad_x, tr.pad_y) == (0.2, 0.2, 0.0, 0.0)


def test_bgr_nhwc_uint8_passes_pixels_through():
    img = np.random.default_rng(0).integers(0, 255, (4, 8, 3), dtype=np.uint8)
    tensor, _ = Preprocessor(spec(layout="NHWC", dtype="uint8", color="BGR"))(img)
    assert tensor.shape == (1, 4, 8, 3) and tensor.dtype == np.uint8
    np.testing.assert_array_equal(tensor[0], img)


def test_int8_input_is_shifted_by_128():
    img = np.full((4, 8, 3), 200, np.uint8)
    tensor, _ = Preprocessor(spec(layout="NHWC", dtype="int8"))(img)
    assert tensor.dtype == np.int8 and int(tensor[0, 0, 0, 0]) == 72


def test_letterbox_pads_and_maps_boxes_back():
    img = np.full((100, 400, 3), 255, np.uint8)  # 4:1 into 8x4 (2:1): scale 0.02, pad 1 px
    p = Preprocessor(
        spec(width=8, height=4, resize="letterbox", dtype="uint8", color="BGR", layout="NHWC")
    )
    tensor, tr = p(img)
    assert (tr.pad_x, tr.pad_y) == (0.0, 1.0)
    assert tensor[0, 0, 0, 0] == 114 and tensor[0, 1, 0, 0] == 255  # grey border row, image
    back = tr.to_frame(np.array([[0, 1, 8, 3]], np.float32))
    np.testing.assert_allclose(back, [[0, 0, 400, 100]])


def test_std_zero_refused():
    with pytest.raises(ValueError, match="std must not contain 0"):
        spec(std=[1, 0, 1])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_float_tensor_matches_the_formula(layout, color, resize):
    """tensor = (pixel * scale - mean) / std per channel in `color` order, any layout."""
    img = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    s = spec(
        width=32,
        height=32,
        layout=layout,
        color=color,
        resize=resize,
        mean=[0.1, 0.2, 0.3],
        std=[0.2, 0.5, 0.9],
    )
    p = Preprocessor(s)
    tensor, _ = p(img)
    pixels, _ = p.resize(img)  # the same geometry, then the formula in numpy
    if color == "RGB":
        pixels = pixels[..., ::-1]
    expected = (pixels.astype(np.float32) / 255 - [0.1, 0.2, 0.3]) / [0.2, 0.5, 0.9]
    if layout == "NCHW":
        expected = expected.transpose(2, 0, 1)
    np.testing.assert_allclose(tensor[0], expected, atol=1e-5)
