"""Loader transforms: resize or letterbox, horizontal flip, photometric jitter (numpy + OpenCV).

Every transform maps the image and every label of a ``Sample`` together, so a box, the seg
pixels inside it, its depth points and its lane stay on the same content. No torch here: the
functions run in loader workers and are tested on plain arrays.

Geometry (the pixel-centre convention of ``schema.geometry``: integer coordinates are pixel
centres, the image spans ``[-0.5, W - 0.5]``):

* **Resize** a (h, w) sample to an output (H, W): ``sx = W / w``, ``sy = H / h`` (different
  when the aspect ratio changes). **Letterbox** keeps the aspect ratio: the content is
  ``(round(h s), round(w s))`` with ``s = min(H / h, W / w)``, centred (``top``, ``left`` =
  half the padding, rounded down), and the exact per-axis ratios ``nw / w``, ``nh / h`` are
  used so labels follow what ``cv2.resize`` does to the pixels. A coordinate c becomes
  ``(c + 0.5) s - 0.5 + offset`` (``geometry.scale_pixel_coords``); ``K`` is
  ``geometry.scale_intrinsics`` plus the offset on its principal point. Upscaling (GTSRB crops)
  and downscaling use the same mapping.
* **Image**: halved by exact 2-tap box filters while an axis shrinks by more than 2, then
  bilinear (anti-aliased like area averaging, ~10x cheaper than ``INTER_AREA`` at non-integer
  ratios); every step follows the pixel-centre mapping above. Padding is grey 114 (YOLO's
  letterbox value). An image decoded at reduced size (``reduced_decode_factor``) is mapped
  with its exact 1/f scale.
* **Class maps** (seg): ``INTER_NEAREST_EXACT``, padding 255 (ignore). **Lane masks** are
  redrawn from the scaled polylines (``schema.lanes.rasterize_lanes``, thickness scaled by the
  smaller ratio); padding 255. Every label is placed by ``schema.placement``, which the
  ingest's ``--max-side`` downscale shares.
* **Sparse depth** is never interpolated: every measured pixel goes to the output pixel that
  contains its scaled centre and the nearest depth wins (``geometry.resize_sparse_depth``:
  min-pooling when shrinking, point reprojection when enlarging). Padding 0 (no measurement).
  The loader passes the points themselves (``depth=``, from ``depth.pts``), scattered straight
  to the output by ``placement.place_depth_points``: the same map, as uint16 ``round(m * 256)``,
  at the cost of the points instead of the full-size frame.
* **3D boxes and steering** are unchanged by resizing (metric / not geometric).

Horizontal flip (applied at the output size W):

* image, seg, depth, lane mask mirrored; a coordinate u becomes ``(W - 1) - u`` (pixel centre
  u lands on pixel centre W-1-u), so 2D boxes, ignore regions, amodal boxes become
  ``[(W-1) - x2, y1, (W-1) - x1, y2]``;
* ``K`` becomes ``F K M`` with ``F`` the pixel mirror and ``M = diag(-1, 1, 1)``: ``cx -> (W-1) -
  cx`` and the skew negated, so the flipped 3D scene projects onto the flipped image;
* 3D boxes: ``x -> -x``, ``yaw -> pi - yaw`` wrapped to (-pi, pi] (the heading vector is
  mirrored, as mmdetection3d flips camera boxes); a full ``rotation`` R becomes ``M R N`` with
  ``N = diag(1, 1, -1)``. ``M R M`` (also a rotation of the same corner set) would reverse the
  heading and disagree with ``pi - yaw``; ``M R N`` equals ``yaw_to_rotation(pi - yaw)`` for
  an upright box. A flipped 3D box therefore still projects onto the flipped 2D box;
* steering angle negated (left <-> right);
* lanes: ids 1..N are ordered left to right at the bottom, so id k becomes N + 1 - k, ``xs``
  rows are reversed and mirrored (``NO_POINT`` kept). The mask is mirrored (and relabelled),
  not redrawn, so it is exactly the mirror image of the stored mask;
* samples with a ``sign`` label are never flipped: a mirrored sign is another sign or none
  (turn left <-> turn right, mirrored digits), and the flip draw is still consumed.

Photometric jitter (image only): brightness, contrast and saturation factors drawn uniformly in
``[1 - jitter, 1 + jitter]``, applied in that order as torchvision's ``ColorJitter`` defines
them (contrast around the mean grey of the image, saturation towards the per-pixel grey,
ITU-R 601 luma). Their composition is one affine map per RGB pixel, applied in one pass by
``cv2.transform`` with a single rounding and clip to uint8 at the end (torchvision clips after
each step; the difference is where a step would have saturated). It is applied before the
letterbox padding, so the padding stays 114 and does not bias the mean.

Randomness: ``transform_sample`` draws exactly 4 uniforms from ``rng`` per call when
``augment`` (flip, then the three jitter factors), whatever the sample holds, so the draws of
later samples do not depend on the content of earlier ones; same rng state -> same output.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from mtl_data.schema.lanes import NO_POINT
from mtl_data.schema.placement import Placement, pad, place_depth_points, place_labels, placement
from mtl_data.schema.sample import Det2D, Det3D, Lanes, Sample, Steer
from mtl_data.shards.depthpoints import DepthPoints

#: letterbox padding of the image (YOLO's grey); labels are padded by ``schema.placement``.
IMAGE_PAD = 114
#: ITU-R 601-2 luma weights for RGB, as torchvision's ``rgb_to_grayscale``.
LUMA_RGB = np.array([0.299, 0.587, 0.114])
#: JPEG DCT-domain reductions OpenCV can decode at (``cv2.IMREAD_REDUCED_COLOR_{2,4,8}``).
REDUCED_FACTORS = (8, 4, 2)
#: uniforms drawn per sample when augmenting: flip, brightness, contrast, saturation.
_DRAWS = 4


@dataclass(frozen=True)
class TransformConfig:
    """How samples are brought to the training size.

    Attributes:
        image_size: (H, W) of the output, pixels.
        letterbox: keep the aspect ratio and pad (image 114, seg/lane 255, depth 0); else stretch.
        augment: draw a flip and a photometric jitter; False gives the deterministic resize only.
        flip_p: probability of a horizontal flip when ``augment``.
        jitter: brightness/contrast/saturation factors are drawn in ``[1 - jitter, 1 + jitter]``.
    """

    image_size: tuple[int, int]
    letterbox: bool = False
    augment: bool = True
    flip_p: float = 0.5
    jitter: float = 0.2

    def __post_init__(self) -> None:
        size = tuple(self.image_size)
        if len(size) != 2 or any(int(v) != v or v < 1 for v in size):
            raise ValueError(f"image_size must be (H, W) positive integers, got {self.image_size!r}")
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")


def reduced_decode_factor(stored_hw: tuple[int, int], target_hw: tuple[int, int]) -> int:
    """Largest JPEG DCT-domain reduction (1, 2, 4 or 8) that keeps the decoded image >= target.

    libjpeg decodes at ``ceil(side / f)``; the factor is the largest ``f`` with both decoded
    sides at least the target's, so the final resize only shrinks (or is the identity). For a
    letterbox, passing the content size (``placement(...).content_size``) allows more reduction
    than the full output size.

    Args:
        stored_hw: (h, w) of the stored JPEG.
        target_hw: (H, W) the image will be resized to.

    Returns:
        1, 2, 4 or 8 (``cv2.IMREAD_REDUCED_COLOR_<f>`` for f > 1).
    """
    (h, w), (th, tw) = stored_hw, target_hw
    for f in REDUCED_FACTORS:
        if math.ceil(h / f) >= th and math.ceil(w / f) >= tw:
            return f
    return 1


# ---- resize ----------------------------------------------------------------------------------


def _decoded_scale(stored: int, decoded: int) -> float:
    """Image pixels per label pixel along one axis of a decoded image.

    libjpeg's DCT-domain reduction by f maps block [i f, (i + 1) f) to pixel i, so the scale
    is exactly 1/f although the side is ``ceil(stored / f)``; any other size is a plain resize.
    """
    if decoded == stored:
        return 1.0
    for f in REDUCED_FACTORS:
        if decoded == -(-stored // f):
            return 1.0 / f
    return decoded / stored


def _resize_image(image: np.ndarray, pl: Placement, jitter: tuple[float, float, float] | None) -> np.ndarray:
    (h, w), (nh, nw) = pl.src_size, pl.content_size
    gy, gx = _decoded_scale(h, image.shape[0]), _decoded_scale(w, image.shape[1])  # image px per label px
    # Anti-aliasing: halve an axis while more than two image pixels fall on one output pixel,
    # then finish with bilinear (ratio >= 1/2, where it blends every input pixel). Halving with
    # fx = 1/2 is an exact 2-tap box filter with the pixel-centre mapping (bilinear samples
    # halfway between two pixels; the 2x2 INTER_AREA fast path is the same box). INTER_AREA at
    # a non-integer ratio gives the same quality but costs 2.5 ms on a KITTI frame (10x).
    while pl.sx / gx < 0.5 or pl.sy / gy < 0.5:
        fx, fy = (0.5 if pl.sx / gx < 0.5 else 1.0), (0.5 if pl.sy / gy < 0.5 else 1.0)
        interpolation = cv2.INTER_AREA if fx == fy else cv2.INTER_LINEAR
        image = cv2.resize(image, None, fx=fx, fy=fy, interpolation=interpolation)  # (~h/2, ~w/2, 3) uint8
        gx, gy = gx * fx, gy * fy
    ax, ay = pl.sx / gx, pl.sy / gy  # output px per image px, >= 1/2
    ih, iw = image.shape[:2]
    spans_labels = math.isclose(iw * ax, nw, rel_tol=1e-12) and math.isclose(ih * ay, nh, rel_tol=1e-12)
    if not spans_labels:
        # The image does not cover exactly the labels' extent (an odd side halved, or a reduced
        # JPEG decode of ceil(side / f) pixels): cv2.resize would stretch it onto the output,
        # so map it with the exact pixel-centre affine instead.
        affine = np.array([[ax, 0.0, 0.5 * ax - 0.5], [0.0, ay, 0.5 * ay - 0.5]])
        image = cv2.warpAffine(image, affine, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    elif (ih, iw) != (nh, nw):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)  # (nh, nw, 3) uint8
    if jitter is not None:
        image = color_jitter(image, *jitter)
    return pad(image, pl, IMAGE_PAD)


def _apply_placement(
    sample: Sample,
    pl: Placement,
    image: np.ndarray | None,
    jitter: tuple[float, float, float] | None,
    depth: DepthPoints | None = None,
) -> Sample:
    if image is None and depth is None and pl.identity and jitter is None:
        return sample
    changes: dict = {"image": _resize_image(sample.image if image is None else image, pl, jitter)}
    if not pl.identity:
        changes.update(place_labels(sample, pl, skip=("depth",) if depth is not None else ()))
    if depth is not None:
        changes["depth"] = place_depth_points(depth.index, depth.value, pl)  # (H, W) uint16
    return dataclasses.replace(sample, **changes)


def resize_to(sample: Sample, size_hw: tuple[int, int], letterbox: bool, image: np.ndarray | None = None) -> Sample:
    """Resize (or letterbox) a sample to ``size_hw`` with every label following.

    Args:
        sample: the stored sample; its labels are in pixels of ``sample.size``.
        size_hw: (H, W) of the output.
        letterbox: keep the aspect ratio and pad (see the module docstring) instead of stretching.
        image: an already decoded version of the sample's image to resize instead of
            ``sample.image``, e.g. decoded at reduced size (``reduced_decode_factor``). Labels are
            still scaled from ``sample.size``, so only ``sample.image.shape`` is read then (it
            may be a zero-copy placeholder such as ``np.broadcast_to(np.uint8(0), (h, w, 3))``).
            A JPEG decoded at 1/f covers ``ceil(side / f)`` pixels; when a side is not a multiple
            of f the image is off the labels by less than ``f * s`` output pixels at the far
            edge (s the output/stored ratio, < 1/f), and exact when it is.

    Returns:
        A new ``Sample`` of size ``size_hw`` (the same object when nothing changes).
    """
    pl = placement(sample.size, tuple(size_hw), letterbox)
    return _apply_placement(sample, pl, image, None)


# ---- flip ------------------------------------------------------------------------------------


def _mirror_x(x: np.ndarray, width: int) -> np.ndarray:
    return (width - 1) - np.asarray(x, dtype=np.float64)


def _flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack(
        [_mirror_x(boxes[:, 2], width), boxes[:, 1], _mirror_x(boxes[:, 0], width), boxes[:, 3]]
    )  # (N, 4), x1 <= x2 kept


def flip_K(K: np.ndarray, width: int) -> np.ndarray:
    """Intrinsics of the mirrored image: ``F K M`` (``cx -> (W-1) - cx``, skew negated).

    With 3D points mirrored by ``M = diag(-1, 1, 1)``, projecting them with the result gives
    ``(W-1) - u`` for every point that projected to ``u``.
    """
    mirror_px = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return mirror_px @ np.asarray(K, dtype=np.float64) @ np.diag([-1.0, 1.0, 1.0])


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles in radians wrapped to (-pi, pi]."""
    return np.pi - np.mod(np.pi - np.asarray(angle, dtype=np.float64), 2.0 * np.pi)


def _flip_det3d(det: Det3D, width: int) -> Det3D:
    boxes = np.array(det.boxes, dtype=np.float64).reshape(-1, 7)  # (N, 7) copy
    boxes[:, 0] = -boxes[:, 0]
    boxes[:, 6] = wrap_angle(np.pi - boxes[:, 6])
    rotation = None
    if det.rotation is not None:
        # M R N: mirror the world (M), then the box's own width axis (N) so that it is a proper
        # rotation again whose length axis (the heading) is the mirrored heading.
        m, n = np.diag([-1.0, 1.0, 1.0]), np.diag([1.0, 1.0, -1.0])
        rotation = m[None] @ np.asarray(det.rotation, dtype=np.float64) @ n[None]  # (N, 3, 3)
    return dataclasses.replace(det, boxes=boxes, rotation=rotation)


def _flip_det2d(det: Det2D, width: int) -> Det2D:
    return dataclasses.replace(
        det,
        boxes=_flip_boxes(det.boxes, width),
        ignore=_flip_boxes(det.ignore, width),
        amodal=None if det.amodal is None else _flip_boxes(det.amodal, width),
    )


def _flip_lanes(lane: Lanes, width: int) -> Lanes:
    n = lane.xs.shape[0]
    # Ids 1..N are ordered left to right, so the mirror reverses them; 0 and 255 stay.
    relabel = np.arange(256, dtype=np.uint8)
    relabel[1 : n + 1] = np.arange(n, 0, -1)
    mask = cv2.LUT(cv2.flip(lane.mask, 1), relabel)  # (H, W) uint8
    xs = np.where(lane.xs == NO_POINT, NO_POINT, _mirror_x(lane.xs, width))[::-1]  # (N, R)
    # A real point beyond the right edge at x = W + 1 would mirror onto the NO_POINT marker;
    # nudge it by one ulp so that it stays a point.
    collide = (xs == NO_POINT) & (lane.xs[::-1] != NO_POINT)
    xs = np.where(collide, np.nextafter(NO_POINT, -np.inf), xs)
    return Lanes(mask=mask, h_samples=lane.h_samples, xs=np.ascontiguousarray(xs), thickness=lane.thickness)


def _flip_map(array: np.ndarray, width: int) -> np.ndarray:
    return cv2.flip(array, 1)


def _flip_steer(steer: Steer, width: int) -> Steer:
    return dataclasses.replace(steer, angle_deg=-steer.angle_deg)


#: task -> its label under a horizontal flip of an image ``width`` pixels wide.
_FLIPPERS: dict[str, Callable[[object, int], object]] = {
    "seg": _flip_map,
    "depth": _flip_map,
    "det2d": _flip_det2d,
    "det3d": _flip_det3d,
    "steer": _flip_steer,
    "lane": _flip_lanes,
}

#: tasks whose label has no mirror image (a mirrored sign is another sign, or none).
NO_FLIP_TASKS: tuple[str, ...] = ("sign",)


def can_flip(sample: Sample) -> bool:
    """Whether every label of ``sample`` has a mirror image (see ``NO_FLIP_TASKS``)."""
    return all(getattr(sample, task) is None for task in NO_FLIP_TASKS)


def hflip(sample: Sample) -> Sample:
    """Mirror a sample left-right with every label following (see the module docstring).

    Raises:
        ValueError: the sample has a label without a mirror image (``can_flip`` is False).
    """
    if not can_flip(sample):
        raise ValueError(f"sample {sample.key} has a {'/'.join(NO_FLIP_TASKS)} label, which has no mirror image")
    width = sample.size[1]
    changes: dict = {"image": cv2.flip(sample.image, 1)}
    changes.update(
        {task: fn(getattr(sample, task), width) for task, fn in _FLIPPERS.items() if getattr(sample, task) is not None}
    )
    if sample.K is not None:
        changes["K"] = flip_K(sample.K, width)
    return dataclasses.replace(sample, **changes)


# ---- photometric jitter ----------------------------------------------------------------------


def color_jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Brightness, then contrast, then saturation (torchvision's definitions), in one pass.

    brightness: ``b x``; contrast: ``c x + (1 - c) m`` with m the image's mean grey after the
    brightness step; saturation: ``s x + (1 - s) grey(x)``. The composition is
    ``c b S x + (1 - c) m`` per pixel (S the saturation matrix; ``S 1 = 1``), rounded and clipped
    once.

    Args:
        image: (H, W, 3) uint8 RGB.
        brightness, contrast, saturation: factors, 1 = unchanged.

    Returns:
        (H, W, 3) uint8 RGB, a new array.
    """
    mean_grey = brightness * float(np.dot(cv2.mean(image)[:3], LUMA_RGB))
    sat = saturation * np.eye(3) + (1.0 - saturation) * np.outer(np.ones(3), LUMA_RGB)  # (3, 3)
    affine = np.empty((3, 4))
    affine[:, :3] = contrast * brightness * sat
    affine[:, 3] = (1.0 - contrast) * mean_grey
    return cv2.transform(image, affine)  # (H, W, 3) uint8, saturated


# ---- the loader's entry point ----------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """How the pixels of a transformed sample relate to those of its stored image.

    A stored pixel coordinate c lands at ``c' = (c + 0.5) s - 0.5 + offset`` per axis
    (``placement``), then, when ``flipped``, at ``(W - 1) - c'`` along x. Task decoders invert it
    to write predictions in the stored image's pixels (``to_stored_x`` / ``to_stored_y``).
    """

    placement: Placement
    flipped: bool = False

    @classmethod
    def identity(cls, size_hw: tuple[int, int]) -> View:
        """The view of a sample that was not transformed."""
        return cls(placement(tuple(size_hw), tuple(size_hw), False))

    def to_stored_x(self, x: np.ndarray) -> np.ndarray:
        """Output x coordinates (pixel centres) -> stored-image x coordinates."""
        pl = self.placement
        x = np.asarray(x, dtype=np.float64)
        if self.flipped:
            x = (pl.out_size[1] - 1) - x
        return (x - pl.left + 0.5) / pl.sx - 0.5

    def to_stored_y(self, y: np.ndarray) -> np.ndarray:
        """Output y coordinates (pixel centres) -> stored-image y coordinates."""
        pl = self.placement
        return (np.asarray(y, dtype=np.float64) - pl.top + 0.5) / pl.sy - 0.5


def transform_view(
    sample: Sample,
    config: TransformConfig,
    rng: np.random.Generator,
    image: np.ndarray | None = None,
    depth: DepthPoints | None = None,
) -> tuple[Sample, View]:
    """``transform_sample`` that also returns the ``View`` of the result (same draws, same output)."""
    out, view, _ = transform_frames(sample, config, rng, image, depth)
    return out, view


def transform_frames(
    sample: Sample,
    config: TransformConfig,
    rng: np.random.Generator,
    image: np.ndarray | None = None,
    depth: DepthPoints | None = None,
    prev: Sequence[np.ndarray] = (),
) -> tuple[Sample, View, tuple[np.ndarray, ...]]:
    """``transform_view`` with the sample's previous frames (MultiNet++ multi-frame input).

    Each frame of ``prev`` ((h, w, 3) uint8 RGB, decoded at the stored size or at the reduced
    size ``image`` was: ``decode.Decoded.prev``) gets exactly frame t's geometry and photometry:
    the same placement, the same flip, the same brightness / contrast / saturation factors
    (contrast blends towards each frame's own mean grey, as torchvision's does per image). The
    draws from ``rng`` are those of ``transform_view``, so a sample's frame t is the same with
    or without its previous frames.

    Returns:
        The transformed sample, its ``View``, and the previous frames, each (H, W, 3) uint8 of
        ``config.image_size``.
    """
    pl = placement(sample.size, config.image_size, config.letterbox)
    flip, jitter = False, None
    if config.augment:
        u = rng.random(_DRAWS)  # (4,) flip, brightness, contrast, saturation
        flip = bool(u[0] < config.flip_p) and can_flip(sample)
        if config.jitter > 0:
            b, c, s = 1.0 + config.jitter * (2.0 * u[1:] - 1.0)
            jitter = (float(b), float(c), float(s))
    out = _apply_placement(sample, pl, image, jitter, depth)
    frames = tuple(_resize_image(frame, pl, jitter) for frame in prev)  # (H, W, 3) each
    if flip:
        out, frames = hflip(out), tuple(cv2.flip(frame, 1) for frame in frames)
    return out, View(pl, flip), frames


def transform_sample(
    sample: Sample,
    config: TransformConfig,
    rng: np.random.Generator,
    image: np.ndarray | None = None,
    depth: DepthPoints | None = None,
) -> Sample:
    """Return a new Sample of size config.image_size with every label following consistently.

    ``resize_to`` (or letterbox), then, when ``config.augment``: a horizontal flip with
    probability ``flip_p`` (never for sign samples) and a photometric jitter of the image.
    Exactly 4 uniforms are drawn from ``rng`` when augmenting, none otherwise.

    Args:
        sample: a stored sample (labels in pixels of ``sample.size``).
        config: output size and augmentation.
        rng: the only source of randomness; the same state gives the same output.
        image: optional reduced-size decode of the image (see ``resize_to``).
        depth: the sample's depth as points (``decode.Decoded.depth``), scattered straight to
            the output (``placement.place_depth_points``); ``sample.depth`` is then only a
            placeholder of the stored size. The output's depth is (H, W) uint16
            ``round(metres * 256)``, the same map ``sample.depth`` in metres would give.

    Returns:
        The transformed sample; ``sample`` itself when it already has the output size and no
        augmentation applies. ``transform_view`` also says where its pixels came from.
    """
    return transform_view(sample, config, rng, image, depth)[0]
