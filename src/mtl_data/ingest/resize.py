"""``--max-side``: shrink a sample's image and make every label follow consistently."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from mtl_data.schema import geometry as geo
from mtl_data.schema.lanes import NO_POINT, rasterize_lanes
from mtl_data.schema.sample import Lanes, Sample, Sign


def resize_sample(sample: Sample, max_side: int | None) -> Sample:
    """Downscale ``sample`` so its longer side is at most ``max_side`` (never upscales).

    The image uses area interpolation; the seg map nearest neighbour with centre alignment
    (``INTER_NEAREST_EXACT``: plain ``INTER_NEAREST`` is shifted by half a pixel); sparse depth
    min-pooling; 2D boxes, lane polylines, the sign ROI and ``K`` are scaled with the
    pixel-centre convention of ``geometry.scale_pixel_coords``; lane masks are redrawn from the
    scaled polylines. 3D boxes are metric and stay.
    """
    h, w = sample.size
    nh, nw = geo.scaled_size((h, w), max_side)
    if (nh, nw) == (h, w):
        return sample
    sx, sy = nw / w, nh / h
    changes: dict = {"image": cv2.resize(sample.image, (nw, nh), interpolation=cv2.INTER_AREA)}
    if sample.K is not None:
        changes["K"] = geo.scale_intrinsics(sample.K, sx, sy)
    if sample.seg is not None:
        changes["seg"] = cv2.resize(sample.seg, (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
    if sample.depth is not None:
        changes["depth"] = geo.resize_sparse_depth(sample.depth, (nh, nw))
    if sample.det2d is not None:
        d = sample.det2d
        changes["det2d"] = dataclasses.replace(
            d, boxes=geo.scale_boxes2d(d.boxes, sx, sy), ignore=geo.scale_boxes2d(d.ignore, sx, sy),
            amodal=None if d.amodal is None else geo.scale_boxes2d(d.amodal, sx, sy))
    if sample.sign is not None and sample.sign.roi is not None:
        roi = geo.scale_boxes2d(np.asarray(sample.sign.roi), sx, sy)[0]
        changes["sign"] = Sign(sample.sign.class_id, tuple(float(v) for v in roi))
    if sample.lane is not None:
        # Lanes are redrawn from the scaled polylines: resampling a thin-line mask would break
        # the lines apart or thicken them unevenly.
        lane = sample.lane
        xs = np.where(lane.xs == NO_POINT, NO_POINT, geo.scale_pixel_coords(lane.xs, sx))
        h_samples = geo.scale_pixel_coords(lane.h_samples, sy)
        thickness = lane.thickness * min(sx, sy)
        changes["lane"] = Lanes(mask=rasterize_lanes(xs, h_samples, (nh, nw), thickness),
                                h_samples=h_samples, xs=xs, thickness=thickness)
    return dataclasses.replace(sample, **changes)

