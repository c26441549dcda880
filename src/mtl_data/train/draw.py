"""Drawing helpers of the task pictures (``Task.draw``): class colours, blending, boxes, lines, captions.

numpy and OpenCV only (no torch, no matplotlib), so a picture can be drawn wherever predictions
can be read. Contracts shared by every drawing function here:

* the image is an (H, W, 3) uint8 **RGB** array (the stored sample's ``image``); the result is a
  new array of the same shape and dtype, and the input is never modified;
* coordinates are pixels in the project's pixel-centre convention (integer = pixel centre), which
  is OpenCV's, so they are drawn as given, with sub-pixel precision (``cv2``'s ``shift``);
  non-finite coordinates are never drawn, and lines are clipped to the image before they reach
  OpenCV (a projected 3D corner just in front of the camera can lie millions of pixels away);
* lines and text are anti-aliased, and their thickness and size follow the image's size
  (``line_thickness``, ``text_scale``), so a drawing keeps its proportions from a 30 px GTSRB
  crop to a 1920 px A2D2 frame once both are shown at the same width (text has a floor,
  ``MIN_TEXT_SCALE``: on the smallest crops a caption covers much of the picture);
* everything is deterministic: the same arguments give the same pixels.

Colours: ``CITYSCAPES_COLOURS`` are the colours of the 19 Cityscapes train classes
(cityscapesScripts, ``helpers/labels.py``), by class name, so unified seg ids look as in every
Cityscapes figure; any other class takes ``distinct_colour`` of its id (golden-ratio hues), which
detection boxes and lanes use throughout (the Cityscapes vehicle colours are dark blues that
vanish on a dark road).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import cv2
import numpy as np

#: the 19 Cityscapes train classes' colours, RGB, by name (cityscapesScripts ``helpers/labels.py``).
CITYSCAPES_COLOURS: dict[str, tuple[int, int, int]] = {
    "road": (128, 64, 128),
    "sidewalk": (244, 35, 232),
    "building": (70, 70, 70),
    "wall": (102, 102, 156),
    "fence": (190, 153, 153),
    "pole": (153, 153, 153),
    "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0),
    "vegetation": (107, 142, 35),
    "terrain": (152, 251, 152),
    "sky": (70, 130, 180),
    "person": (220, 20, 60),
    "rider": (255, 0, 0),
    "car": (0, 0, 142),
    "truck": (0, 0, 70),
    "bus": (0, 60, 100),
    "train": (0, 80, 100),
    "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
}

#: bits of sub-pixel precision of the coordinates handed to OpenCV.
SHIFT = 4
#: OpenCV's font of every text here.
FONT = cv2.FONT_HERSHEY_SIMPLEX
#: the smallest text scale: below it Hershey glyphs are unreadable even when enlarged.
MIN_TEXT_SCALE = 0.25
#: the caption band's darkening (share of black blended over the image under the text).
CAPTION_ALPHA = 0.6
#: ``colorize_depth``'s default near end of the colour scale, metres.
DEPTH_NEAR_M = 1.0

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618..., the hue step of distinct_colour
# the largest |coordinate| that survives the fixed-point shift in an int32 (with a margin)
_SAFE = float(2 ** (31 - SHIFT - 1))


# ---- colours -----------------------------------------------------------------------------------


def distinct_colour(index: int) -> tuple[int, int, int]:
    """A bright RGB colour for a non-negative id, different from its neighbours' and fixed.

    Hues step by the golden ratio (consecutive ids are far apart on the colour wheel, and no two
    of the first 900 coincide); every second round of ten ids is less saturated, so ids ten
    apart differ even where their hues come close.
    """
    index = int(index)
    hue = (0.05 + index * _GOLDEN) % 1.0
    saturation = 0.85 if (index // 10) % 2 == 0 else 0.55
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def distinct_colours(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """(N, 3) uint8: ``distinct_colour`` of each id."""
    return np.array([distinct_colour(i) for i in np.asarray(ids).reshape(-1).tolist()], dtype=np.uint8).reshape(-1, 3)


def class_colours(names: Sequence[str]) -> np.ndarray:
    """(C, 3) uint8 colour of each class, id = position: the Cityscapes colour of its name, else
    ``distinct_colour`` of its id."""
    return np.array(
        [CITYSCAPES_COLOURS.get(name, distinct_colour(i)) for i, name in enumerate(names)], dtype=np.uint8
    ).reshape(-1, 3)


def class_name(names: Sequence[str], index: int) -> str:
    """The name of class ``index``, or ``"class <index>"`` for an id outside the table."""
    index = int(index)
    return names[index] if 0 <= index < len(names) else f"class {index}"


def colorize_depth(depth_m: np.ndarray, max_m: float, min_m: float = DEPTH_NEAR_M) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 RGB, OpenCV's TURBO colour map on log depth.

    ``min_m`` and nearer is red, ``max_m`` and farther is dark blue, and equal depth ratios are
    equal steps of the map (log depth: what the depth task's loss and metrics measure; the scale
    is absolute, so one colour is one distance in every picture). Pixels without a depth
    (``<= 0`` or not finite, the KITTI format's 0) are black, which TURBO never is.

    Raises:
        ValueError: ``depth_m`` is not 2-D, or not ``0 < min_m < max_m``.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    if not 0 < min_m < max_m:
        raise ValueError(f"need 0 < min_m < max_m, got {min_m}, {max_m}")
    valid = np.isfinite(depth) & (depth > 0)  # (H, W)
    with np.errstate(divide="ignore", invalid="ignore"):
        near = 1.0 - np.log(np.where(valid, depth, max_m) / min_m) / math.log(max_m / min_m)  # (H, W) 1 = near
    index = np.rint(np.clip(near, 0.0, 1.0) * 255).astype(np.uint8)  # (H, W)
    rgb = cv2.cvtColor(cv2.applyColorMap(index, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)  # applyColorMap gives BGR
    rgb[~valid] = 0
    return rgb


# ---- sizes ---------------------------------------------------------------------------------------


def line_thickness(shape: Sequence[int]) -> int:
    """Line width in px for an image of ``shape`` (H, W, ...): 1 up to ~750 px, 4 at 1920."""
    return max(1, round(max(shape[0], shape[1]) / 500))


def text_scale(shape: Sequence[int]) -> float:
    """OpenCV font scale for an image of ``shape``: capitals ~1/50 of the longer side high (~24 px
    on a 1224 px KITTI frame, ~37 px on a 1920 px A2D2 one), never below ``MIN_TEXT_SCALE``."""
    return max(MIN_TEXT_SCALE, max(shape[0], shape[1]) / 1400)


def _text_thickness(scale: float) -> int:
    return max(1, round(scale * 1.3))


# ---- blending ------------------------------------------------------------------------------------


def _checked(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"an image to draw on is (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
    return image


def blend(
    image: np.ndarray, colour_map: np.ndarray | Sequence[int], mask: np.ndarray | None = None, alpha: float = 0.5
) -> np.ndarray:
    """``(1 - alpha) image + alpha colour_map`` on the pixels of ``mask``, the image elsewhere.

    Args:
        image: (H, W, 3) uint8 RGB.
        colour_map: (H, W, 3) uint8 colours, or one (3,) colour for every pixel.
        mask: (H, W) bool, the pixels to blend; None = all.
        alpha: weight of the colour, in [0, 1].

    Returns:
        (H, W, 3) uint8, a new array (rounded to the nearest value).

    Raises:
        ValueError: shapes that do not fit, or ``alpha`` outside [0, 1].
    """
    image = _checked(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colour = np.broadcast_to(np.asarray(colour_map, dtype=np.uint8), image.shape)
    out = image.copy()
    if mask is None:
        mask = np.ones(image.shape[:2], dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask is {mask.shape}, the image {image.shape[:2]}")
    mixed = (1.0 - alpha) * image[mask].astype(np.float32) + alpha * colour[mask].astype(np.float32)  # (n, 3)
    out[mask] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


# ---- lines ---------------------------------------------------------------------------------------


def clip_segments(
    start: np.ndarray, end: np.ndarray, low: Sequence[float], high: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parts of segments inside the rectangle ``[low, high]`` (Liang-Barsky).

    Args:
        start, end: (N, 2) ``[x, y]`` ends of each segment.
        low, high: (2,) corners of the rectangle, ``[x_min, y_min]`` and ``[x_max, y_max]``.

    Returns:
        ``(start, end, keep)``: (N, 2) clipped ends, and (N,) bool, whether segment i has a part
        inside (a segment with a non-finite end has none); the ends of the others are meaningless.
    """
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    d = end - start  # (N, 2)
    t0, t1 = np.zeros(len(start)), np.ones(len(start))
    keep = np.isfinite(start).all(axis=1) & np.isfinite(end).all(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in (0, 1):
            # inside on this axis: -d t <= start - low and d t <= high - start
            for p, q in ((-d[:, axis], start[:, axis] - low[axis]), (d[:, axis], high[axis] - start[:, axis])):
                keep &= ~((p == 0) & (q < 0))  # parallel to the edge and outside it
                r = q / p
                t0 = np.where(p < 0, np.maximum(t0, r), t0)
                t1 = np.where(p > 0, np.minimum(t1, r), t1)
    keep &= t0 <= t1
    return start + t0[:, None] * d, start + t1[:, None] * d, keep


def _fixed(points: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> OpenCV's fixed point (``SHIFT`` bits), int32."""
    return np.rint(np.clip(points, -_SAFE, _SAFE) * (1 << SHIFT)).astype(np.int32)


def _draw_segments_inplace(out: np.ndarray, segments: np.ndarray, colours: np.ndarray, thickness: int) -> None:
    h, w = out.shape[:2]
    margin = float(thickness + 2)  # a line just outside the image still shows its edge
    low, high = np.array([-margin, -margin]), np.array([w - 1 + margin, h - 1 + margin])
    start, end, keep = clip_segments(segments[:, 0], segments[:, 1], low, high)
    for a, b, colour in zip(_fixed(start[keep]), _fixed(end[keep]), colours[keep]):
        cv2.line(
            out, tuple(a.tolist()), tuple(b.tolist()), tuple(int(c) for c in colour), thickness, cv2.LINE_AA, SHIFT
        )


def draw_segments(
    image: np.ndarray, segments: np.ndarray, colours: np.ndarray | Sequence[int], thickness: int | None = None
) -> np.ndarray:
    """Straight segments over the image.

    Args:
        image: (H, W, 3) uint8 RGB.
        segments: (N, 2, 2) ``[[x0, y0], [x1, y1]]`` px; a segment with a non-finite end is skipped.
        colours: (N, 3) RGB per segment, or one (3,) colour.
        thickness: px; None = ``line_thickness`` of the image.

    Returns:
        A new (H, W, 3) uint8 array.
    """
    out = _checked(image).copy()
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2, 2)
    colours = np.broadcast_to(np.asarray(colours, dtype=np.int64).reshape(-1, 3), (len(segments), 3))
    _draw_segments_inplace(out, segments, colours, line_thickness(out.shape) if thickness is None else thickness)
    return out


def _polyline_segments(points: np.ndarray, closed: bool) -> np.ndarray:
    """(N, 2) points -> (M, 2, 2) segments between consecutive finite points (a non-finite point
    breaks the line)."""
    if closed and len(points) > 2:
        points = np.vstack([points, points[:1]])
    segments = np.stack([points[:-1], points[1:]], axis=1) if len(points) > 1 else np.zeros((0, 2, 2))
    return segments[np.isfinite(segments).all(axis=(1, 2))]


def draw_polyline(
    image: np.ndarray, points: np.ndarray, colour: Sequence[int], closed: bool = False, thickness: int | None = None
) -> np.ndarray:
    """A polyline through ``points`` (N, 2) ``[x, y]`` px; a non-finite point breaks the line
    there (a lane without a point on a row). ``closed`` joins the last point to the first.

    Returns:
        A new (H, W, 3) uint8 array.
    """
    segments = _polyline_segments(np.asarray(points, dtype=np.float64).reshape(-1, 2), closed)
    return draw_segments(image, segments, colour, thickness)


# ---- text ----------------------------------------------------------------------------------------


def _ink(colour: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``colour`` (Rec. 601 luma)."""
    r, g, b = (int(c) for c in colour)
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _tag_size(text: str, scale: float) -> tuple[int, int, int, int]:
    """(width, height, padding, baseline) px of the tag ``_label_inplace`` draws for ``text``."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, _text_thickness(scale))
    pad = max(1, round(th * 0.25))
    return tw + 2 * pad, th + base + 2 * pad, pad, base


def _label_inplace(
    out: np.ndarray, text: str, anchor: tuple[float, float], colour: Sequence[int], scale: float
) -> None:
    """A filled tag with ``text`` whose bottom-left corner is at ``anchor``, moved into the image."""
    h, w = out.shape[:2]
    box_w, box_h, pad, base = _tag_size(text, scale)
    x = int(min(max(round(anchor[0]), 0), max(w - box_w, 0)))
    y = int(min(max(round(anchor[1]), box_h), h))  # the tag's bottom edge
    colour = tuple(int(c) for c in colour)
    cv2.rectangle(out, (x, y - box_h), (x + box_w - 1, y - 1), colour, cv2.FILLED)
    cv2.putText(out, text, (x + pad, y - pad - base), FONT, scale, _ink(colour), _text_thickness(scale), cv2.LINE_AA)


def draw_labels(image: np.ndarray, anchors: np.ndarray, texts: Sequence[str], colours: np.ndarray) -> np.ndarray:
    """Text tags (filled with the colour, black or white text): tag i's bottom-left corner at
    ``anchors[i]`` (x, y) px, moved inside the image where it would leave it. Later tags cover
    earlier ones. Text size follows ``text_scale``.

    Returns:
        A new (H, W, 3) uint8 array.
    """
    out = _checked(image).copy()
    scale = text_scale(out.shape)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    colours = np.asarray(colours).reshape(-1, 3)
    for anchor, text, colour in zip(anchors, texts, colours):
        if np.isfinite(anchor).all():
            _label_inplace(out, text, (float(anchor[0]), float(anchor[1])), colour, scale)
    return out


def draw_boxes(
    image: np.ndarray, boxes: np.ndarray, labels: Sequence[str], colours: np.ndarray, scores: np.ndarray | None = None
) -> np.ndarray:
    """Axis-aligned boxes with a tag ``"<label> <score>"`` (``"<label>"`` without scores) above
    each (inside the box's top where there is no room above).

    Args:
        image: (H, W, 3) uint8 RGB.
        boxes: (N, 4) ``[x1, y1, x2, y2]`` px (pixel centres of the corner pixels).
        labels: N texts (class names).
        colours: (N, 3) RGB per box.
        scores: (N,) shown with two decimals, or None. With scores, boxes are drawn from the
            lowest score up, so the most confident box and tag lie on top.

    Returns:
        A new (H, W, 3) uint8 array; the outline is ``line_thickness`` px wide, centred on the
        box's edges.
    """
    out = _checked(image).copy()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    colours = np.asarray(colours).reshape(-1, 3)
    if len(labels) != len(boxes) or len(colours) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes need as many labels and colours, got {len(labels)} and {len(colours)}")
    texts = list(labels)
    order = np.arange(len(boxes))
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        texts = [f"{label} {score:.2f}" for label, score in zip(labels, scores)]
        order = np.argsort(scores, kind="stable")
    thickness = line_thickness(out.shape)
    scale = text_scale(out.shape)
    for i in order:
        box = boxes[i]
        if not np.isfinite(box).all():
            continue
        (x1, y1), (x2, y2) = _fixed(box[:2]), _fixed(box[2:])
        colour = tuple(int(c) for c in colours[i])
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), colour, thickness, cv2.LINE_AA, SHIFT)
        tag_h = _tag_size(texts[i], scale)[1]
        above = box[1] - thickness / 2  # the tag's bottom on the outline's outer edge
        anchor_y = above if above >= tag_h else box[1] + thickness / 2 + tag_h  # no room: inside, below the edge
        _label_inplace(out, texts[i], (box[0] - thickness / 2, anchor_y), colour, scale)
    return out


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """``text`` in white on a darkened band across the top of the image (the picture stays its size).

    Words wrap onto more lines where the text is wider than the image; the text shrinks (down
    to ``MIN_TEXT_SCALE``) where a single word is. The band darkens the image under it
    (``CAPTION_ALPHA``) instead of hiding it.

    Returns:
        A new (H, W, 3) uint8 array.
    """
    image = _checked(image)
    h, w = image.shape[:2]
    scale = text_scale(image.shape)
    thickness = _text_thickness(scale)
    pad = max(2, round(4 * scale))
    room = max(1, w - 2 * pad)
    widest = max((cv2.getTextSize(word, FONT, scale, thickness)[0][0] for word in text.split()), default=0)
    if widest > room:  # one word is wider than the image: shrink the text
        scale = max(MIN_TEXT_SCALE, scale * room / widest)
        thickness = _text_thickness(scale)
    lines: list[str] = []
    for word in text.split():
        wider = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(wider, FONT, scale, thickness)[0][0] <= room:
            lines[-1] = wider
        else:
            lines.append(word)
    (_, line_h), base = cv2.getTextSize("Ag", FONT, scale, thickness)
    step = line_h + base + pad
    band = np.zeros((h, w), dtype=bool)
    band[: min(h, pad + step * len(lines))] = True
    out = blend(image, (0, 0, 0), band, CAPTION_ALPHA)
    for n, line in enumerate(lines):
        cv2.putText(out, line, (pad, pad + n * step + line_h), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


# ---- a steering wheel ----------------------------------------------------------------------------

#: the accent colour of ``draw_wheel``'s arc and spoke (amber: visible on road, sky and foliage).
WHEEL_COLOUR = (255, 190, 0)


def draw_wheel(image: np.ndarray, angle_deg: float, colour: Sequence[int] = WHEEL_COLOUR) -> np.ndarray:
    """A steering wheel at the bottom centre turned by ``angle_deg`` (+ = left, counter-clockwise).

    A white rim on a darkened disc, a spoke from the hub to where the wheel's top has turned to
    (the angle modulo 360), and an arc with an arrowhead from the top along the turn (its length
    is the angle, at most one full turn: A2D2's wheel turns up to ~600 deg; the caption gives the
    number). Radius 12 % of the image's shorter side.

    Returns:
        A new (H, W, 3) uint8 array.
    """
    image = _checked(image)
    h, w = image.shape[:2]
    t = line_thickness(image.shape)
    r = max(4.0, 0.12 * min(h, w))
    cx, cy = (w - 1) / 2, h - 1 - 1.3 * r
    rows, cols = np.ogrid[:h, :w]
    disc = (cols - cx) ** 2 + (rows - cy) ** 2 <= (r + 2 * t) ** 2  # (H, W)
    out = blend(image, (0, 0, 0), disc, 0.4)
    colour = tuple(int(c) for c in colour)
    centre = tuple(_fixed(np.array([cx, cy])).tolist())
    radius = int(_fixed(np.array(r)))
    cv2.circle(out, centre, radius, (255, 255, 255), t, cv2.LINE_AA, SHIFT)
    turn = math.radians(angle_deg)
    top = np.array([cx - r * math.sin(turn), cy - r * math.cos(turn)])  # counter-clockwise on screen for + angles
    cv2.line(out, centre, tuple(_fixed(top).tolist()), colour, 2 * t, cv2.LINE_AA, SHIFT)
    if abs(angle_deg) >= 0.05:  # below the caption's 0.1 deg there is no arc to show
        sweep = max(-360.0, min(360.0, float(angle_deg)))
        cv2.ellipse(out, centre, (radius, radius), 0.0, -90.0, -90.0 - sweep, colour, 2 * t, cv2.LINE_AA, SHIFT)
        phi = math.radians(sweep)
        tip = np.array([cx - r * math.sin(phi), cy - r * math.cos(phi)])
        ahead = math.copysign(1.0, sweep) * np.array([-math.cos(phi), math.sin(phi)])  # the turn's direction at the tip
        for side in (-1.0, 1.0):  # the arrowhead's two strokes, 30 deg off the way back
            a = math.radians(150.0 * side)
            back = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ ahead  # ahead turned by a
            cv2.line(
                out,
                tuple(_fixed(tip).tolist()),
                tuple(_fixed(tip + 0.35 * r * back).tolist()),
                colour,
                2 * t,
                cv2.LINE_AA,
                SHIFT,
            )
    return out
