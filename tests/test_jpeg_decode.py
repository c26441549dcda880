"""``train/data/jpeg.py``: every registered JPEG decoder gives the loader's image pixel for pixel
(on JPEGs of the real fixtures, at every DCT reduction, and on the inputs its simplejpeg backend
hands to OpenCV), bytes that do not decode give None, and backend names resolve or fail with one
clear line."""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
import pytest
import simplejpeg  # the dev extra installs it: the simplejpeg backend is tested wherever the tests run
from conftest import fixture_path
from PIL import Image

from mtl_data.errors import MtlDataError
from mtl_data.shards.codec import decode_image, encode_image
from mtl_data.train.data import jpeg
from mtl_data.train.data.jpeg import FACTORS, available_backends, decode_jpeg, resolve_backend

BACKENDS = list(jpeg.DECODERS)  # a backend added to the registry is tested here at once
REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def loader_image(data: bytes, factor: int) -> np.ndarray | None:
    """What the loader decodes today (``train/data/decode.py``): ``decode_image`` at full size,
    ``IMREAD_REDUCED_COLOR_<f>`` then BGR -> RGB below."""
    if factor == 1:
        return decode_image(data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED[factor])
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_rgb(*parts: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(fixture_path(*parts)), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def real_jpegs() -> dict[str, bytes]:
    """JPEGs of the real frames as the ingest writes them (quality 95), and a camera's own JPEG."""
    a2d2 = read_rgb(
        "a2d2",
        "camera_lidar_semantic",
        "20180807_145028",
        "camera",
        "cam_front_center",
        "20180807145028_camera_frontcenter_000006882.png",
    )
    rgb = {
        "kitti 1224x370": read_rgb("kitti", "object", "training", "image_2", "000000.png"),
        "a2d2 1920x1208": a2d2,
        "a2d2 512x322": cv2.resize(a2d2, (512, 322), interpolation=cv2.INTER_AREA),
        "cityscapes 256x128": read_rgb(
            "cityscapes", "mmseg_pseudo", "leftImg8bit", "val", "frankfurt", "frankfurt_000000_000294_leftImg8bit.png"
        ),
    }
    out = {name: encode_image(image, "jpg", 95) for name, image in rgb.items()}
    out["tusimple camera jpeg 1280x720"] = fixture_path("tusimple", "test_set", "clips_unlabeled", "0.jpg").read_bytes()
    return out


@pytest.fixture
def no_opencv_fallback(monkeypatch):
    """The simplejpeg backend may not hand anything to OpenCV."""

    def refuse(data, factor):
        raise AssertionError("handed to OpenCV")

    monkeypatch.setattr(jpeg, "_decode_opencv", refuse)


def test_both_backends_are_registered_and_installed_under_the_dev_extra():
    assert BACKENDS == ["opencv", "simplejpeg"]
    assert available_backends() == BACKENDS


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_decodes_the_real_jpegs_to_the_loaders_image_at_every_factor(real_jpegs, backend, factor):
    for name, data in real_jpegs.items():
        h, w = decode_image(data).shape[:2]
        image = decode_jpeg(data, factor, backend)
        assert image.shape == (math.ceil(h / factor), math.ceil(w / factor), 3), name
        assert image.dtype == np.uint8 and image.flags.c_contiguous and image.flags.writeable, name
        np.testing.assert_array_equal(image, loader_image(data, factor), err_msg=f"{backend}, {name}, 1/{factor}")


@pytest.mark.parametrize("factor", FACTORS)
def test_simplejpeg_decodes_the_real_jpegs_itself(real_jpegs, factor, no_opencv_fallback):
    # otherwise the identity above could come from the fallback to OpenCV alone
    for name, data in real_jpegs.items():
        assert decode_jpeg(data, factor, "simplejpeg").shape[2] == 3, name


def test_fast_dct_and_upsampling_would_change_pixels_which_is_why_no_backend_uses_them(real_jpegs):
    data = real_jpegs["kitti 1224x370"]
    fast = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True)
    assert not np.array_equal(fast, decode_jpeg(data, 1, "simplejpeg"))


def encodings() -> dict[str, bytes]:
    """The KITTI frame in the other JPEG layouts an encoder may write."""
    image = cv2.imread(str(fixture_path("kitti", "object", "training", "image_2", "000000.png")), cv2.IMREAD_COLOR)
    q = [cv2.IMWRITE_JPEG_QUALITY, 90]
    sampling = cv2.IMWRITE_JPEG_SAMPLING_FACTOR
    params = {
        "grey": (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), q),
        "4:4:4": (image, [*q, sampling, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
        "4:2:2": (image, [*q, sampling, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]),
        "progressive": (image, [*q, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "restart markers": (image, [*q, cv2.IMWRITE_JPEG_RST_INTERVAL, 4]),
    }
    return {name: cv2.imencode(".jpg", img, p)[1].tobytes() for name, (img, p) in params.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", sorted(encodings()))
def test_other_jpeg_layouts_decode_to_the_loaders_image(backend, layout):
    data = encodings()[layout]
    for factor in FACTORS:
        np.testing.assert_array_equal(decode_jpeg(data, factor, backend), loader_image(data, factor), err_msg=layout)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_images_decode_to_the_loaders_image_where_turbojpeg_would_not_scale_by_exactly_1_over_f(backend):
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (3, 3), (3, 5), (5, 5), (2, 5), (4, 4), (6, 6), (6, 40), (11, 3), (17, 23), (31, 9), (64, 7)]
    for h, w in sizes:
        data = encode_image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "jpg", 95)
        for factor in FACTORS:
            image = decode_jpeg(data, factor, backend)
            assert image.shape == (math.ceil(h / factor), math.ceil(w / factor), 3)
            np.testing.assert_array_equal(image, loader_image(data, factor), err_msg=f"{h}x{w} at 1/{factor}")


def test_turbojpeg_scales_by_exactly_1_over_f_unless_both_sides_are_under_8_pixels():
    # asked for the size of 1/f, TurboJPEG takes the largest k/8 scale giving it: 3x3 at 1/2
    # comes out of 5/8 (also 2x2), 5x5 at 1/4 out of 3/8, 4x4 at 1/8 out of 1/4
    inexact = [(3, 3, 2), (1, 3, 2), (5, 5, 4), (2, 5, 4), (4, 4, 8), (1, 1, 2), (1, 1, 8)]
    assert not any(jpeg._exact_scale(h, w, f) for h, w, f in inexact)
    assert all(jpeg._exact_scale(h, w, f) for h, w, f in [(3, 5, 2), (6, 6, 2), (4, 4, 4), (5, 5, 8), (1, 1, 1)])
    assert all(jpeg._exact_scale(h, w, f) for h in (7, 8, 9, 1208) for w in (8, 9, 1920) for f in FACTORS)
    # and what it decodes there is another image: why those go to OpenCV
    data = encode_image(np.random.default_rng(0).integers(0, 256, (3, 3, 3), dtype=np.uint8), "jpg", 95)
    raw = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=2, min_width=2)
    assert raw.shape == (2, 2, 3) and not np.array_equal(raw, loader_image(data, 2))


def pil_jpeg(image: np.ndarray, mode: str = "RGB", **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buf, "JPEG", quality=95, **save)
    return buf.getvalue()


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_exif_orientation_is_applied_as_opencv_applies_it(backend):
    image = np.zeros((40, 64, 3), np.uint8)
    image[:10, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = pil_jpeg(image, exif=exif.tobytes())
    for factor in FACTORS:
        decoded = decode_jpeg(data, factor, backend)
        assert decoded.shape[:2] == (math.ceil(64 / factor), math.ceil(40 / factor))  # turned, as OpenCV turns it
        np.testing.assert_array_equal(decoded, loader_image(data, factor))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cmyk_jpeg_decodes_as_opencv_decodes_it(backend):
    rng = np.random.default_rng(1)
    data = pil_jpeg(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8), "CMYK")
    assert simplejpeg.decode_jpeg_header(data)[2] in ("CMYK", "YCCK")
    for factor in FACTORS:
        np.testing.assert_array_equal(decode_jpeg(data, factor, backend), loader_image(data, factor))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bytes_that_do_not_decode_give_none(real_jpegs, backend):
    data = real_jpegs["kitti 1224x370"]
    bad = {
        "empty": b"",
        "not an image": b"no JPEG here " * 20,
        "header only": data[:200],
        "truncated": data[: len(data) // 2],
    }
    for name, raw in bad.items():
        for factor in FACTORS:
            assert decode_jpeg(raw, factor, backend) is None, f"{name} at 1/{factor}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_recoverable_corruption_decodes_as_opencv_decodes_it(real_jpegs, backend):
    # 1000 zero bytes in the entropy-coded data: libjpeg-turbo warns and OpenCV still decodes
    data = real_jpegs["kitti 1224x370"]
    damaged = data[:5000] + bytes(1000) + data[6000:]
    for factor in FACTORS:
        expected = loader_image(damaged, factor)
        assert expected is not None
        np.testing.assert_array_equal(decode_jpeg(damaged, factor, backend), expected)


def test_auto_takes_simplejpeg_when_it_is_importable(real_jpegs):
    assert resolve_backend("auto") == resolve_backend() == "simplejpeg"
    data = real_jpegs["a2d2 512x322"]
    np.testing.assert_array_equal(decode_jpeg(data, 2), decode_jpeg(data, 2, "opencv"))


def test_without_simplejpeg_auto_takes_opencv_and_asking_for_simplejpeg_says_how_to_install_it(real_jpegs, monkeypatch):
    monkeypatch.setattr(jpeg, "simplejpeg", None)
    assert available_backends() == ["opencv"]
    assert resolve_backend("auto") == "opencv"
    data = real_jpegs["a2d2 512x322"]
    np.testing.assert_array_equal(decode_jpeg(data, 4), loader_image(data, 4))
    with pytest.raises(MtlDataError) as err:
        decode_jpeg(data, 1, "simplejpeg")
    message = str(err.value)
    assert "\n" not in message
    assert "'simplejpeg' is not installed" in message and "installed: opencv" in message
    assert "pip install simplejpeg" in message and "mtl-data[fast]" in message


def test_an_unknown_backend_is_one_line_naming_the_choices(real_jpegs):
    with pytest.raises(MtlDataError) as err:
        decode_jpeg(real_jpegs["a2d2 512x322"], 1, "turbojpeg")
    message = str(err.value)
    assert "\n" not in message
    assert "'turbojpeg'" in message and "auto, opencv, simplejpeg" in message


def test_a_factor_other_than_1_2_4_8_is_refused(real_jpegs):
    with pytest.raises(ValueError, match="factor 3 is not one of"):
        decode_jpeg(real_jpegs["a2d2 512x322"], 3)
