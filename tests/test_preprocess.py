"""Pre-processing: resize modes, colour order, layout, dtype, mean/std, and the way back."""

import json

import cv2
import numpy as np
import pytest

from edge_agent.bundle import load_bundle, write_manifest
from edge_agent.bundle.manifest import InputSpec
from edge_agent.predictor import Predictor
from edge_agent.preprocess import Preprocessor
from tools.toy_models import mean_colour_classifier


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
@pytest.mark.parametrize("resize", ["stretch", "letterbox", "crop"])
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


def frame(h: int, w: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def crop_spec(size=(224, 224), **kw) -> InputSpec:
    return spec(width=size[0], height=size[1], resize="crop", layout="NHWC", dtype="uint8",
                color="BGR", **kw)  # fmt: skip


@pytest.mark.parametrize(
    ("h", "w", "size", "fraction", "resized", "offset"),
    [
        # (frame h, w), (model w, h), crop_fraction -> resized (w, h), crop offset (x, y):
        # torchvision's Resize(short side) + CenterCrop figures, worked out by hand.
        (480, 640, (224, 224), 1.0, (298, 224), (37, 0)),  # landscape: int(224 * 640 / 480)
        (640, 480, (224, 224), 1.0, (224, 298), (0, 37)),  # portrait
        (300, 300, (224, 224), 1.0, (224, 224), (0, 0)),  # square: a plain resize
        (480, 640, (224, 224), 0.875, (341, 256), (58, 16)),  # Resize(256) + CenterCrop(224)
        (100, 100, (224, 224), 0.875, (256, 256), (16, 16)),  # upscaling works alike
        (480, 640, (64, 32), 1.0, (64, 48), (0, 8)),  # wide input: the width needs more scale
    ],
)
def test_crop_equals_a_hand_made_resize_and_centre_crop(h, w, size, fraction, resized, offset):
    img = frame(h, w)
    tensor, tr = Preprocessor(crop_spec(size, crop_fraction=fraction))(img)
    by_hand = cv2.resize(img, resized, interpolation=cv2.INTER_LINEAR)
    (x0, y0), (mw, mh) = offset, size
    np.testing.assert_array_equal(tensor[0], by_hand[y0 : y0 + mh, x0 : x0 + mw])
    assert (tr.scale_x, tr.scale_y) == (resized[0] / w, resized[1] / h)
    assert (tr.pad_x, tr.pad_y) == (-x0, -y0)


def test_crop_matches_torchvision_resize_and_center_crop():
    """The recipe classifiers are trained with (antialias off: the device resizes bilinearly
    with OpenCV, as the trainer's presets do), within OpenCV's fixed-point rounding."""
    torch = pytest.importorskip("torch")
    transforms = pytest.importorskip("torchvision.transforms.v2")
    for h, w in [(480, 640), (640, 480), (333, 333)]:
        img = frame(h, w, seed=h)
        recipe = transforms.Compose(
            [transforms.Resize(256, antialias=False), transforms.CenterCrop(224)]
        )
        expected = recipe(torch.from_numpy(img).permute(2, 0, 1)).permute(1, 2, 0).numpy()
        tensor, _ = Preprocessor(crop_spec(crop_fraction=0.875))(img)
        assert tensor[0].shape == expected.shape
        diff = np.abs(tensor[0].astype(np.int16) - expected.astype(np.int16))
        assert diff.max() <= 1, (h, w)


def test_crop_maps_its_corners_and_contents_back_to_frame_pixels():
    img = np.zeros((480, 640, 3), np.uint8)
    img[200:280, 300:420] = 255  # a white block inside the crop, in frame pixels
    tensor, tr = Preprocessor(crop_spec())(img)
    # The crop's corners: 298 x 224 resized, 37 px cut left: x 37..261 of 298 -> of 640.
    corners = tr.to_frame(np.array([[0, 0, 224, 224]], np.float32))
    np.testing.assert_allclose(corners, [[37 * 640 / 298, 0, 261 * 640 / 298, 480]], rtol=1e-6)
    ys, xs = np.nonzero(tensor[0, :, :, 0] > 127)
    found = tr.to_frame(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32))
    np.testing.assert_allclose(found, [[300, 200, 420, 280]], atol=2.5)  # a resized pixel


def test_crop_fraction_needs_resize_crop():
    with pytest.raises(ValueError, match="crop_fraction applies to resize 'crop' only"):
        spec(resize="letterbox", crop_fraction=0.875)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        spec(resize="crop", crop_fraction=1.2)


def test_classifier_bundle_with_crop_sees_only_the_centre(tmp_path):
    """Green bands left and right, red in the centre: stretch averages them, crop sees red."""
    img = np.zeros((48, 96, 3), np.uint8)
    img[:] = (0, 255, 0)  # BGR green
    img[:, 24:72] = (0, 0, 255)  # red centre square, 48 x 48
    mean_colour_classifier(tmp_path / "m.onnx", size=32)
    base = {
        "schema": "edgesight.bundle/1", "name": "colour", "version": 1, "task": "classify",
        "labels": ["red", "green", "blue"], "model": {"file": "m.onnx", "format": "onnx"},
        "decoder": {"type": "softmax"}, "files": {"m.onnx": ""},
    }  # fmt: skip
    top = {}
    for resize in ("stretch", "crop"):
        write_manifest(tmp_path, {**base, "input": {"width": 32, "height": 32, "resize": resize}})
        bundle = load_bundle(tmp_path)
        assert json.loads((tmp_path / "manifest.json").read_text())["input"]["resize"] == resize
        predictor = Predictor(bundle, threads=1)
        try:
            top[resize] = predictor.predict(img).predictions.top(1)[0]
        finally:
            predictor.close()
    assert top["crop"][0] == 0 and top["crop"][1] > 0.99  # red, and nothing else
    assert top["stretch"][1] < top["crop"][1]  # the green bands pulled the stretched score
