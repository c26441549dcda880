"""``--max-side``: shrink a sample's image and make every label follow consistently."""

from __future__ import annotations

import dataclasses

import cv2

from mtl_data.schema import geometry as geo
from mtl_data.schema.placement import place_labels, placement
from mtl_data.schema.sample import Sample


def resize_sample(sample: Sample, max_side: int | None) -> Sample:
    """Downscale ``sample`` so its longer side is at most ``max_side`` (never upscales).

    The image uses area interpolation; the labels follow ``schema.placement.place_labels``: the
    seg map nearest neighbour with centre alignment (``INTER_NEAREST_EXACT``: plain
    ``INTER_NEAREST`` is shifted by half a pixel); previous frames exactly as the image;
    sparse depth min-pooling; 2D boxes, lane
    polylines, the sign ROI and ``K`` scaled with the pixel-centre convention of
    ``geometry.scale_pixel_coords``; lane masks redrawn from the scaled polylines. 3D boxes are
    metric and stay.
    """
    h, w = sample.size
    nh, nw = geo.scaled_size((h, w), max_side)
    if (nh, nw) == (h, w):
        return sample
    image, *prev = (cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA) for im in (sample.image, *sample.prev))
    placed = place_labels(sample, placement((h, w), (nh, nw), False))
    return dataclasses.replace(sample, image=image, prev=tuple(prev), **placed)
