"""Training targets and the batch contract, on real samples read back from ingested shards."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch
from conftest import fixture_path, ingest_cli

from mtl_data.ingest import CONVERTERS
from mtl_data.schema.sample import TASKS, Det2D, Det3D, Sample
from mtl_data.shards.reader import ShardSet
from mtl_data.train.data.targets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TargetConfig,
    collate,
    decode_grid,
    encode_example,
    encode_grid,
    expand,
    normalize_images,
)
from mtl_data.train.data.transforms import TransformConfig, transform_sample, transform_view

SIZE = (256, 512)
EVAL = TransformConfig(SIZE, augment=False)


def convert(name: str, root, index: int = 0) -> Sample:
    conv = CONVERTERS[name](root)
    return conv.convert(conv.frames()[index])


@pytest.fixture(scope="module")
def kitti() -> Sample:
    """Real KITTI frame 000001 at the training size (truck, car, cyclist; 4 ignore regions)."""
    return transform_sample(convert("kitti", fixture_path("kitti", "object"), 1), EVAL, np.random.default_rng(0))


def sample_with_boxes(boxes, classes, size=SIZE) -> Sample:
    return Sample(
        key="k",
        source="test",
        split="train",
        id="0",
        image=np.zeros(size + (3,), np.uint8),
        orig_size=size,
        det2d=Det2D(boxes=np.asarray(boxes, np.float64).reshape(-1, 4), classes=np.asarray(classes, np.int64)),
    )


def sort_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


# ---- the YOLO grid --------------------------------------------------------------------------


def test_grid_round_trip_gives_back_the_real_kitti_boxes(kitti):
    config = TargetConfig(image_size=SIZE)
    ex = encode_example(kitti, config)
    assert ex["det2d_mask"].sum() == len(kitti.det2d.boxes) == 3 and ex["det2d_dropped"] == 0
    [(boxes, classes)] = decode_grid(ex["det2d"], ex["det2d_mask"], SIZE)
    order = np.lexsort(kitti.det2d.boxes.T[::-1])
    got = np.lexsort(boxes.T[::-1])
    np.testing.assert_allclose(boxes[got], kitti.det2d.boxes[order], atol=1e-3)
    np.testing.assert_array_equal(classes[got], kitti.det2d.classes[order])


def test_grid_vector_is_cell_offset_size_objectness_and_one_hot():
    h, w = SIZE
    box = [100.0, 40.0, 180.0, 90.0]  # centre (140, 65) -> u = 140.5 / 512 * 8 = 2.195, v = 65.5 / 256 * 8 = 2.047
    target, mask = encode_grid(np.array([box]), np.array([3]), SIZE, grid=8, anchors=2, num_classes=5)
    assert target.shape == (8, 8, 2, 10) and target.dtype == np.float32 and mask.dtype == bool
    assert np.argwhere(mask).tolist() == [[2, 2, 0]]  # row 2, column 2, slot 0
    np.testing.assert_allclose(
        target[2, 2, 0], [140.5 / w * 8 - 2, 65.5 / h * 8 - 2, 80 / w, 50 / h, 1, 0, 0, 0, 1, 0], rtol=1e-6
    )
    assert np.count_nonzero(target) == np.count_nonzero(target[2, 2, 0])


def test_boxes_of_one_cell_fill_slots_by_area_and_the_rest_are_dropped_and_counted():
    # four boxes centred in cell (0, 0) of an 8x8 grid over 256x512 (cells 32x64), areas 4, 16, 36, 9
    half = np.array([1.0, 2.0, 3.0, 1.5])
    boxes = np.column_stack([20 - half, 10 - half, 20 + half, 10 + half])
    boxes = np.vstack([boxes, [[600.0, 10.0, 640.0, 20.0]]])  # centre outside the image
    config = TargetConfig(image_size=SIZE, anchors=2, max_boxes=8)
    ex = encode_example(sample_with_boxes(boxes, [0, 1, 2, 3, 4]), config)
    assert ex["det2d_mask"].sum() == 2 and ex["det2d_mask"][0, 0].tolist() == [True, True]
    [(kept, classes)] = decode_grid(ex["det2d"], ex["det2d_mask"], SIZE)
    assert classes.tolist() == [2, 1]  # largest first
    np.testing.assert_allclose(kept, boxes[[2, 1]], atol=1e-3)
    assert ex["det2d_dropped"] == 3  # two without a slot, one centred outside the image
    assert ex["det2d_count"] == 5  # the raw list keeps them all


def test_raw_boxes_are_padded_and_cut_at_max_boxes_in_sample_order(kitti):
    config = TargetConfig(image_size=SIZE, max_boxes=2)
    ex = encode_example(kitti, config)
    np.testing.assert_allclose(ex["det2d_boxes"], kitti.det2d.boxes[:2], rtol=1e-6)
    np.testing.assert_allclose(ex["det3d_boxes"], kitti.det3d.boxes[:2], rtol=1e-6)  # rows stay paired
    assert (ex["det2d_count"], ex["det2d_dropped"], ex["det3d_count"], ex["det3d_dropped"]) == (2, 1, 2, 1)
    assert ex["det2d_mask"].sum() == 2
    assert (ex["det2d_ignore_count"], ex["det2d_ignore"].shape) == (2, (2, 4))
    wide = encode_example(kitti, TargetConfig(image_size=SIZE, max_boxes=6))
    assert wide["det2d_classes"].tolist() == kitti.det2d.classes.tolist() + [-1, -1, -1]
    assert np.all(wide["det2d_boxes"][3:] == 0) and np.all(wide["det3d_boxes"][3:] == 0)
    assert wide["det2d_ignore_count"] == 4 and np.all(wide["det2d_ignore"][4:] == 0)


def test_class_ids_outside_the_configured_classes_are_refused():
    with pytest.raises(ValueError, match="num_classes=3"):
        encode_example(sample_with_boxes([[0, 0, 10, 10]], [5]), TargetConfig(image_size=SIZE, num_classes=3))


# ---- examples -------------------------------------------------------------------------------


def test_dummy_example_is_masked_zeros_with_fixed_shapes(kitti):
    config = TargetConfig(image_size=SIZE)
    dummy, real = encode_example(None, config), encode_example(kitti, config)
    assert (dummy["key"], dummy["source"]) == ("", "")
    assert dummy["present"] == {t: False for t in TASKS}
    assert dummy.keys() == real.keys()
    for key, value in dummy.items():
        if key in ("key", "source", "present"):
            continue
        assert np.shape(value) == np.shape(real[key]), key
        assert np.asarray(value).dtype == np.asarray(real[key]).dtype, key
        fill = -1 if key.endswith("_classes") else 0
        assert np.all(np.asarray(value) == fill), key


def test_examples_carry_only_the_configured_tasks(kitti):
    ex = encode_example(kitti, TargetConfig(tasks=("det2d", "sign"), image_size=SIZE))
    assert ex["present"] == {"det2d": True, "sign": False}
    assert not any(k in ex for k in ("seg", "depth", "det3d_boxes", "steer", "lane"))
    assert ex["sign"] == 0 and ex["K_known"]


def test_a_sample_not_at_the_target_size_is_refused(kitti):
    with pytest.raises(ValueError, match="transform it"):
        encode_example(kitti, TargetConfig(image_size=(128, 256)))


def test_unknown_tasks_are_refused():
    with pytest.raises(ValueError, match="unknown tasks"):
        TargetConfig(tasks=("seg", "flow"))


# ---- the batch ------------------------------------------------------------------------------


@pytest.fixture
def shards(cli, tmp_path):
    """The real GTSRB, KITTI and TuSimple fixtures ingested into one shards root."""
    out = tmp_path / "shards"
    for name, root in (
        ("gtsrb", fixture_path("gtsrb", "official")),
        ("kitti", fixture_path("kitti", "object")),
        ("tusimple", fixture_path("tusimple")),
    ):
        result = ingest_cli(cli, name, root, out)
        assert result.code == 0, result.err
    return ShardSet.open(out)


def test_collate_a_mixed_batch_of_a_sign_crop_a_kitti_frame_and_a_tusimple_frame(shards):
    keys = ["gtsrb_test_00000", "kitti_train_000001", "tusimple_train_clips_0601_1494453497604532231_20"]
    samples = [shards.read_sample(k) for k in keys]
    config = TargetConfig(image_size=SIZE)
    rng = np.random.default_rng(0)
    examples = [encode_example(transform_sample(s, TransformConfig(SIZE), rng), config) for s in samples]
    examples.append(encode_example(None, config))
    batch = collate(examples)
    b, (h, w), m = 4, SIZE, config.max_boxes
    s, a, c = config.grid, config.anchors, config.num_classes
    expected = {
        "image": ((b, 3, h, w), torch.float32),
        "K": ((b, 3, 3), torch.float32),
        "K_known": ((b,), torch.bool),
        "seg": ((b, h, w), torch.int64),
        "depth": ((b, h, w), torch.float32),
        "det2d": ((b, s, s, a, 5 + c), torch.float32),
        "det2d_mask": ((b, s, s, a), torch.bool),
        "det2d_boxes": ((b, m, 4), torch.float32),
        "det2d_classes": ((b, m), torch.int64),
        "det2d_count": ((b,), torch.int64),
        "det2d_ignore": ((b, m, 4), torch.float32),
        "det2d_ignore_count": ((b,), torch.int64),
        "det2d_dropped": ((b,), torch.int64),
        "det3d_boxes": ((b, m, 7), torch.float32),
        "det3d_classes": ((b, m), torch.int64),
        "det3d_count": ((b,), torch.int64),
        "det3d_dropped": ((b,), torch.int64),
        "steer": ((b,), torch.float32),
        "sign": ((b,), torch.int64),
        "lane": ((b, h, w), torch.int64),
        "size": ((b, 2), torch.int64),
        "scale": ((b, 2), torch.float32),
        "offset": ((b, 2), torch.float32),
        "flipped": ((b,), torch.bool),
        "det3d_rotation": ((b, m, 3, 3), torch.float32),
        "det3d_full": ((b, m), torch.bool),
        "lane_h": ((b, config.lane_rows), torch.float32),
        "lane_rows": ((b,), torch.int64),
        "lane_xs": ((b, config.max_lanes, config.lane_rows), torch.float32),
        "lane_count": ((b,), torch.int64),
    }
    assert set(batch) == set(expected) | {"key", "source", "present"}
    for key, (shape, dtype) in expected.items():
        assert (tuple(batch[key].shape), batch[key].dtype) == (shape, dtype), key
    assert batch["key"] == keys + [""] and batch["source"] == ["gtsrb", "kitti", "tusimple", ""]
    assert set(batch["present"]) == set(TASKS)
    for task, mask in batch["present"].items():
        assert mask.dtype == torch.bool and mask.shape == (b,)
        assert mask.tolist() == [task in smp.tasks for smp in samples] + [False], task
    assert batch["sign"][0] == samples[0].sign.class_id
    assert batch["det2d_count"].tolist() == [0, 3, 0, 0]
    assert batch["K_known"].tolist() == [False, True, False, False]
    assert torch.all(batch["K"][[0, 2, 3]] == 0)
    assert set(torch.unique(batch["lane"][2]).tolist()) == {0, 1, 2, 3, 4}
    assert batch["depth"][1].gt(0).any() and not batch["depth"][[0, 2, 3]].any()
    # the lane polylines of the TuSimple frame
    assert batch["lane_count"].tolist() == [0, 0, len(samples[2].lane.xs), 0]
    assert batch["lane_rows"][2] == len(samples[2].lane.h_samples)
    # the image is the examples' uint8 pixels, normalized with ImageNet statistics
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for i, ex in enumerate(examples):
        pixels = (batch["image"][i] * std + mean) * 255
        np.testing.assert_allclose(pixels.permute(1, 2, 0).numpy(), ex["image"], atol=1e-3)
    assert batch["image"].is_contiguous()


def test_collate_can_leave_normalization_to_the_device(kitti):
    examples = [encode_example(kitti, TargetConfig(image_size=SIZE))] * 2
    raw = collate(examples, normalize=False)["image"]
    assert raw.dtype == torch.uint8 and raw.shape == (2, 3) + SIZE
    torch.testing.assert_close(normalize_images(raw), collate(examples)["image"])


def test_compact_batches_expand_to_exactly_the_contract(kitti, shards):
    samples = [
        transform_sample(shards.read_sample(k), TransformConfig(SIZE, augment=False), np.random.default_rng(0))
        for k in sorted(shards.manifest.filter(pl.col("has_seg") | pl.col("has_lane"))["key"].to_list())[:3]
    ]
    examples = [encode_example(s, TargetConfig(image_size=SIZE)) for s in [kitti, *samples]]
    compact = collate(examples, compact=True)
    assert compact["image"].dtype == compact["seg"].dtype == compact["lane"].dtype == torch.uint8
    full, expanded = collate(examples), expand(compact)
    assert expanded.keys() == full.keys()
    for key, value in full.items():
        if isinstance(value, torch.Tensor):
            assert expanded[key].dtype == value.dtype, key
            torch.testing.assert_close(expanded[key], value, msg=key)
    assert expand(full)["image"] is full["image"]  # a contract batch comes back unchanged


def test_collate_refuses_examples_of_different_configs(kitti):
    a = encode_example(kitti, TargetConfig(image_size=SIZE))
    b = encode_example(kitti, TargetConfig(tasks=("seg",), image_size=SIZE))
    with pytest.raises(ValueError, match="one TargetConfig"):
        collate([a, b])
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_decode_grid_reads_batched_torch_targets(kitti):
    config = TargetConfig(image_size=SIZE)
    empty = dataclasses.replace(
        kitti,
        det2d=Det2D(boxes=np.zeros((0, 4)), classes=np.zeros(0, np.int64)),
        det3d=Det3D(boxes=np.zeros((0, 7)), classes=np.zeros(0, np.int64)),
    )
    batch = collate([encode_example(kitti, config), encode_example(empty, config)])
    decoded = decode_grid(batch["det2d"], batch["det2d_mask"], SIZE)
    assert [len(boxes) for boxes, _ in decoded] == [3, 0]
    np.testing.assert_allclose(sort_rows(decoded[0][0]), sort_rows(kitti.det2d.boxes), atol=1e-3)
    assert batch["present"]["det2d"].tolist() == [True, True]  # zero boxes is a label, not an absence


def test_the_view_fields_say_where_each_output_pixel_came_from(shards):
    """``size``/``scale``/``offset``/``flipped`` invert the letterbox and flip: a box mapped back
    through them is the stored box again."""
    sample = shards.read_sample("kitti_train_000001")
    config = TransformConfig(SIZE, letterbox=True, augment=True, flip_p=1.0, jitter=0.0)
    out, view = transform_view(sample, config, np.random.default_rng(0))
    assert view.flipped
    batch = collate([encode_example(out, TargetConfig(image_size=SIZE), view=view)])
    assert batch["size"][0].tolist() == list(sample.size)
    assert batch["flipped"].tolist() == [True]
    sy, sx = batch["scale"][0].tolist()
    top, left = batch["offset"][0].tolist()
    assert (top, left) == (view.placement.top, view.placement.left) and top > 0
    boxes = out.det2d.boxes  # (N, 4) in the flipped, letterboxed output
    back_x = view.to_stored_x(boxes[:, [2, 0]])  # a flip swaps x1 and x2
    back_y = view.to_stored_y(boxes[:, [1, 3]])
    np.testing.assert_allclose(
        np.column_stack([back_x[:, 0], back_y[:, 0], back_x[:, 1], back_y[:, 1]]), sample.det2d.boxes, atol=1e-9
    )
    np.testing.assert_allclose([sy, sx], [view.placement.sy, view.placement.sx], rtol=1e-6)


def test_uint16_depth_widens_exactly_on_every_device_path():
    """The route taken off the CPU (int16 bits, widened, masked) gives what the CPU's own
    uint16 conversion gives, values above 32767 included."""
    from mtl_data.train.data.targets import uint16_to

    values = torch.tensor([0, 1, 255, 256, 32767, 32768, 40000, 65535], dtype=torch.uint16)
    via_bits = uint16_to(values, torch.float32, via_bits=True)
    assert torch.equal(via_bits, uint16_to(values, torch.float32))
    assert via_bits.tolist() == [0, 1, 255, 256, 32767, 32768, 40000, 65535]
