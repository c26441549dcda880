"""Loader transforms on real samples (KITTI, TuSimple, GTSRB, A2D2 fixtures) and synthetic
A2D2 / Cityscapes frames where a fixture lacks a task (steering, full 3D rotations)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from conftest import fixture_path

from mtl_data.ingest import CONVERTERS
from mtl_data.schema import geometry as geo
from mtl_data.schema.lanes import NO_POINT
from mtl_data.schema.sample import IGNORE_INDEX, Det2D, Sample
from mtl_data.schema.validate import validate
from mtl_data.shards.codec import encode_image
from mtl_data.train.data import transforms as T
from mtl_data.train.data.transforms import TransformConfig, hflip, resize_to, transform_sample

M = np.diag([-1.0, 1.0, 1.0])  # mirror of the optical frame


def convert(name: str, root, index: int = 0) -> Sample:
    conv = CONVERTERS[name](root)
    return conv.convert(conv.frames()[index])


@pytest.fixture(scope="module")
def kitti() -> Sample:
    """Real KITTI frame 000001: truck, car, cyclist, 4 DontCare, velodyne depth, K."""
    return convert("kitti", fixture_path("kitti", "object"), 1)


@pytest.fixture(scope="module")
def tusimple() -> Sample:
    """The real labelled TuSimple frame (4 lanes, 1280x720)."""
    return convert("tusimple", fixture_path("tusimple"))


@pytest.fixture(scope="module")
def gtsrb() -> Sample:
    """A real GTSRB crop (54x53) with its sign ROI."""
    return convert("gtsrb", fixture_path("gtsrb", "official"))


@pytest.fixture(scope="module")
def a2d2_seg() -> Sample:
    """The real A2D2 semantic frame (1208x1920, seg)."""
    return convert("a2d2", fixture_path("a2d2"))


@pytest.fixture
def a2d2_synth(synth_root) -> Sample:
    """Synthetic A2D2 frame with seg, depth, det2d, det3d and steer (no 2D overlaps)."""
    return convert("a2d2", synth_root("a2d2"))


@pytest.fixture
def cityscapes_synth(synth_root) -> Sample:
    """Synthetic Cityscapes frame: 3D boxes with full rotations, amodal 2D boxes."""
    return convert("cityscapes", synth_root("cityscapes"))


def columns_in(box: np.ndarray) -> slice:
    """Pixel columns whose centres lie inside [x1, x2]."""
    return slice(int(np.ceil(box[0])), int(np.floor(box[2])) + 1)


def rows_in(box: np.ndarray) -> slice:
    return slice(int(np.ceil(box[1])), int(np.floor(box[3])) + 1)


def bottom_x(xs: np.ndarray, h_samples: np.ndarray, bottom: float) -> np.ndarray:
    """Where the line through each lane's two lowest points meets row ``bottom`` (the converter's order)."""
    out = []
    for lane in xs:
        valid = np.flatnonzero(lane != NO_POINT)[-2:]
        (x0, x1), (y0, y1) = lane[valid], h_samples[valid]
        out.append(x1 + (bottom - y1) * (x1 - x0) / (y1 - y0))
    return np.array(out)


# ---- flip -----------------------------------------------------------------------------------


def test_flip_moves_each_box_together_with_its_seg_depth_and_image_pixels(a2d2_synth):
    flipped = hflip(a2d2_synth)
    w = a2d2_synth.size[1]
    assert flipped.det2d.boxes.shape == a2d2_synth.det2d.boxes.shape
    for box, fbox in zip(a2d2_synth.det2d.boxes, flipped.det2d.boxes):
        np.testing.assert_allclose(fbox, [w - 1 - box[2], box[1], w - 1 - box[0], box[3]])
        r, c, fc = rows_in(box), columns_in(box), columns_in(fbox)
        assert c.stop - c.start == fc.stop - fc.start
        np.testing.assert_array_equal(flipped.seg[r, fc], a2d2_synth.seg[r, c][:, ::-1])
        np.testing.assert_array_equal(flipped.depth[r, fc], a2d2_synth.depth[r, c][:, ::-1])
        np.testing.assert_array_equal(flipped.image[r, fc], a2d2_synth.image[r, c][:, ::-1])
        # the object's own seg class still fills the flipped box
        values, counts = np.unique(a2d2_synth.seg[r, c], return_counts=True)
        cls = values[np.argmax(counts)]
        assert (flipped.seg[r, fc] == cls).sum() == counts.max()


def test_flip_negates_steering_and_mirrors_3d_boxes(a2d2_synth):
    flipped = hflip(a2d2_synth)
    assert a2d2_synth.steer.angle_deg != 0
    assert flipped.steer.angle_deg == -a2d2_synth.steer.angle_deg
    assert flipped.steer.speed_kmh == a2d2_synth.steer.speed_kmh
    b, fb = a2d2_synth.det3d.boxes, flipped.det3d.boxes
    np.testing.assert_array_equal(fb[:, 0], -b[:, 0])
    np.testing.assert_array_equal(fb[:, 1:6], b[:, 1:6])
    np.testing.assert_allclose(np.cos(fb[:, 6]), -np.cos(b[:, 6]), atol=1e-12)  # pi - yaw
    np.testing.assert_allclose(np.sin(fb[:, 6]), np.sin(b[:, 6]), atol=1e-12)
    assert np.all((fb[:, 6] > -np.pi) & (fb[:, 6] <= np.pi))
    # the mirrored corner set, and the heading (box x axis) mirrored, not reversed
    np.testing.assert_allclose(
        np.sort(geo.box3d_corners(fb), axis=1), np.sort(geo.box3d_corners(b) @ M, axis=1), atol=1e-9
    )
    heading = geo.yaw_to_rotation(b[:, 6])[:, :, 0]
    np.testing.assert_allclose(geo.yaw_to_rotation(fb[:, 6])[:, :, 0], heading @ M, atol=1e-12)


def test_flipped_3d_box_projects_onto_the_flipped_2d_box_on_real_kitti(kitti):
    w = kitti.size[1]
    flipped = hflip(kitti)
    before = geo.box_extent_in_image(geo.box3d_corners(kitti.det3d.boxes), kitti.K)  # (N, 4)
    after = geo.box_extent_in_image(geo.box3d_corners(flipped.det3d.boxes), flipped.K)
    expected = np.column_stack([w - 1 - before[:, 2], before[:, 1], w - 1 - before[:, 0], before[:, 3]])
    np.testing.assert_allclose(after, expected, atol=1e-6)

    # and the labelled 2D boxes keep their overlap with the projection
    def iou(a, b):
        ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
        iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)

        def area(x):
            return (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])

        return ix * iy / (area(a) + area(b) - ix * iy)

    iou_before = iou(kitti.det2d.boxes, np.clip(before, [0, 0, 0, 0], [w - 1, 1e9, w - 1, 1e9]))
    iou_after = iou(flipped.det2d.boxes, np.clip(after, [0, 0, 0, 0], [w - 1, 1e9, w - 1, 1e9]))
    np.testing.assert_allclose(iou_after, iou_before, atol=1e-9)
    assert iou_before.min() > 0.5


def test_flipped_k_projects_mirrored_points_to_mirrored_pixels(kitti):
    w = kitti.size[1]
    skewed = kitti.K.copy()
    skewed[0, 1] = 3.0
    points = np.random.default_rng(0).uniform([-10, -2, 2], [10, 3, 60], (50, 3))
    for K in (kitti.K, skewed):
        uv, _ = geo.project(points, K)
        fuv, _ = geo.project(points @ M, T.flip_K(K, w))
        np.testing.assert_allclose(fuv[:, 0], w - 1 - uv[:, 0], atol=1e-9)
        np.testing.assert_allclose(fuv[:, 1], uv[:, 1], atol=1e-9)
    assert T.flip_K(kitti.K, w)[0, 2] == w - 1 - kitti.K[0, 2]


def test_flipped_full_rotation_agrees_with_the_flipped_yaw_and_corners(cityscapes_synth):
    det = cityscapes_synth.det3d
    assert det.rotation is not None and len(det.boxes) > 0
    flipped = hflip(cityscapes_synth).det3d
    np.testing.assert_allclose(np.linalg.det(flipped.rotation), 1.0, atol=1e-9)  # still a rotation
    np.testing.assert_allclose(flipped.rotation[:, :, 0], det.rotation[:, :, 0] @ M, atol=1e-12)  # heading
    np.testing.assert_allclose(
        np.sort(geo.box3d_corners(flipped.boxes, flipped.rotation), axis=1),
        np.sort(geo.box3d_corners(det.boxes, det.rotation) @ M, axis=1),
        atol=1e-9,
    )
    yaw = np.arctan2(flipped.rotation[:, 0, 2], flipped.rotation[:, 0, 0])
    np.testing.assert_allclose(np.cos(yaw - flipped.boxes[:, 6]), 1.0, atol=1e-9)
    upright = geo.yaw_to_rotation(np.array([0.3, -2.0, np.pi]))
    np.testing.assert_allclose(
        M @ upright @ np.diag([1.0, 1.0, -1.0]), geo.yaw_to_rotation(np.pi - np.array([0.3, -2.0, np.pi])), atol=1e-12
    )


def test_flip_mirrors_amodal_boxes_and_ignore_regions(cityscapes_synth, kitti):
    w = cityscapes_synth.size[1]
    a = cityscapes_synth.det2d.amodal
    np.testing.assert_allclose(hflip(cityscapes_synth).det2d.amodal[:, [0, 2]], w - 1 - a[:, [2, 0]])
    ig = kitti.det2d.ignore
    np.testing.assert_allclose(hflip(kitti).det2d.ignore[:, [0, 2]], kitti.size[1] - 1 - ig[:, [2, 0]])


def test_flip_reverses_lane_ids_and_keeps_them_left_to_right_at_the_bottom(tusimple):
    lane, w = tusimple.lane, tusimple.size[1]
    n = lane.xs.shape[0]
    flipped = hflip(tusimple).lane
    for k in range(1, n + 1):
        np.testing.assert_array_equal(flipped.mask == k, (lane.mask == n + 1 - k)[:, ::-1])
    np.testing.assert_array_equal(flipped.xs == NO_POINT, (lane.xs == NO_POINT)[::-1])
    valid = lane.xs[::-1] != NO_POINT
    np.testing.assert_array_equal(flipped.xs[valid], w - 1 - lane.xs[::-1][valid])
    np.testing.assert_array_equal(flipped.h_samples, lane.h_samples)
    bottom = tusimple.size[0] - 1
    assert np.all(np.diff(bottom_x(lane.xs, lane.h_samples, bottom)) > 0)
    assert np.all(np.diff(bottom_x(flipped.xs, flipped.h_samples, bottom)) > 0)


def test_a_point_mirrored_onto_the_no_point_marker_stays_a_point(tusimple):
    lane, w = tusimple.lane, tusimple.size[1]
    xs = lane.xs.copy()
    row = np.flatnonzero(xs[1] != NO_POINT)[0]
    xs[1, row] = w + 1  # beyond the right edge: kept by the converter, mirrors to -2
    flipped = hflip(dataclasses.replace(tusimple, lane=dataclasses.replace(lane, xs=xs))).lane
    mirrored_row = xs.shape[0] - 2  # lane 2 of N becomes lane N - 1
    assert flipped.xs[mirrored_row, row] != NO_POINT
    assert flipped.xs[mirrored_row, row] == pytest.approx(NO_POINT)


def test_flip_twice_is_the_identity(a2d2_synth, tusimple, cityscapes_synth):
    for sample in (a2d2_synth, tusimple, cityscapes_synth):
        back = hflip(hflip(sample))
        np.testing.assert_array_equal(back.image, sample.image)
        for name in ("seg", "depth"):
            if getattr(sample, name) is not None:
                np.testing.assert_array_equal(getattr(back, name), getattr(sample, name))
        if sample.det2d is not None:
            np.testing.assert_allclose(back.det2d.boxes, sample.det2d.boxes)
            np.testing.assert_allclose(back.det3d.boxes, sample.det3d.boxes, atol=1e-12)
        if sample.lane is not None:
            np.testing.assert_array_equal(back.lane.mask, sample.lane.mask)
            np.testing.assert_array_equal(back.lane.xs, sample.lane.xs)


def test_sign_crops_are_never_flipped(gtsrb):
    config = TransformConfig((64, 64), flip_p=1.0, jitter=0.0)
    out = transform_sample(gtsrb, config, np.random.default_rng(0))
    np.testing.assert_array_equal(out.image, resize_to(gtsrb, (64, 64), False).image)
    assert out.sign == resize_to(gtsrb, (64, 64), False).sign
    with pytest.raises(ValueError, match="sign"):
        hflip(gtsrb)


def test_flip_probability_one_always_flips_and_zero_never(kitti):
    for p, expected in ((1.0, True), (0.0, False)):
        config = TransformConfig((128, 256), flip_p=p, jitter=0.0)
        out = transform_sample(kitti, config, np.random.default_rng(3))
        reference = resize_to(kitti, (128, 256), False)
        reference = hflip(reference) if expected else reference
        np.testing.assert_array_equal(out.image, reference.image)
        np.testing.assert_array_equal(out.det2d.boxes, reference.det2d.boxes)


# ---- resize ---------------------------------------------------------------------------------


def object_pixels(sample: Sample, box: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """The box's majority seg class and the (rows, cols) of its pixels inside the box."""
    r, c = rows_in(box), columns_in(box)
    values, counts = np.unique(sample.seg[r, c], return_counts=True)
    cls = int(values[np.argmax(counts)])
    rows, cols = np.nonzero(sample.seg[r, c] == cls)
    return cls, rows + r.start, cols + c.start


@pytest.mark.parametrize("size", [(151, 240), (700, 1000), (96, 480)], ids=["down", "up", "mixed"])
def test_resize_keeps_boxes_on_their_seg_content(a2d2_synth, size):
    out = resize_to(a2d2_synth, size, letterbox=False)
    sy, sx = size[0] / a2d2_synth.size[0], size[1] / a2d2_synth.size[1]
    for box, nbox in zip(a2d2_synth.det2d.boxes, out.det2d.boxes):
        np.testing.assert_allclose(nbox, geo.scale_boxes2d(box, sx, sy)[0])
        cls, rows, cols = object_pixels(a2d2_synth, box)
        centre = geo.scale_pixel_coords(np.array([cols.mean(), rows.mean()]), np.array([sx, sy]))
        # the class pixels near the scaled box all lie inside it; slack: a source pixel partly
        # covered by the object (centre up to 1/2 px outside the box) reaches 1 px past it
        slack_x, slack_y = sx + 0.5, sy + 0.5
        grown = nbox + np.array([-1, -1, 1, 1]) * (max(slack_x, slack_y) + 4)
        win_r, win_c = rows_in(np.clip(grown, 0, None)), columns_in(np.clip(grown, 0, None))
        nrows, ncols = np.nonzero(out.seg[win_r, win_c] == cls)
        nrows, ncols = nrows + win_r.start, ncols + win_c.start
        assert np.all((ncols >= nbox[0] - slack_x) & (ncols <= nbox[2] + slack_x))
        assert np.all((nrows >= nbox[1] - slack_y) & (nrows <= nbox[3] + slack_y))
        # ... and the region is where the scaled original region is
        assert abs(ncols.mean() - centre[0]) < max(1.0, sx) and abs(nrows.mean() - centre[1]) < max(1.0, sy)
        assert len(nrows) == pytest.approx(len(rows) * sx * sy, rel=0.3)


@pytest.mark.parametrize(
    "size,letterbox",
    [((64, 100), False), ((120, 1000), False), ((250, 260), True), ((64, 64), True), ((37, 411), False)],
)
def test_image_content_follows_the_box_mapping_exactly(size, letterbox):
    """A bright block's centroid lands where the box mapping puts its centre, on every resize path."""
    image = np.zeros((301, 479, 3), dtype=np.uint8)
    image[60:90, 100:140] = 200  # pixel centres 100..139 x 60..89
    box = np.array([[99.5, 59.5, 139.5, 89.5]])  # its outer edges
    sample = Sample(
        key="k",
        source="test",
        split="train",
        id="0",
        image=image,
        orig_size=(301, 479),
        det2d=Det2D(boxes=box, classes=np.array([0])),
    )
    out = resize_to(sample, size, letterbox)
    weights = out.image[..., 0].astype(np.float64)
    if letterbox:
        weights[weights == T.IMAGE_PAD] = 0.0
    rows, cols = np.indices(weights.shape)
    centroid = np.array([(cols * weights).sum(), (rows * weights).sum()]) / weights.sum()
    nbox = out.det2d.boxes[0]
    np.testing.assert_allclose(centroid, [(nbox[0] + nbox[2]) / 2, (nbox[1] + nbox[3]) / 2], atol=0.1)


def test_seg_is_sampled_at_the_pixel_centres_and_invents_no_class(a2d2_seg):
    half = resize_to(a2d2_seg, (604, 960), letterbox=False).seg
    # a target pixel's centre (i + 0.5) * 2 - 0.5 = 2i + 0.5 lies in source pixel 2i + 1
    # (plain INTER_NEAREST would take 2i: half a source pixel off the boxes' mapping)
    np.testing.assert_array_equal(half, a2d2_seg.seg[1::2, 1::2])
    odd = resize_to(a2d2_seg, (317, 1001), letterbox=False).seg
    assert set(np.unique(odd).tolist()) <= set(np.unique(a2d2_seg.seg).tolist())


def test_depth_is_never_interpolated(kitti):
    values = set(np.unique(kitti.depth[kitti.depth > 0]).tolist())
    n_points = int((kitti.depth > 0).sum())
    for size, letterbox in (((128, 256), False), ((750, 2484), False), ((500, 600), True), ((200, 2000), False)):
        depth = resize_to(kitti, size, letterbox).depth
        assert depth.dtype == np.float32 and depth.shape == size
        assert set(np.unique(depth[depth > 0]).tolist()) <= values
    # enlarging on both axes: every point lands in its own pixel
    assert int((resize_to(kitti, (750, 2484), False).depth > 0).sum()) == n_points


def test_sparse_depth_enlarging_sends_each_point_to_its_scaled_centre():
    depth = np.zeros((4, 5), np.float32)
    depth[1, 2], depth[3, 4], depth[0, 0] = 10.0, 20.5, 7.25
    out = geo.resize_sparse_depth(depth, (12, 10))  # x3 rows, x2 columns
    expected = np.zeros((12, 10), np.float32)
    expected[4, 5], expected[10, 9], expected[1, 1] = 10.0, 20.5, 7.25  # floor((c + 0.5) s)
    np.testing.assert_array_equal(out, expected)


def test_letterbox_places_content_with_offsets_and_pads_every_map(kitti, a2d2_synth, tusimple):
    out = resize_to(kitti, (256, 512), letterbox=True)
    pl = T.placement(kitti.size, (256, 512), True)
    assert (pl.content_size, pl.top, pl.left) == ((155, 512), 50, 0)
    sx, sy = 512 / 1242, 155 / 375
    np.testing.assert_allclose(out.det2d.boxes, geo.scale_boxes2d(kitti.det2d.boxes, sx, sy) + [0, 50, 0, 50])
    np.testing.assert_allclose(out.K[1, 2], geo.scale_intrinsics(kitti.K, sx, sy)[1, 2] + 50)
    assert np.all(out.image[:50] == T.IMAGE_PAD) and np.all(out.image[205:] == T.IMAGE_PAD)
    assert np.all(out.depth[:50] == 0) and np.all(out.depth[205:] == 0)
    # projecting with the new K is the letterbox mapping of the old projection
    uv, _ = geo.project(kitti.det3d.boxes[:, :3], kitti.K)
    nuv, _ = geo.project(kitti.det3d.boxes[:, :3], out.K)
    np.testing.assert_allclose(nuv, geo.scale_pixel_coords(uv, np.array([sx, sy])) + [0, 50], atol=1e-9)
    tall = resize_to(a2d2_synth, (400, 300), letterbox=True)  # 302x480 -> content 189x300, pad above and below
    pl = T.placement(a2d2_synth.size, (400, 300), True)
    top, nh = pl.top, pl.content_size[0]
    assert np.all(tall.seg[:top] == IGNORE_INDEX) and np.all(tall.seg[top + nh :] == IGNORE_INDEX)
    assert np.all(tall.seg[top : top + nh] != IGNORE_INDEX) == np.all(a2d2_synth.seg != IGNORE_INDEX)
    wide = resize_to(tusimple, (256, 640), letterbox=True)  # 720x1280 -> content 256x455, pad left/right
    pl = T.placement(tusimple.size, (256, 640), True)
    assert pl.left > 0 and pl.top == 0
    assert np.all(wide.lane.mask[:, : pl.left] == IGNORE_INDEX)
    assert np.all(wide.lane.mask[:, pl.left + pl.content_size[1] :] == IGNORE_INDEX)
    assert np.all(wide.image[:, : pl.left] == T.IMAGE_PAD)


def test_lanes_are_redrawn_from_the_scaled_polylines(tusimple):
    out = resize_to(tusimple, (256, 512), letterbox=False)
    sx, sy = 512 / 1280, 256 / 720
    valid = tusimple.lane.xs != NO_POINT
    np.testing.assert_allclose(out.lane.xs[valid], geo.scale_pixel_coords(tusimple.lane.xs[valid], sx))
    assert np.all(out.lane.xs[~valid] == NO_POINT)
    np.testing.assert_allclose(out.lane.h_samples, geo.scale_pixel_coords(tusimple.lane.h_samples, sy))
    assert set(np.unique(out.lane.mask).tolist()) == {0, 1, 2, 3, 4}
    for k in range(1, 5):  # every lane is still one connected line
        assert cv2.connectedComponents((out.lane.mask == k).astype(np.uint8), connectivity=8)[0] == 2


def test_gtsrb_crop_is_upscaled_with_its_roi(gtsrb):
    out = resize_to(gtsrb, (256, 512), letterbox=False)
    sy, sx = 256 / gtsrb.size[0], 512 / gtsrb.size[1]
    np.testing.assert_allclose(out.sign.roi, geo.scale_boxes2d(np.array(gtsrb.sign.roi), sx, sy)[0])
    assert out.sign.class_id == gtsrb.sign.class_id
    assert out.image.shape == (256, 512, 3) and out.image.dtype == np.uint8


@pytest.mark.parametrize("letterbox", [False, True])
def test_every_transformed_real_sample_validates(kitti, tusimple, gtsrb, a2d2_seg, a2d2_synth, letterbox):
    config = TransformConfig((256, 512), letterbox=letterbox, flip_p=1.0)
    for sample in (kitti, tusimple, gtsrb, a2d2_seg, a2d2_synth):
        out = transform_sample(sample, config, np.random.default_rng(0))
        assert out.size == (256, 512)
        assert validate(out) == [], sample.key
        assert out.tasks == sample.tasks


def test_reduced_decode_factor_is_the_largest_that_keeps_the_target():
    assert T.reduced_decode_factor((1208, 1920), (256, 512)) == 2
    assert T.reduced_decode_factor((1208, 1920), (161, 256)) == 4
    assert T.reduced_decode_factor((1024, 2048), (128, 256)) == 8
    assert T.reduced_decode_factor((375, 1242), (256, 512)) == 1
    assert T.reduced_decode_factor((54, 53), (256, 512)) == 1
    assert T.reduced_decode_factor((1207, 1919), (302, 480)) == 4  # libjpeg rounds the size up


def test_resizing_a_reduced_jpeg_decode_matches_the_full_decode(kitti):
    data = np.frombuffer(encode_image(kitti.image), dtype=np.uint8)  # a real KITTI JPEG, 375x1242
    size = (128, 300)
    f = T.reduced_decode_factor(kitti.size, size)
    assert f == 2
    reduced = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_2), cv2.COLOR_BGR2RGB)
    assert reduced.shape[:2] == (188, 621)  # ceil(375 / 2): not the labels' exact half
    full = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    placeholder = dataclasses.replace(kitti, image=np.broadcast_to(np.uint8(0), kitti.size + (3,)))
    fast = resize_to(placeholder, size, False, image=reduced)
    slow = resize_to(kitti, size, False, image=full)
    assert np.abs(fast.image.astype(int) - slow.image.astype(int)).mean() < 1.0
    np.testing.assert_array_equal(fast.det2d.boxes, slow.det2d.boxes)
    np.testing.assert_array_equal(fast.depth, slow.depth)


# ---- randomness and jitter ------------------------------------------------------------------


def test_same_seed_gives_identical_outputs_and_different_seeds_differ(a2d2_synth):
    config = TransformConfig((128, 256), flip_p=0.5, jitter=0.3)
    a = transform_sample(a2d2_synth, config, np.random.default_rng(7))
    b = transform_sample(a2d2_synth, config, np.random.default_rng(7))
    for name in ("image", "seg", "depth", "K"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.det2d.boxes, b.det2d.boxes)
    np.testing.assert_array_equal(a.det3d.boxes, b.det3d.boxes)
    assert a.steer == b.steer
    outputs = [transform_sample(a2d2_synth, config, np.random.default_rng(seed)) for seed in range(8)]
    assert len({o.image.tobytes() for o in outputs}) == 8
    assert len({o.steer.angle_deg for o in outputs}) == 2  # flipped and not flipped both drawn


def test_each_augmented_sample_draws_the_same_number_of_uniforms(gtsrb, kitti):
    config = TransformConfig((64, 128))
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    transform_sample(gtsrb, config, rng_a)
    transform_sample(kitti, config, rng_b)
    assert rng_a.random() == rng_b.random()
    rng_c = np.random.default_rng(1)
    transform_sample(kitti, TransformConfig((64, 128), augment=False), rng_c)
    assert rng_c.random() == np.random.default_rng(1).random()  # evaluation draws nothing


def test_jitter_changes_the_image_only(a2d2_synth):
    config = TransformConfig((151, 240), flip_p=0.0, jitter=0.4)
    out = transform_sample(a2d2_synth, config, np.random.default_rng(0))
    plain = resize_to(a2d2_synth, (151, 240), False)
    assert out.image.dtype == np.uint8 and out.image.shape == plain.image.shape
    assert not np.array_equal(out.image, plain.image)
    for name in ("seg", "depth", "K"):
        np.testing.assert_array_equal(getattr(out, name), getattr(plain, name))
    np.testing.assert_array_equal(out.det2d.boxes, plain.det2d.boxes)
    np.testing.assert_array_equal(out.det3d.boxes, plain.det3d.boxes)
    assert out.steer == plain.steer


def test_jitter_is_brightness_then_contrast_then_saturation(a2d2_seg):
    image = a2d2_seg.image[::8, ::8]
    b, c, s = 1.1, 0.8, 1.3
    x = image.astype(np.float64)
    luma = np.array([0.299, 0.587, 0.114])
    x = b * x
    x = c * x + (1 - c) * (x @ luma).mean()
    x = s * x + (1 - s) * (x @ luma)[..., None]
    expected = np.clip(np.rint(x), 0, 255)
    got = T.color_jitter(image, b, c, s)
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_letterbox_padding_is_not_jittered(kitti):
    config = TransformConfig((256, 512), letterbox=True, flip_p=0.0, jitter=0.5)
    out = transform_sample(kitti, config, np.random.default_rng(0))
    assert np.all(out.image[:50] == T.IMAGE_PAD)


def test_nothing_is_done_at_the_target_size_without_augmentation(kitti):
    config = TransformConfig(kitti.size, augment=False)
    assert transform_sample(kitti, config, np.random.default_rng(0)) is kitti
    assert resize_to(kitti, kitti.size, letterbox=True) is kitti


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="image_size"):
        TransformConfig((0, 10))
    with pytest.raises(ValueError, match="flip_p"):
        TransformConfig((10, 10), flip_p=1.5)
    with pytest.raises(ValueError, match="jitter"):
        TransformConfig((10, 10), jitter=1.0)
