"""Previous frames in the loader (MultiNet++ two-frame input): ``prevK`` members decoded like the
image, transformed with frame t's exact placement, flip and jitter, collated as ``image_prev``
(B, N, 3, H, W) and ``prev_present`` (B, N); a sample without one gets zeros and False."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from test_train_loader_decode import raw_of, stored_sample

from mtl_data.train.data.decode import CorruptSampleError, decode
from mtl_data.train.data.stages import BatchRing
from mtl_data.train.data.targets import TargetConfig, collate, encode_example, expand
from mtl_data.train.data.transforms import TransformConfig, transform_frames, transform_view

OUT = (96, 160)


def jpg(image: np.ndarray) -> bytes:
    """RGB -> JPEG bytes, as the ingest stores an image member."""
    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def other_frame(image: np.ndarray, shift: int) -> np.ndarray:
    """A distinguishable 'previous frame': the image shifted right by ``shift`` pixels."""
    return np.roll(image, shift, axis=1)


@pytest.mark.parametrize("target", [None, (60, 100)], ids=["full-size", "reduced-decode"])
def test_previous_frames_decode_like_the_image_and_stop_at_the_first_missing(target):
    sample = stored_sample()
    t1, t3 = other_frame(sample.image, 7), other_frame(sample.image, 21)
    raw = raw_of(sample, **{"prev1.jpg": jpg(t1), "prev3.jpg": jpg(t3)})  # no prev2: t-3 is not used
    decoded = decode(raw, target_hw=target, prev_frames=3)
    assert len(decoded.prev) == 1
    image = decoded.image if decoded.image is not None else decoded.sample.image
    assert decoded.prev[0].shape == image.shape
    alone = decode(raw_of(sample, jpg=jpg(t1)), target_hw=target)  # t-1 decoded as if it were frame t
    expected = alone.image if alone.image is not None else alone.sample.image
    assert np.array_equal(decoded.prev[0], expected)
    assert decode(raw, target_hw=target).prev == ()  # not asked for: not decoded


def test_a_previous_frame_of_another_size_is_a_corrupt_sample():
    sample = stored_sample()
    raw = raw_of(sample, **{"prev1.jpg": jpg(sample.image[:, :-8])})
    with pytest.raises(CorruptSampleError, match="prev1.jpg: decoded to 240x392, the image to 240x400"):
        decode(raw, prev_frames=1)
    with pytest.raises(CorruptSampleError, match="prev1.jpg: image does not decode"):
        decode(raw_of(sample, **{"prev1.jpg": b"not a jpeg"}), prev_frames=1)


@pytest.mark.parametrize("letterbox", [False, True])
def test_previous_frames_get_exactly_frame_ts_resize_flip_and_jitter(letterbox):
    sample = stored_sample()
    config = TransformConfig(OUT, letterbox=letterbox, augment=True, flip_p=0.5, jitter=0.4)
    flips = set()
    for seed in range(12):
        # a previous frame identical to frame t must come out identical to frame t
        out, view, (same, shifted) = transform_frames(
            sample, config, np.random.default_rng(seed), prev=(sample.image, other_frame(sample.image, 40))
        )
        assert np.array_equal(same, out.image), seed
        assert not np.array_equal(shifted, out.image)
        flips.add(view.flipped)
        # frame t and the draws are those of transform_view: adding frames changes nothing
        alone, alone_view = transform_view(sample, config, np.random.default_rng(seed))
        assert alone_view == view and np.array_equal(alone.image, out.image) and np.array_equal(alone.seg, out.seg)
    assert flips == {True, False}


def test_image_prev_and_prev_present_in_a_batch_with_zeros_where_a_frame_is_absent():
    sample = stored_sample()
    config = TransformConfig(OUT, augment=False)
    targets = TargetConfig(("seg",), OUT, prev_frames=2)
    frames = (other_frame(sample.image, 5), other_frame(sample.image, 9))
    examples = []
    for prev in (frames, frames[:1], ()):
        out, view, moved = transform_frames(sample, config, np.random.default_rng(0), prev=prev)
        examples.append(encode_example(out, config=targets, view=view, prev=moved))
    examples.append(encode_example(None, targets))  # a masked dummy
    wide = collate(examples)  # the contract directly
    assert wide["image_prev"].shape == (4, 2, 3, *OUT) and wide["image_prev"].dtype == torch.float32
    assert wide["prev_present"].tolist() == [[True, True], [True, False], [False, False], [False, False]]
    assert torch.equal(wide["image_prev"][0, 0], collate([examples[0]])["image_prev"][0, 0])
    # frame t-1 of sample 0, normalised as an image is
    alone = collate([{**examples[0], "image": examples[0]["image_prev"][0]}])["image"][0]
    assert torch.equal(wide["image_prev"][0, 0], alone)
    # absent frames are zeros before normalisation (the model replaces them: prev_present)
    compact = collate(examples, compact=True)
    assert compact["image_prev"].dtype == torch.uint8 and not compact["image_prev"][1, 1].any()
    assert not compact["image_prev"][2:].any()
    # compact (the wire format) widened on arrival, with and without the shared-memory ring
    ring = BatchRing(2)
    ringed = collate(examples, compact=True, out=ring.next_slot(examples, 4))
    for batch in (compact, ringed):
        widened = expand(batch)
        assert torch.equal(widened["image_prev"], wide["image_prev"])
        assert torch.equal(widened["prev_present"], wide["prev_present"])


def test_without_previous_frames_the_batch_is_unchanged():
    sample = stored_sample()
    out, view = transform_view(sample, TransformConfig(OUT, augment=False), np.random.default_rng(0))
    example = encode_example(out, TargetConfig(("seg",), OUT), view=view)
    assert "image_prev" not in example and "prev_present" not in example
    assert "image_prev" not in collate([example])


# ---- end to end: shards ingested with --prev-frames ---------------------------------------------


def test_the_loader_streams_the_previous_frames_the_ingest_stored(synth_shards_frames):
    import polars as pl

    from mtl_data.shards.reader import ShardSet
    from mtl_data.train.data.loader import build_loader

    manifest = ShardSet.open(synth_shards_frames).manifest.filter(pl.col("split") == "train")
    stored = dict(zip(manifest["key"].to_list(), manifest["prev_frames"].to_list()))
    assert {n for n in stored.values()} >= {0, 1, 2}  # some samples have none, one, two
    loader = build_loader(
        synth_shards_frames, split="train", infinite=False, workers=0, frames=3, batch_size=4, image_size=(64, 128)
    )
    seen = {}
    for batch in loader:
        assert batch["image_prev"].shape[1:] == (2, 3, 64, 128)
        for b, key in enumerate(batch["key"]):
            if key:
                present = batch["prev_present"][b].tolist()
                seen[key] = sum(present)
                assert present == sorted(present, reverse=True)  # t-1 before t-2
                for k in range(2):  # an absent frame is zeros, normalised as an image is
                    zero = ((0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])).view(
                        3, 1, 1
                    )
                    is_zero = torch.allclose(batch["image_prev"][b, k], zero.expand(3, 64, 128))
                    assert is_zero != present[k], (key, k)
    assert seen == {k: n for k, n in stored.items() if k in seen} and len(seen) == len(stored)
