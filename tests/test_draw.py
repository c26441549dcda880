"""Task pictures (``Task.draw``) and their helpers (``train/draw.py``): every task draws its decoded
prediction on a real stored frame without touching the input, and hand-made predictions land
where their coordinates say."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import batch_from_shards, det2d_perfect_output, det3d_perfect_output, random_features

from mtl_data.schema import cityscapes_geometry as cg
from mtl_data.schema import geometry as geo
from mtl_data.schema.sample import IGNORE_INDEX, Sample
from mtl_data.shards.reader import ShardSet
from mtl_data.train import draw
from mtl_data.train.tasks import FeatureSpec, create_task, list_tasks
from mtl_data.train.tasks.det2d import DRAW_SCORE_THRESHOLD, Detections
from mtl_data.train.tasks.det3d import Det3DPrediction, sensor_transform
from mtl_data.train.tasks.lane import LanePrediction

SIZE = (64, 128)  # (H, W) of the loader's batches
KITTI_KEY = "kitti_train_000000"
CITY_BOX_KEY = "cityscapes_val_lindau_000000_000019"


@pytest.fixture(scope="module")
def shards(real_shards) -> ShardSet:
    return ShardSet.open(real_shards)


def key_for(shards: ShardSet, task: str) -> str:
    """The first key (sorted) of a sample that labels ``task``, else the first key (steer has no
    real sample: any frame has a steering prediction)."""
    rows = shards.manifest
    labelled = sorted(rows.filter(rows[f"has_{task}"])["key"].to_list())
    return (labelled or sorted(rows["key"].to_list()))[0]


def blank_sample(image: np.ndarray, K: np.ndarray | None = None) -> Sample:
    return Sample(
        key="hand_made", source="synthetic", split="val", id="hand_made", image=image, orig_size=image.shape[:2], K=K
    )


# ---- plausible raw outputs, from the batch's own targets -----------------------------------------


def one_hot_logits(ids: torch.Tensor, classes: int, logit: float = 10.0) -> torch.Tensor:
    """(B, H, W) ids (any outside ``0..classes-1``, e.g. 255, as class 0) -> (B, C, H, W) logits."""
    ids = torch.where((ids >= 0) & (ids < classes), ids, torch.zeros_like(ids))
    return F.one_hot(ids.long(), classes).permute(0, 3, 1, 2).float() * logit


def head_output(task, batch: dict):
    """The task's (untrained) head on random features."""
    features = random_features(batch, channels=16)
    with torch.no_grad():
        return task.build_head(FeatureSpec(channels=16)).eval()(features, SIZE)


#: task -> a raw output whose decoding is a plausible prediction (a new task: add one here).
ORACLES = {
    "seg": lambda task, batch: one_hot_logits(batch["seg"], task.num_classes),
    "depth": head_output,  # ~10 m with random variation: every pixel has a depth to colour
    "det2d": lambda task, batch: det2d_perfect_output(batch),
    "det3d": det3d_perfect_output,
    "steer": lambda task, batch: torch.full((len(batch["key"]),), 30.0),
    "sign": lambda task, batch: F.one_hot(batch["sign"].clamp(min=0), task.num_classes).float() * 10.0,
    "lane": lambda task, batch: one_hot_logits(batch["lane"], 1 + task.config.max_lanes),
}


def decoded(real_shards: Path, shards: ShardSet, name: str, output_of) -> tuple[object, object, Sample]:
    task = create_task(name)
    key = key_for(shards, name)
    batch = batch_from_shards(real_shards, [key], SIZE)
    [prediction] = task.decode(output_of(task, batch), batch)
    return task, prediction, shards.read_sample(key)


def assert_drawing_contract(task, prediction, sample: Sample) -> np.ndarray:
    """A new array of the image's shape and dtype, the input untouched, the same pixels twice."""
    image = sample.image
    before = image.copy()
    out = task.draw(image, prediction, sample)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, image)
    np.testing.assert_array_equal(image, before)
    np.testing.assert_array_equal(task.draw(image, prediction, sample), out)
    return out


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_draws_its_decoded_prediction_on_the_stored_frame(name, real_shards, shards):
    task, prediction, sample = decoded(real_shards, shards, name, ORACLES[name])
    out = assert_drawing_contract(task, prediction, sample)
    assert (out != sample.image).any(axis=2).sum() >= 20, "the drawing changed (almost) nothing"


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_draws_an_untrained_heads_prediction(name, real_shards, shards):
    task, prediction, sample = decoded(real_shards, shards, name, head_output)
    assert_drawing_contract(task, prediction, sample)


# ---- the helpers -----------------------------------------------------------------------------------


def test_blend_mixes_the_colour_on_the_mask_only():
    image = np.full((4, 5, 3), 100, np.uint8)
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = True
    out = draw.blend(image, (200, 0, 51), mask, 0.5)
    np.testing.assert_array_equal(out[1, 2], [150, 50, 76])  # rint(75.5) = 76
    out[1, 2] = 100
    np.testing.assert_array_equal(out, image)
    with pytest.raises(ValueError):
        draw.blend(image, (0, 0, 0), np.ones((3, 5), bool))


def test_palettes_are_fixed_and_distinct():
    colours = draw.class_colours(["road", "sidewalk", "my own class", "car"])
    np.testing.assert_array_equal(colours[[0, 1, 3]], [[128, 64, 128], [244, 35, 232], [0, 0, 142]])
    np.testing.assert_array_equal(colours[2], draw.distinct_colour(2))
    assert len(draw.CITYSCAPES_COLOURS) == 19
    first = [draw.distinct_colour(i) for i in range(64)]
    assert len(set(first)) == 64 and first == [draw.distinct_colour(i) for i in range(64)]


def test_colorize_depth_runs_red_near_to_blue_far_and_leaves_no_depth_black():
    rgb = draw.colorize_depth(np.array([[1.0, 8.0, 80.0, 0.0, np.nan]]), 80.0)
    near, middle, far, zero, nan = rgb[0].astype(int)
    assert near[0] > near[2] and far[2] > far[0]  # red near, blue far
    assert (middle != near).any() and (middle != far).any()
    np.testing.assert_array_equal([zero, nan], 0)
    assert (far > 0).any()  # TURBO's far end is not black, so "no depth" stays distinguishable


def test_polyline_far_outside_the_image_is_clipped_not_lost():
    image = np.zeros((40, 60, 3), np.uint8)
    out = draw.draw_polyline(image, np.array([[-1e12, 20.0], [1e12, 20.0], [np.nan, 5.0]]), (255, 0, 0))
    assert (out[20, 1:-1, 0] > 200).all()  # the whole row (OpenCV fades an anti-aliased line at the border)
    assert not out[:15].any() and not out[25:].any()


def test_caption_darkens_a_band_at_the_top_only():
    image = np.full((200, 300, 3), 200, np.uint8)
    out = draw.caption(image, "a caption long enough to wrap onto a second line of this small picture")
    assert (out[:2] < 200).all()  # the band (above the text)
    assert (out[:40] > 150).all(axis=2).sum() > 50  # light text on it
    np.testing.assert_array_equal(out[-50:], image[-50:])
    tiny = draw.caption(np.zeros((29, 30, 3), np.uint8), "Speed limit (20km/h) (id 0)")  # a GTSRB crop
    assert tiny.shape == (29, 30, 3) and tiny.any()


# ---- hand-made predictions -----------------------------------------------------------------------


def test_seg_blends_the_road_colour_and_leaves_pixels_of_no_class():
    task = create_task("seg")
    image = np.full((20, 30, 3), 100, np.uint8)
    ids = np.zeros((20, 30), np.uint8)  # road everywhere ...
    ids[:, 20:] = IGNORE_INDEX  # ... but no class on the right
    out = task.draw(image, ids, blank_sample(image))
    road = np.broadcast_to([114, 82, 114], (20, 20, 3))  # (100 + (128, 64, 128)) / 2
    np.testing.assert_array_equal(out[:, :20], road)
    np.testing.assert_array_equal(out[:, 20:], image[:, 20:])
    with pytest.raises(ValueError):
        task.draw(image, ids[:10], blank_sample(image))


def test_det2d_draws_the_outline_of_a_confident_box_only():
    task = create_task("det2d")
    image = np.zeros((100, 200, 3), np.uint8)
    boxes = np.array([[20.0, 30.0, 80.0, 60.0], [120.0, 30.0, 180.0, 60.0]])
    prediction = Detections(boxes, np.array([0.9, DRAW_SCORE_THRESHOLD / 2]), np.array([0, 3]))
    out = task.draw(image, prediction, blank_sample(image))
    colour = np.array(draw.distinct_colour(0))
    for y, x in ((45, 20), (45, 80), (60, 50)):  # left, right and bottom edges of the confident box
        assert np.abs(out[y, x].astype(int) - colour).max() <= 40, (y, x, out[y, x])
    assert not out[45, 50].any()  # inside: an outline, no fill
    assert not out[:, 100:].any()  # the box below the display threshold and everything far away
    assert not out[95, 5].any()


def test_lane_draws_each_polyline_through_its_points_and_breaks_at_missing_rows():
    task = create_task("lane")
    image = np.zeros((100, 64, 3), np.uint8)
    rows = np.arange(10.0, 100.0, 10.0)  # 10 .. 90
    gap = np.where((rows >= 40) & (rows <= 60), -2.0, 45.0)
    prediction = LanePrediction(h_samples=rows, lanes=np.stack([np.full(rows.size, 20.0), gap]))
    out = task.draw(image, prediction, blank_sample(image))
    first, second = np.array(draw.distinct_colour(0)), np.array(draw.distinct_colour(1))
    for y in (10, 35, 50, 90):
        assert np.abs(out[y, 20].astype(int) - first).max() <= 40, y
    assert not out[:, 30:40].any()  # between the lanes
    assert not out[:8].any() and not out[93:].any()  # above the first and below the last row
    assert np.abs(out[20, 45].astype(int) - second).max() <= 40
    assert not out[50, 42:49].any()  # the second lane has no point from row 40 to 60


def kitti_box(shards: ShardSet) -> tuple[Sample, np.ndarray, np.ndarray]:
    """The real KITTI frame and a car 15 m ahead, a little right and below the camera, turned."""
    sample = shards.read_sample(KITTI_KEY)
    boxes = np.array([[2.0, 1.0, 15.0, 4.0, 1.8, 1.5, 0.3]])
    return sample, boxes, geo.yaw_to_rotation(boxes[:, 6]).reshape(1, 3, 3)


def test_det3d_draws_a_box_ahead_at_its_projected_corners_and_nothing_behind(shards):
    task = create_task("det3d")
    sample, boxes, rotation = kitti_box(shards)
    out = task.draw(
        sample.image, Det3DPrediction(boxes, rotation, np.array([0.8]), np.array([0]), np.zeros((1, 4))), sample
    )
    changed = (out != sample.image).any(axis=2)  # (h, w)
    corners = geo.box3d_corners(boxes, rotation)[0]  # (8, 3)
    uv, _ = geo.project(corners, sample.K)
    for u, v in uv:
        r, c = int(round(v)), int(round(u))
        assert changed[r - 1 : r + 2, c - 1 : c + 2].any(), (u, v)
    front, _ = geo.project(corners[[0, 1, 4, 5]].mean(axis=0, keepdims=True), sample.K)  # the front face's cross
    r, c = (int(round(x)) for x in front[0][::-1])
    assert changed[r - 1 : r + 2, c - 1 : c + 2].any()
    (x0, y0), (x1, y1) = np.floor(uv.min(axis=0)).astype(int) - 4, np.ceil(uv.max(axis=0)).astype(int) + 4
    assert changed[y0 : y1 + 1, x0 : x1 + 1].sum() > 500
    outside = changed.copy()
    outside[y0 : y1 + 1, x0 : x1 + 1] = False
    rows, cols = np.nonzero(outside)  # only the tag, above the box's top left
    assert rows.max() < y0 + 5 and rows.min() > y0 - 40 and cols.min() >= x0 and cols.max() < x1

    behind = boxes.copy()
    behind[0, 2] = -15.0
    out = task.draw(
        sample.image, Det3DPrediction(behind, rotation, np.array([0.8]), np.array([0]), np.zeros((1, 4))), sample
    )
    np.testing.assert_array_equal(out, sample.image)
    across = boxes.copy()  # a box through the camera plane: only its part in front is drawn
    across[0, [0, 2, 6]] = (0.0, 0.5, np.pi / 2)
    out = task.draw(
        sample.image,
        Det3DPrediction(
            across, geo.yaw_to_rotation(across[:, 6]).reshape(1, 3, 3), np.array([0.8]), np.array([0]), np.zeros((1, 4))
        ),
        sample,
    )
    assert (out != sample.image).any()


def test_det3d_boxes_read_back_in_vehicle_coordinates_draw_where_the_optical_ones_do(shards):
    task = create_task("det3d")
    sample = shards.read_sample(CITY_BOX_KEY)
    T = sensor_transform(sample)
    assert T is not None
    boxes = np.array([[-3.0, 0.5, 20.0, 4.5, 1.9, 1.6, 0.4], [4.0, 0.8, 30.0, 10.0, 2.5, 3.2, -1.0]])
    rotation = geo.yaw_to_rotation(boxes[:, 6]).reshape(-1, 3, 3)
    scores, classes = np.array([0.9, 0.6]), np.array([0, 3])
    optical = task.draw(sample.image, Det3DPrediction(boxes, rotation, scores, classes, np.zeros((2, 4))), sample)
    center, dims, rot_v = cg.optical_boxes_to_frame(boxes, rotation, T)
    vehicle = Det3DPrediction(
        np.column_stack([center, dims, np.zeros(2)]), rot_v, scores, classes, np.zeros((2, 4)), frame="vehicle"
    )
    diff = np.abs(task.draw(sample.image, vehicle, sample).astype(int) - optical.astype(int))
    assert (diff > 40).sum() < 20  # the same drawing, up to rounding at anti-aliased edges
    assert (optical != sample.image).any()


def test_det3d_without_K_or_extrinsic_says_so_in_a_caption(shards):
    task = create_task("det3d")
    image = np.full((120, 400, 3), 128, np.uint8)
    sample, boxes, rotation = kitti_box(shards)
    prediction = Det3DPrediction(boxes, rotation, np.array([0.9]), np.array([0]), np.zeros((1, 4)))
    out = task.draw(image, prediction, blank_sample(image))
    assert (out[:2] < 128).all()  # the caption band
    np.testing.assert_array_equal(out[-40:], image[-40:])
    vehicle = Det3DPrediction(boxes, rotation, np.array([0.9]), np.array([0]), np.zeros((1, 4)), frame="vehicle")
    out = task.draw(image, vehicle, blank_sample(image, K=sample.K))  # K, but no sensor_T_ISO_8855
    assert (out[:2] < 128).all()
    np.testing.assert_array_equal(out[-40:], image[-40:])


def test_depth_colours_predicted_pixels_and_leaves_pixels_without_a_prediction():
    task = create_task("depth")
    image = np.full((200, 300, 3), 128, np.uint8)
    depth = np.zeros((200, 300), np.float32)
    depth[:, :150] = 1.0  # the near end of the scale: red
    out = task.draw(image, depth, blank_sample(image))
    below_caption = slice(100, 200)
    np.testing.assert_array_equal(out[below_caption, 150:], image[below_caption, 150:])
    red = out[150, 50].astype(int)  # 0.65 TURBO's dark red (122, 4, 3) + 0.35 grey
    assert red[0] > red[1] + 50 and red[0] > red[2] + 50
    with pytest.raises(ValueError):
        task.draw(image, depth[:, :100], blank_sample(image))


def wheel_pixels(out: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels in (nearly) the wheel's accent colour."""
    return np.abs(out.astype(int) - np.array(draw.WHEEL_COLOUR)).max(axis=2) <= 30


def test_steer_turns_the_wheel_left_for_positive_angles():
    task = create_task("steer")
    image = np.full((300, 400, 3), 60, np.uint8)
    left = wheel_pixels(task.draw(image, 90.0, blank_sample(image)))
    right = wheel_pixels(task.draw(image, -90.0, blank_sample(image)))
    assert left[:, :200].sum() > 5 * left[:, 200:].sum()
    assert right[:, 200:].sum() > 5 * right[:, :200].sum()
    straight = task.draw(image, 0.0, blank_sample(image))
    assert (straight != image).any()
    assert task.draw(image, float("nan"), blank_sample(image)).shape == image.shape


def test_sign_captions_differ_by_class_on_a_real_crop(shards):
    task = create_task("sign")
    sample = shards.read_sample(key_for(shards, "sign"))
    a, b = (task.draw(sample.image, k, sample) for k in (1, 38))
    assert (a != b).any()
    big = cv2.resize(sample.image, (300, 300))
    out = task.draw(big, 1, blank_sample(big))
    np.testing.assert_array_equal(out[-100:], big[-100:])  # a caption band, the rest untouched
