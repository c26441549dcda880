"""Synthetic GTSRB dataset in the official (INI) layout and file formats.

Layout written under ``out_dir``::

    GTSRB/Final_Training/Images/<class 5>/GT-<class 5>.csv    Filename;Width;...;ClassId, CRLF
    GTSRB/Final_Training/Images/<class 5>/<track 5>_<index 5>.ppm   PPM (P6) RGB
    GTSRB/Final_Test/Images/<5 digits>.ppm                    test images, classes shuffled
    GTSRB/Final_Test/Images/GT-final_test.test.csv            the same columns without ClassId
    GT-final_test.csv                                          the test rows with ClassId

Content: ``len(CLASSES)`` classes x ``TRACKS_PER_CLASS`` tracks x ``FRAMES_PER_TRACK`` frames
(track numbers restart at 00000 in every class folder, as in GTSRB), plus ``TEST_PER_CLASS``
test images per class. Each image is a crop around one sign, as GTSRB's are: a textured,
grey-ish background with a margin of 10% of the sign size (at least 5 px, a pixel more on
some sides) around a drawn sign whose shape and colours identify its class (red ring, yield
triangle, stop octagon, no-entry bar, blue keep-right disc). The sign fills exactly the ROI
written in the CSV. Along a track the same sign grows frame by frame (the vehicle approaches)
under the track's own lighting and background, so images of one track are near-duplicates:
what the track-grouped validation split exists for.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mtl_data.files import write_atomic
from mtl_data.synth.registry import register_synth

#: class ids drawn (Speed limit 30, Yield, Stop, No entry, Keep right).
CLASSES = (1, 13, 14, 17, 38)
TRACKS_PER_CLASS = 3
FRAMES_PER_TRACK = 5
TEST_PER_CLASS = 2
HEADER = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")

# RGB colours of sign paint (before the lighting factor)
_RED = np.array([200.0, 30.0, 35.0])
_BLUE = np.array([30.0, 75.0, 190.0])
_WHITE = np.array([235.0, 235.0, 230.0])
_BLACK = np.array([25.0, 25.0, 25.0])


def _csv(rows: list[tuple], columns: tuple[str, ...]) -> bytes:
    """A GTSRB CSV: ``;``-separated, CRLF line ends, a CRLF after the last row too."""
    lines = [";".join(columns)] + [";".join(str(v) for v in row) for row in rows]
    return "".join(line + "\r\n" for line in lines).encode()


def _sign_layers(class_id: int, nu: np.ndarray, nv: np.ndarray, slack: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mask, colour) layers of one sign, painted in order.

    ``nu``, ``nv`` are pixel centres mapped to [-1, 1] over the ROI (x right, y down); ``slack``
    (about one pixel in those units) makes the outline reach the ROI's edge pixels.
    """
    box = (np.abs(nu) <= 1) & (np.abs(nv) <= 1)
    disc = box & (nu**2 + nv**2 <= 1 + slack)

    def triangle(u, v):  # inverted triangle: top edge at v = -1, apex at v = +1
        return (v >= -1) & (v <= 1) & (np.abs(u) <= (1 - v) / 2 + slack)

    def octagon(u, v, scale=1.0):
        u, v = u / scale, v / scale
        return (np.abs(u) <= 1) & (np.abs(v) <= 1) & (np.abs(u) + np.abs(v) <= 1.42 + slack)

    if class_id == 1:  # Speed limit (30km/h): red ring, white face, dark "30"
        three = (np.abs(nu + 0.25) < 0.15) & (np.abs(nv) < 0.36)
        zero = (np.abs(nu - 0.22) < 0.17) & (np.abs(nv) < 0.36) & ~((np.abs(nu - 0.22) < 0.07) & (np.abs(nv) < 0.22))
        return [(disc, _RED), (nu**2 + nv**2 <= 0.72**2, _WHITE), (three | zero, _BLACK)]
    if class_id == 13:  # Yield: red-bordered inverted triangle, white inside
        c = -1.0 / 3.0  # centroid height of the triangle
        inner = triangle(nu / 0.55, (nv - c) / 0.55 + c)
        return [(box & triangle(nu, nv), _RED), (inner, _WHITE)]
    if class_id == 14:  # Stop: red octagon, white rim inside the edge, white letters
        rim = octagon(nu, nv, 0.88) & ~octagon(nu, nv, 0.80)
        letters = np.zeros_like(box)
        for centre in (-0.48, -0.16, 0.16, 0.48):
            letters |= (np.abs(nu - centre) < 0.1) & (np.abs(nv) < 0.2)
        return [(box & octagon(nu, nv), _RED), (rim | letters, _WHITE)]
    if class_id == 17:  # No entry: red disc, white horizontal bar
        return [(disc, _RED), ((np.abs(nv) <= 0.2) & (np.abs(nu) <= 0.68), _WHITE)]
    if class_id == 38:  # Keep right: blue disc, white arrow pointing down-right
        along, across = (nu + nv) / 2, np.abs(nu - nv)
        shaft = (across < 0.22) & (along > -0.5) & (along < 0.2)
        head = (along >= 0.1) & (along <= 0.55) & (across <= 1.1 * (0.55 - along))
        return [(disc, _BLUE), (shaft | head, _WHITE)]
    raise ValueError(f"no drawing for class {class_id}")


def _render(
    class_id: int,
    size: tuple[int, int],
    roi: tuple[int, int, int, int],
    light: float,
    background: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB crop: textured background and the sign filling ``roi`` (inclusive px)."""
    height, width = size
    x1, y1, x2, y2 = roi
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rx, ry = (x2 - x1) / 2, (y2 - y1) / 2
    nu, nv = (u - (x1 + x2) / 2) / rx, (v - (y1 + y2) / 2) / ry
    # Texture in brightness only: the background stays grey-ish, the sign paint is saturated.
    coarse = rng.normal(0.0, 18.0, (max(2, height // 6), max(2, width // 6)))
    texture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    image = background[None, None, :] + texture[..., None]
    for mask, colour in _sign_layers(class_id, nu, nv, slack=1.0 / min(rx, ry)):
        image[mask] = colour
    image = image * light + rng.normal(0.0, 3.0, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _crop(rng: np.random.Generator, sign_px: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Image size (H, W) and ROI of a crop around a sign of about ``sign_px`` pixels."""
    roi_w, roi_h = sign_px, sign_px + int(rng.integers(-1, 2))
    margin = max(5, round(0.1 * sign_px))
    left, top = margin + int(rng.integers(0, 2)), margin + int(rng.integers(0, 2))
    right, bottom = margin - 1 + int(rng.integers(0, 2)), margin - 1 + int(rng.integers(0, 2))
    roi = (left, top, left + roi_w - 1, top + roi_h - 1)
    return (top + roi_h + bottom, left + roi_w + right), roi


def _look(rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """Lighting factor and background colour of one track (one physical sign, one moment)."""
    grey = rng.uniform(70.0, 150.0)
    return float(rng.uniform(0.6, 1.1)), grey + rng.uniform(-10.0, 10.0, 3)


def _ppm(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".ppm", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV writes any uint8 RGB image as PPM
        raise ValueError("PPM encoding failed")
    return buf.tobytes()


def _row(filename: str, size: tuple[int, int], roi: tuple[int, int, int, int]) -> tuple:
    height, width = size
    return (filename, width, height, *roi)


@register_synth("gtsrb")
def synth_gtsrb(out_dir: Path, *, seed: int = 0) -> None:
    """Write a tiny GTSRB dataset in the official layout under ``out_dir``.

    Args:
        out_dir: RAW_ROOT; ``GTSRB/`` and ``GT-final_test.csv`` are created in it.
        seed: the same seed gives byte-identical files.
    """
    out_dir = Path(out_dir)
    train_dir = out_dir / "GTSRB" / "Final_Training" / "Images"
    for class_id in CLASSES:
        folder = train_dir / f"{class_id:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for track in range(TRACKS_PER_CLASS):
            # (seed, class, track) as entropy: tracks never share a random stream.
            track_rng = np.random.default_rng([seed, class_id, track])
            light, background = _look(track_rng)
            start, growth = int(track_rng.integers(16, 27)), int(track_rng.integers(2, 5))
            for index in range(FRAMES_PER_TRACK):
                rng = np.random.default_rng([seed, class_id, track, index + 1])
                size, roi = _crop(rng, start + growth * index)
                frame_light = light * rng.uniform(0.95, 1.05)
                name = f"{track:05d}_{index:05d}.ppm"
                write_atomic(folder / name, _ppm(_render(class_id, size, roi, frame_light, background, rng)))
                rows.append((*_row(name, size, roi), class_id))
        write_atomic(folder / f"GT-{class_id:05d}.csv", _csv(rows, HEADER))

    test_dir = out_dir / "GTSRB" / "Final_Test" / "Images"
    test_dir.mkdir(parents=True, exist_ok=True)
    classes = [c for c in CLASSES for _ in range(TEST_PER_CLASS)]
    order = np.random.default_rng([seed, 10_000]).permutation(len(classes))
    rows = []
    for number, pick in enumerate(order):
        class_id = classes[pick]
        rng = np.random.default_rng([seed, 10_001, number])
        light, background = _look(rng)
        size, roi = _crop(rng, int(rng.integers(16, 40)))
        name = f"{number:05d}.ppm"
        write_atomic(test_dir / name, _ppm(_render(class_id, size, roi, light, background, rng)))
        rows.append((*_row(name, size, roi), class_id))
    write_atomic(test_dir / "GT-final_test.test.csv", _csv([r[:-1] for r in rows], HEADER[:-1]))
    write_atomic(out_dir / "GT-final_test.csv", _csv(rows, HEADER))
