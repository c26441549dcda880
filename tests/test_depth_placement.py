"""``placement.place_depth_points`` (the loader's depth path: points scattered straight to the
training size) against the dense reference ``_resize_depth`` (``geometry.resize_sparse_depth``
+ padding), on random sparse maps with many points per output pixel, ties included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_data.schema.placement import _resize_depth, place_depth_points, placement
from mtl_data.shards.depthpoints import DepthPoints


@st.composite
def sparse_maps(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    density = draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
    # few distinct values: many ties between points that share an output pixel
    values = rng.choice(np.array([1, 2, 3, 256, 30000, 65535], np.uint16), size=(h, w))
    return np.where(rng.random((h, w)) < density, values, 0).astype(np.uint16)


@settings(max_examples=300, deadline=None)
@given(sparse_maps(), st.integers(1, 60), st.integers(1, 60), st.booleans())
def test_points_scattered_to_a_placement_are_the_dense_map_placed(depth, out_h, out_w, letterbox):
    pl = placement(depth.shape, (out_h, out_w), letterbox)
    points = DepthPoints.from_map(depth)
    got = place_depth_points(points.index, points.value, pl)
    expected = _resize_depth(depth.astype(np.float32) / 256, pl)  # float32 metres, exact in /256
    assert got.dtype == np.uint16 and got.shape == (out_h, out_w)
    np.testing.assert_array_equal(got, np.rint(expected * 256).astype(np.uint16))
