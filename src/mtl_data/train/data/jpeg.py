"""JPEG decoding for the training loader: a small registry of decoders, chosen at run time.

==============  ================================================================================
``opencv``      ``cv2.imdecode``: ``IMREAD_COLOR_RGB`` at full size, ``IMREAD_REDUCED_COLOR_<f>``
                (1/2, 1/4, 1/8 in the DCT domain) then BGR -> RGB; the reference, always there
``simplejpeg``  libjpeg-turbo's TurboJPEG API through the ``simplejpeg`` wheel (optional:
                ``pip install simplejpeg``, or the ``fast`` extra ``pip install 'mtl-data[fast]'``)
``auto``        ``simplejpeg`` when it is importable, else ``opencv``
==============  ================================================================================

**The output is the same for every backend**: ``decode_jpeg(data, f)`` is the
(ceil(h / f), ceil(w / f), 3) uint8 RGB image that ``cv2.imdecode`` gives, or None where
OpenCV does not decode the bytes. ``simplejpeg`` decodes with libjpeg-turbo's defaults, the
ones OpenCV uses (accurate integer IDCT ``JDCT_ISLOW``, "fancy" chroma upsampling, DCT scaling
by exactly 1/f), and was measured bit-identical to OpenCV at factors 1, 2, 4 and 8 on JPEGs of
the real KITTI, A2D2 and Cityscapes frames written as the ingest writes them (quality 95, 4:2:0)
and on an original TuSimple camera JPEG (opencv-python 5.1.0, whose libjpeg-turbo is 3.1.2;
simplejpeg 1.9.0, libjpeg-turbo 3.1.2). ``tests/test_jpeg_decode.py`` checks exactly that
identity, so a pair of wheels that ever disagree fails the tests instead of changing training
images. The identity holds while OpenCV's JPEG codec is libjpeg-turbo (the opencv-python
wheels bundle it); an OpenCV built on IJG libjpeg 9 scales and upsamples differently.

simplejpeg's ``fastdct`` / ``fastupsample`` are **not** used: they change pixels (measured up to
68 grey levels at full size and 4 at 1/2; none at 1/4 and 1/8, where the reduced IDCT does the
chroma scaling) for 5-19% over the accurate decode at full size and 2-4% at 1/2.

Where ``simplejpeg`` would not give OpenCV's image, the ``simplejpeg`` backend hands the bytes to
``opencv`` instead (so the contract above holds for every input, not only well-formed ones):

* bytes libjpeg-turbo warns about or rejects (truncated, corrupt, not a JPEG): simplejpeg runs
  with ``strict=True`` and OpenCV gives the verdict (it fails a truncated file, decodes one
  with extraneous bytes), so a corrupt sample costs two decode attempts;
* an EXIF APP1 segment: OpenCV turns the image by its EXIF orientation, simplejpeg does not;
* a CMYK / YCCK / RGB-coded JPEG: simplejpeg converts CMYK to RGB in its own code, not
  libjpeg's (it agreed with OpenCV on the one CMYK JPEG of the tests, but nothing promises it),
  so only YCbCr and greyscale JPEGs are decoded by simplejpeg;
* an image too small for TurboJPEG to decode at exactly 1/f: asked for the size of 1/f, it
  decodes at the largest of its k/8 scales that gives that size, which for images under 8
  pixels on both sides is above 1/f (``_exact_scale``).

Measured speed (``bench/jpeg.py``, BENCHMARKS.md; CPU time, one thread, opencv / simplejpeg
paired round by round, geometric mean over KITTI, A2D2, Cityscapes and a 512-px frame): 1.09-1.10x
at full size, 1.07x at 1/2, 1.01-1.03x at 1/4 and 1.02x at 1/8; no image and factor had a median
below 1.00. Both wheels run the same libjpeg-turbo 3.1.2, so the difference is in the code around
it; at 1/4 and 1/8 the Huffman decoding, which does not shrink with the output (1/8 still costs
about half of the full-size decode), is most of the time. "auto" therefore takes simplejpeg
whenever it is importable.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from mtl_data.errors import MtlDataError

try:  # optional: the `fast` extra
    import simplejpeg
except ImportError:  # pragma: no cover - exercised by monkeypatching `simplejpeg` to None
    simplejpeg = None

#: DCT-domain reductions a JPEG can be decoded at (``transforms.reduced_decode_factor``).
FACTORS = (1, 2, 4, 8)
#: what to run to get the optional backend
INSTALL_HINT = "pip install simplejpeg (or the extra: pip install 'mtl-data[fast]')"

# cv2.imdecode flags: RGB straight from libjpeg-turbo at full size (as shards.codec.decode_image);
# OpenCV has no RGB variant of the reduced flags, so those decode BGR and convert.
_OPENCV_FLAGS = {
    1: cv2.IMREAD_COLOR_RGB,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# JPEG colour spaces simplejpeg decodes to RGB exactly as OpenCV does (decode_jpeg_header's names)
_SIMPLE_COLOURSPACES = frozenset({"YCbCr", "Gray"})
_EXIF = b"Exif\x00\x00"


def _decode_opencv(data: bytes, factor: int) -> np.ndarray | None:
    """``cv2.imdecode`` at 1/``factor``, RGB; None where OpenCV does not decode ``data``."""
    if not data:  # cv2.imdecode asserts on an empty buffer
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _OPENCV_FLAGS[factor])  # (h/f, w/f, 3)
    if image is not None and factor > 1:
        cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)
    return image


def _decode_simplejpeg(data: bytes, factor: int) -> np.ndarray | None:
    """simplejpeg at exactly 1/``factor``, RGB; ``_decode_opencv`` for what it would decode
    differently (see the module docstring)."""
    if not data or _has_exif(data):
        return _decode_opencv(data, factor)
    try:
        h, w, colourspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return _decode_opencv(data, factor)
    if colourspace not in _SIMPLE_COLOURSPACES or not _exact_scale(h, w, factor):
        return _decode_opencv(data, factor)
    # min_height / min_width ask for the size of 1/f (`_exact_scale` checked that TurboJPEG then
    # decodes at 1/f); nothing asked = no scaling, at full size.
    size = {} if factor == 1 else {"min_height": math.ceil(h / factor), "min_width": math.ceil(w / factor)}
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **size)  # (h/f, w/f, 3)
    except ValueError:  # a libjpeg-turbo warning or error: OpenCV decides (it decodes some of these)
        return _decode_opencv(data, factor)


def _exact_scale(h: int, w: int, factor: int) -> bool:
    """Whether simplejpeg asked for ``min_height=ceil(h/f), min_width=ceil(w/f)`` decodes at 1/f.

    simplejpeg turns the minimums into an output size, which is exactly ``(ceil(h/f), ceil(w/f))``
    (its smallest k/8 scale reaching them is at most 1/f); TurboJPEG's ``tjDecompress2`` then
    decodes at the *largest* of its scales (k/8) whose size fits in that output size. That is
    1/f unless the next larger scale, (8/f + 1)/8, rounds up to the same size on both sides,
    which only sides under 8 pixels do (d/f + d/8 >= d/f + 1 for d >= 8): 3x3 at 1/2 is decoded
    at 5/8, a different image.
    """
    if factor == 1:  # full size asks for no scaling
        return True
    k = 8 // factor + 1
    return math.ceil(h * k / 8) != math.ceil(h / factor) or math.ceil(w * k / 8) != math.ceil(w / factor)


def _has_exif(data: bytes) -> bool:
    """Whether a marker segment before the first scan is an EXIF APP1 (OpenCV applies its
    orientation). Malformed headers count as EXIF, so that OpenCV decides about them too."""
    if data[:2] != b"\xff\xd8":
        return False  # not a JPEG: simplejpeg's header read rejects it
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return True
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no more header segments
            return False
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # segments without a length
            i += 2
            continue
        if marker == 0xE1 and data[i + 4 : i + 10] == _EXIF:
            return True
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return False


#: backend name -> decoder(data, factor); "auto" is not a backend but a choice among them.
DECODERS: dict[str, Callable[[bytes, int], np.ndarray | None]] = {
    "opencv": _decode_opencv,
    "simplejpeg": _decode_simplejpeg,
}


def available_backends() -> list[str]:
    """The registered backends that can run here, in registry order (``opencv`` always)."""
    return [name for name in DECODERS if name != "simplejpeg" or simplejpeg is not None]


def resolve_backend(name: str = "auto") -> str:
    """The backend ``name`` stands for: itself, or for ``"auto"`` simplejpeg when it is
    importable, else opencv.

    Raises:
        MtlDataError: ``name`` is not ``auto`` or a registered backend, or is not installed.
    """
    if name == "auto":
        return "simplejpeg" if simplejpeg is not None else "opencv"
    available = available_backends()
    if name not in DECODERS:
        raise MtlDataError(
            f"unknown JPEG decoder {name!r}: expected one of auto, {', '.join(DECODERS)} "
            f"(installed: {', '.join(available)})"
        )
    if name not in available:
        raise MtlDataError(
            f"JPEG decoder {name!r} is not installed (installed: {', '.join(available)}): {INSTALL_HINT}, "
            "or choose 'auto'"
        )
    return name


def decode_jpeg(data: bytes, factor: int = 1, backend: str = "auto") -> np.ndarray | None:
    """Decode JPEG bytes at 1/``factor`` of their size, in the DCT domain, to RGB.

    Args:
        data: the JPEG file's bytes.
        factor: 1, 2, 4 or 8 (``transforms.reduced_decode_factor``).
        backend: ``auto``, ``opencv`` or ``simplejpeg`` (``resolve_backend``).

    Returns:
        (ceil(h / factor), ceil(w / factor), 3) uint8 RGB, C-contiguous and writable, the same
        pixels for every backend; None when the bytes do not decode (empty, corrupt, truncated).

    Raises:
        MtlDataError: an unknown or uninstalled ``backend``.
        ValueError: ``factor`` is not 1, 2, 4 or 8.
    """
    if factor not in FACTORS:
        raise ValueError(f"JPEG decode factor {factor} is not one of {FACTORS}")
    return DECODERS[resolve_backend(backend)](data, factor)
