"""Monocular 3D object detection (``det3d``): head, loss, decoding, Cityscapes-3D score and export.

**Head** (CenterNet, Zhou et al. 2019, "Objects as Points"; SMOKE, Liu et al. 2020): on the
stride-4 feature map (``Det3DConfig.stride``), one Conv3x3-ReLU-Conv1x1 branch per output:

=================  ========  =====================================================================
key                channels  meaning at the cell of an object's projected 3D centre
=================  ========  =====================================================================
``heatmap``        C         logits of the per-class centre heatmap (bias -2.19: sigmoid = 0.1)
``offset``         2         sub-cell position of the projected centre, (du, dv) in cells
``depth``          1         ``log(z virtual_focal / sqrt(fx fy))``: log "virtual depth" (below)
``size``           3         ``log(l, w, h)``, metres
``orientation``    2 n       multi-bin observation angle alpha = yaw - atan2(x, z): n bin logits, n
                             residuals (below; n = ``heading_bins``, 12)
``pitch_roll``     4 n       multi-bin pitch (n logits, n residuals), then roll (n logits, n residuals)
=================  ========  =====================================================================

Cells follow the pixel-centre convention: output pixel u lies at cell coordinate
``f = (u + 0.5) / s - 0.5``; an object belongs to cell ``floor(f + 0.5)`` and its offset is
``f - cell`` in [-0.5, 0.5). Decoding inverts this exactly.

**Rotation.** A box's rotation is ``R = R_y(yaw) R_z(pitch) R_x(roll)`` in the optical frame
(``geometry.yaw_pitch_roll_to_rotation``: yaw about the optical y axis as KITTI's rotation_y,
then pitch about the box's width axis, roll about its length axis); an upright box has
``pitch = roll = 0`` and ``R = yaw_to_rotation(yaw)``. Targets decompose ``det3d_rotation``
(``R_y(yaw)`` for sources without a full rotation). Yaw is predicted as the observation angle
``alpha = yaw - atan2(x, z)`` (Mousavian et al. 2017, "3D Bounding Box Estimation Using Deep
Learning and Geometry": what the image shows does not change when a car moves along the ray);
decoding adds the ray angle ``atan2(x, z)`` of the decoded centre back. Pitch and roll
(Cityscapes-3D labels them: roads are not flat; TAG, Choi et al., adds them to MonoDLE's
CenterNet-style head, Ma et al. 2021) are predicted in the same optical frame, i.e. relative to
the camera (what the image shows; the metric and the export bring them to V through the
sample's extrinsic), and trained only on rows with ``det3d_full`` (the source's own full
rotation): rows of yaw-only sources (KITTI) carry ``pitch = roll = 0`` by construction, not by
measurement, and give no pitch/roll loss and no gradient to those outputs.

**Multi-bin angles** (Mousavian et al. 2017; in the form of MonoDLE's heading, Ma et al. 2021,
which TAG's head follows), the same encoding for alpha, pitch and roll: the circle is cut into
n = ``heading_bins`` bins, bin k centred at ``k 2 pi / n``; an angle a has bin
``k = floor(((a + pi / n) mod 2 pi) / (2 pi / n))`` and residual ``r = a - k 2 pi / n`` wrapped
into ``[-pi / n, pi / n)``. Each angle has n bin logits and n residual channels; its loss is the
cross-entropy of the logits at k plus ``|residual_k - r|`` (only the true bin's residual is
trained); decoding takes the arg-max bin k and returns ``k 2 pi / n + residual_k`` wrapped into
``[-pi, pi)``, so encoding and decoding are exact inverses whenever the bin is right (and a
residual error is the same error of the angle); the loss has no wrap-around, as every angle lies
in exactly one bin. TAG trains pitch/roll with FCOS3D's heading loss (Wang et
al. 2021: an angle regression whose loss is blind to +-pi plus a 2-bin direction classifier, the
same multi-bin family with n = 2); one encoding for all three angles keeps the head, the loss and
the decoding one piece of code, and with 12 bins pitch and roll (within about 10 degrees on real
roads) sit in bin 0 with their value as the residual. The pitch/roll branch's last layer starts
at zero weights with the bias of bin 0 at ``UPRIGHT_PRIOR`` (0.99 after the softmax): a model
that never sees a full rotation (a KITTI-only run; those outputs get no gradient) decodes
exactly ``pitch = roll = 0``, an upright box, instead of the angle of random initial weights.

**Depth** is regressed as ``log(z * virtual_focal / sqrt(fx fy))`` with the OUTPUT image's
focal lengths: an object's size in pixels depends on ``f / z``, so the network sees the same
quantity for a car 20 m away in a KITTI frame (f ~ 300 px at 256x512) and one 40 m away in a
Cityscapes frame (f ~ 560 px), the "virtual depth" of Cube R-CNN (Brazil et al. 2023), which
mixing sources with different cameras needs. ``virtual_focal = 0`` regresses plain ``log z``.
The log makes the L1 a relative error (a 1 m error at 50 m costs what 0.1 m costs at 5 m, as
depth uncertainty grows with distance) and, unlike CenterNet's ``1 / sigmoid - 1``, does not
saturate at far range.

**Targets** (``Det3DTask.targets``; torch, on the batch's device, from ``det3d_boxes``,
``det3d_rotation``, ``det3d_full``, ``det3d_classes``, ``det3d_count`` and the output ``K``):
the 3D centre is projected with ``K``; a box is skipped when ``z <= min_depth`` (0.1 m: behind
or at the camera, no projection), when its projected centre is outside the output image
(``[-0.5, W - 0.5) x [-0.5, H - 0.5)``: no cell to put it in; its truncated view still counts
as background), or when its class is outside the task's classes. Its heatmap Gaussian has
CenterNet's radius (``gaussian_radius`` at ``min_overlap`` 0.7 of the box's projected extent in
cells; sigma = (2r + 1) / 6), classes overlaid with the maximum. **Samples without K**
(``K_known`` False) cannot be trained: nothing projects; their per-sample loss is 0 (they still
count in ``masked_mean``'s denominator, as a labelled sample with nothing to learn from).

**Loss** per sample: CenterNet's penalty-reduced focal loss (alpha 2, beta 4) over the heatmap,
normalised by the sample's trained objects (at least 1), plus weighted terms at the objects'
centre cells, each averaged over the objects: L1 terms for offset, depth and size (summed over
the term's channels), the multi-bin loss (cross-entropy + residual L1) of alpha for
``orientation``, and the sum of pitch's and roll's multi-bin losses for ``pitch_roll``
(averaged over the ``det3d_full`` objects only). A sample without boxes has only the focal
loss's negative part; a sample lacking the task gets a finite loss that ``masked_mean``
multiplies by 0.

**Decoding**: sigmoid heatmap, 3x3 max-pool peak suppression, top ``max_detections`` over
classes and cells, scores below ``score_threshold`` dropped. The centre ``(u, v)`` + offset and
the depth give ``X = z K^-1 (u, v, 1)`` with the output ``K``; alpha, pitch and roll come from
their arg-max bins, ``R = R_y(alpha + atan2(x, z)) R_z(pitch) R_x(roll)``, the full rotation the
export writes as a quaternion. Resizing and letterboxing change K but not metric coordinates,
so only a flip is undone (``x -> -x``, ``R -> M R N``, the loader's own mapping, an
involution). The prediction also holds each box's amodal 2D box: its corners
projected with the **stored** image's ``K`` (``stored_intrinsics``: the output K mapped back with
the ``View``), cut at the z = 1 cm plane and clipped to the stored image, exactly as
cityscapesScripts derives a predicted box's amodal box.

**Metrics** (``Det3DMetric``), both from one pass:

* ``ds``: the Cityscapes-3D detection score exactly as cityscapesScripts 2.x computes it
  (``evalObjectDetection3d.Box3dEvaluator``, defaults of its ``main``), over the samples whose
  truth has amodal 2D boxes (Cityscapes-3D): per class of ``ds_labels`` (car, truck, bus, train,
  motorcycle, bicycle) and per confidence threshold ``s`` in ``arange(0, 1.01, 1/50)``,
  predictions with ``score >= s`` are matched to ground truth greedily by the largest 2D IoU of
  the amodal boxes (GT from the annotation, prediction recomputed from its 3D box;
  ``+1``-pixel areas) while the IoU exceeds 0.7; unmatched predictions whose modal box (the
  written 2D box) lies more than 0.7 inside an ignore region are dropped; TP/FP/FN summed over
  images at every depth give precision and recall, AP is the area under the precision envelope
  of the 51 (recall, precision) points (plus (0, 0) and (1, 0)). The working threshold is the
  first one maximising precision x recall (0 if none has a TP); its true positives with a GT
  BEV distance (int metres from the V origin) below ``ds_max_depth`` (100 m) give four
  similarities, each averaged within 5 m depth bins and then over the bins that hold any (0
  when only one bin does): BEV centre distance ``1 - min(d / 100, 1)``, size
  ``prod min(g / p, p / g)``, yaw ``(1 + cos dyaw) / 2``, pitch/roll
  ``0.5 + (cos dpitch + cos droll) / 4`` (angles of pyquaternion's ``yaw_pitch_roll`` in V).
  ``DS_c = AP_c (center + size + yaw + pitch_roll) / 4``; ``ds`` is the
  mean over the classes with ground truth (``mDetection_Score``); ``ds_ap``, ``ds_center_dist``,
  ``ds_size_similarity``, ``ds_os_yaw``, ``ds_os_pitch_roll`` are the same means of the parts, and
  ``<name>/<label>`` the per-class values. Boxes are compared in V (ISO 8855) through the
  sample's ``sensor_T_ISO_8855``; a sample without it (shards ingested before it was stored) is
  compared in the camera frame C (identity extrinsic), which moves depth bins by the camera's
  position (~1.7 m) and tilts angles by its pitch (re-ingest for the official numbers). Pixels
  are the stored image's (the official tool assumes 2048x1024; ``--max-side`` shards give
  their own, slightly different IoUs).
* ``bev_ap``: a BEV centre-distance AP for every det3d sample (KITTI, A2D2 and Cityscapes
  alike), nuScenes-style matching (Caesar et al. 2020): per class, predictions by descending
  score take the nearest unmatched ground truth of their sample whose centre distance in the
  ground plane (x-y of V, or of C: the optical x-z plane) is below the threshold; AP is COCO's
  101-point interpolated AP (nuScenes also clips recall and precision below 0.1, not done here);
  ``bev_ap`` averages it over the thresholds 0.5, 1, 2, 4 m and over the classes with ground
  truth (``bev_ap@<m>`` per threshold, ``bev_ap/<class>`` per class). Equal scores are ranked
  false positives first, so the result does not depend on the order in which samples (or ranks)
  are merged. No ignore regions and no range limit.

``ds_samples`` and ``bev_samples`` count the samples each part scored. The detection score's
AP counts boxes at every distance (as the tool does: ``ds_max_depth`` bounds only the TP
similarities).

``compute()`` reports both whatever the split holds: ``ds*`` are NaN without a Cityscapes-3D
sample, ``bev_ap`` is NaN without a ground-truth box. ``Det3DConfig.headline`` picks the
headline (``ds``; ``bev_ap`` for KITTI/A2D2-only runs).

**Export** (``Det3DWriter``): the Cityscapes-3D prediction format, one file per sample at
``det3d/<source>/<split>/<id>_pred.json`` (cityscapesScripts names a frame by the file name up to
its last ``_``, so Cityscapes files match ``<city>_<seq>_<frame>_gtBbox3d.json``; it walks the
folder recursively). Content: ``{"objects": [{"2d": {"amodal": [x, y, w, h]}, "3d": {"center",
"dimensions": [l, w, h], "rotation": [w, x, y, z], "format"}, "label", "score"}]}``; a sample
without predictions gets ``{"objects": []}`` as the tool requires (so ``mtl-train score`` refuses a
folder that lacks a labelled sample: an incomplete export, not an image without detections). Boxes are in V through the
sample's ``sensor_T_ISO_8855`` (``format: "CRS_ISO8855"``), else in the camera frame C of
cityscapesScripts' docs (x forward = z_opt, y left = -x_opt, z up = -y_opt; ``format: "CRS_C"``,
this project's marker). Labels: ``CITYSCAPES3D_LABELS`` (unified ``tram_train`` -> ``train``),
every other class keeps its own name. ``read_predictions`` returns the boxes in the file's frame;
the metric brings predictions and truth to the truth's frame, so ``mtl-train score`` on the
files gives what scoring the decoded predictions gives, and what cityscapesScripts gives.

**Picture** (``draw``): every box scoring at least ``DRAW_SCORE_THRESHOLD`` (0.3; decoding keeps
peaks down to ``score_threshold`` 0.05 for AP) as its 12 edges plus a cross on its front face
(the box's +x, length axis: which way it heads), projected with the sample's stored ``K``, in
its class's ``draw.distinct_colour``, tagged "<class name> <score>" at the top left of what is
drawn. Edges are cut at the plane z = ``AMODAL_NEAR`` before projecting (as the amodal boxes are),
so a box partly behind the camera still shows its visible part and nothing behind the camera is
projected through it. Boxes read back in V are brought to the optical frame through the
sample's ``sensor_T_ISO_8855``, boxes in C through an identity extrinsic. Without a stored ``K`` (or, for V boxes,
without the extrinsic) nothing can be placed: the picture is the image with a caption saying so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtl_data.errors import InputError, MtlDataError
from mtl_data.files import write_atomic
from mtl_data.schema import cityscapes_geometry as cg
from mtl_data.schema import geometry as geo
from mtl_data.schema.sample import Sample
from mtl_data.schema.taxonomy import DET_CLASSES
from mtl_data.train.data.transforms import View, flip_K
from mtl_data.train.draw import caption, class_name, clip_segments, distinct_colours, draw_labels, draw_segments
from mtl_data.train.tasks.base import (
    FeatureSpec,
    Metric,
    PredictionWriter,
    Task,
    per_sample,
    register_task,
    to_numpy,
    view_of,
)

#: unified class -> Cityscapes-3D label where the names differ; every other class keeps its name
#: (van, pedestrian, cyclist, other_vehicle, animal have no Cityscapes-3D class).
CITYSCAPES3D_LABELS: dict[str, str] = {"tram_train": "train"}
#: the labels cityscapesScripts' evaluator scores by default (``evalObjectDetection3d.main``).
CITYSCAPES3D_EVAL_LABELS: tuple[str, ...] = ("car", "truck", "bus", "train", "motorcycle", "bicycle")
#: ``3d.format`` of exported boxes: V (ISO 8855, as gtBbox3d) or the camera frame C.
FORMAT_VEHICLE, FORMAT_CAMERA = "CRS_ISO8855", "CRS_C"
#: the frames a ``Det3DPrediction`` can be in.
FRAMES = ("optical", "vehicle", "camera")
_FORMAT_FRAME = {FORMAT_VEHICLE: "vehicle", FORMAT_CAMERA: "camera"}
#: CenterNet's heatmap bias: sigmoid(-2.19) = 0.1, so the focal loss starts small (Lin et al. 2017).
HEATMAP_BIAS = -2.19
#: bins of each multi-bin angle (alpha, pitch, roll), MonoDLE's 12 (Ma et al. 2021).
HEADING_BINS = 12
#: initial softmax probability of bin 0 (an upright box) in the pitch and roll logits.
UPRIGHT_PRIOR = 0.99
#: near plane of cityscapesScripts' amodal boxes (``Box3dImageTransform``), metres.
AMODAL_NEAR = 0.01
#: ``draw`` shows the boxes scoring at least this.
DRAW_SCORE_THRESHOLD = 0.3
#: corner pairs ``draw`` joins (``geometry.box3d_corners`` order): bottom face, top face, the
#: verticals, and a cross on the front face (corners 0, 1, 4, 5 have +x: the heading).
BOX_EDGES = np.array(
    [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7], [0, 5], [1, 4]]
)
#: suffix of an exported file after the sample id.
PRED_SUFFIX = "_pred.json"
#: the 8 corners of a unit box, any order (only their extent is used).
_CORNER_SIGNS = [[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)]
#: flip of the optical frame and of a box's width axis (``transforms``: R -> M R N).
_MIRROR, _MIRROR_W = np.diag([-1.0, 1.0, 1.0]), np.diag([1.0, 1.0, -1.0])


def regression_channels(heading_bins: int = HEADING_BINS) -> dict[str, int]:
    """Channels of each head output besides the heatmap, in decoding order (module docstring)."""
    return {"offset": 2, "depth": 1, "size": 3, "orientation": 2 * heading_bins, "pitch_roll": 4 * heading_bins}


def cityscapes3d_label(name: str) -> str:
    """The Cityscapes-3D label of a class name (``CITYSCAPES3D_LABELS``, else the name itself)."""
    return CITYSCAPES3D_LABELS.get(name, name)


@dataclass(frozen=True)
class Det3DConfig:
    """Hyper-parameters of the det3d task (every field has a default).

    Attributes:
        stride: input pixels per cell of the feature map the head uses (one of the neck's).
        head_channels: channels of each branch's hidden 3x3 conv.
        min_overlap: CenterNet's radius rule: the Gaussian radius keeps a box shifted by it at
            this IoU with the true box.
        min_radius: smallest Gaussian radius, cells.
        min_depth: metres; boxes whose centre is nearer (or behind the camera) are not trained.
        virtual_focal: px; depth is regressed as ``log(z virtual_focal / sqrt(fx fy))``, 0 for
            plain ``log z`` (module docstring).
        focal_alpha, focal_beta: the penalty-reduced focal loss's exponents (CenterNet: 2, 4).
        heading_bins: bins of the multi-bin encoding of each angle (alpha, pitch, roll).
        weight_heatmap, weight_offset, weight_depth, weight_size, weight_orientation,
            weight_pitch_roll: weights of the loss terms.
        max_detections: top-K peaks decoded per image.
        score_threshold: peaks below it are dropped.
        nms_kernel: max-pool window of the peak suppression, cells (odd).
        ds_labels: Cityscapes-3D labels the detection score evaluates.
        ds_min_iou: 2D IoU (and ignore overlap) a match must exceed.
        ds_max_depth: metres; BEV distance bound of the TP similarities, and their normaliser.
        ds_step: metres; depth bin width of the TP similarities.
        ds_num_conf: confidence thresholds are ``arange(0, 1.01, 1 / ds_num_conf)``.
        bev_thresholds: BEV centre-distance thresholds of ``bev_ap``, metres.
        headline: the metric Delta_T compares: ``ds`` or ``bev_ap``.
    """

    stride: int = 4
    head_channels: int = 64
    min_overlap: float = 0.7
    min_radius: int = 0
    min_depth: float = 0.1
    virtual_focal: float = 500.0
    heading_bins: int = HEADING_BINS
    focal_alpha: float = 2.0
    focal_beta: float = 4.0
    weight_heatmap: float = 1.0
    weight_offset: float = 1.0
    weight_depth: float = 1.0
    weight_size: float = 1.0
    weight_orientation: float = 1.0
    weight_pitch_roll: float = 1.0
    max_detections: int = 100
    score_threshold: float = 0.05
    nms_kernel: int = 3
    ds_labels: tuple[str, ...] = CITYSCAPES3D_EVAL_LABELS
    ds_min_iou: float = 0.7
    ds_max_depth: int = 100
    ds_step: int = 5
    ds_num_conf: int = 50
    bev_thresholds: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    headline: str = "ds"

    def __post_init__(self) -> None:
        if self.headline not in ("ds", "bev_ap"):
            raise MtlDataError(f"det3d: headline must be 'ds' or 'bev_ap', got {self.headline!r}")
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise MtlDataError(f"det3d: nms_kernel must be a positive odd number, got {self.nms_kernel}")
        if self.heading_bins < 1:
            raise MtlDataError(f"det3d: heading_bins must be at least 1, got {self.heading_bins}")
        object.__setattr__(self, "ds_labels", tuple(self.ds_labels))
        object.__setattr__(self, "bev_thresholds", tuple(float(t) for t in self.bev_thresholds))


# ---- predictions and truth -------------------------------------------------------------------


@dataclass(frozen=True)
class Det3DPrediction:
    """The 3D boxes predicted for one sample.

    Attributes:
        boxes: (N, 7). ``frame == "optical"``: ``[x, y, z, l, w, h, yaw]`` in the stored image's
            optical frame (project convention, ``yaw = atan2(R[0, 2], R[0, 0])``). ``"vehicle"`` /
            ``"camera"``: ``[cx, cy, cz, l, w, h, heading]`` in V (ISO 8855) / the camera frame C,
            forward-left-up, ``heading = atan2(R[1, 0], R[0, 0])``, as a Cityscapes-3D file has them.
        rotation: (N, 3, 3): optical frame, the project's box axes -> optical; V / C frames, the
            forward-left-up box axes -> V / C (the matrix of the file's quaternion).
        scores: (N,) in [0, 1].
        classes: (N,) int64 class ids of the task.
        boxes2d: (N, 4) ``[x1, y1, x2, y2]`` stored-image px: the amodal box of the 3D box as
            decoded (or the file's ``2d.modal``, else ``2d.amodal``); the metric's ignore-region
            test uses it, as cityscapesScripts uses a prediction's modal box.
        frame: ``optical``, ``vehicle`` or ``camera``.
    """

    boxes: np.ndarray
    rotation: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    boxes2d: np.ndarray
    frame: str = "optical"

    @classmethod
    def empty(cls, frame: str = "optical") -> Det3DPrediction:
        return cls(np.zeros((0, 7)), np.zeros((0, 3, 3)), np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 4)), frame)

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class Det3DTruth:
    """The det3d ground truth of one stored sample (``Det3DTask.ground_truth``).

    Attributes:
        boxes: (N, 7) optical frame of the stored image.
        rotation: (N, 3, 3) the source's full rotation, else ``yaw_to_rotation(yaw)``.
        classes: (N,) int64.
        K: (3, 3) stored-image intrinsics, or None.
        size: (h, w) of the stored image.
        amodal: (N, 4) ``[x1, y1, x2, y2]`` amodal 2D boxes aligned with ``boxes`` (Cityscapes-3D),
            or None: only samples with them enter the detection score.
        ignore: (M, 4) ignore regions px.
        sensor_T: (3, 4) ``sensor_T_ISO_8855`` (V -> C), or None (compare in C).
    """

    boxes: np.ndarray
    classes: np.ndarray
    rotation: np.ndarray
    K: np.ndarray | None
    size: tuple[int, int]
    amodal: np.ndarray | None = None
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    sensor_T: np.ndarray | None = None


def sensor_transform(sample: Sample) -> np.ndarray | None:
    """The (3, 4) ``sensor_T_ISO_8855`` of a sample's ``meta.json`` (3x4 or 4x4), or None."""
    value = sample.extra.get("sensor_T_ISO_8855")
    if value is None:
        return None
    T = np.asarray(value, dtype=np.float64)
    if T.shape not in ((3, 4), (4, 4)) or not np.all(np.isfinite(T)):
        raise MtlDataError(
            f"sample {sample.key}: meta sensor_T_ISO_8855 must be 3x4 or 4x4 finite numbers, got shape {T.shape}"
        )
    return T[:3]


@dataclass(frozen=True)
class _FrameBoxes:
    """Boxes in V or C (forward-left-up): centres (N, 3), dims (N, 3) l w h, rotations (N, 3, 3)."""

    center: np.ndarray
    dims: np.ndarray
    rotation: np.ndarray


def _to_truth_frame(pred: Det3DPrediction, sensor_T: np.ndarray | None, what: str) -> _FrameBoxes:
    """A prediction's boxes in the frame the truth is compared in: V with ``sensor_T``, else C."""
    if pred.frame == "optical":
        return _FrameBoxes(*cg.optical_boxes_to_frame(pred.boxes, pred.rotation, sensor_T))
    center, dims, rot = pred.boxes[:, :3], pred.boxes[:, 3:6], pred.rotation.reshape(-1, 3, 3)
    if pred.frame == "camera" and sensor_T is not None:  # C -> V
        return _FrameBoxes(cg.camera_to_vehicle(center, sensor_T), dims, np.linalg.inv(sensor_T[:, :3])[None] @ rot)
    if pred.frame == "vehicle" and sensor_T is None:
        raise MtlDataError(
            f"{what}: the predictions are in ISO 8855 vehicle coordinates but the sample has no "
            "sensor_T_ISO_8855 to relate them to its camera (re-ingest the source)"
        )
    return _FrameBoxes(center, dims, rot)


# ---- the head --------------------------------------------------------------------------------


def _branch(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1)
    )


class Det3DHead(nn.Module):
    """CenterNet/SMOKE-style head on one feature map: a Conv3x3-ReLU-Conv1x1 branch per output.

    ``forward(features, image_size)`` returns ``{"heatmap": (B, C, h, w) logits, "offset":
    (B, 2, h, w), "depth": (B, 1, h, w), "size": (B, 3, h, w), "orientation": (B, 2 n, h, w),
    "pitch_roll": (B, 4 n, h, w)}`` on the map of ``level``, n = ``heading_bins`` (module
    docstring for their meaning). Regression biases start at 0, the heatmap's at
    ``HEATMAP_BIAS``; the pitch/roll branch's last layer starts at zero weights with bin 0's
    logit biased to a softmax of ``UPRIGHT_PRIOR``, so until trained on full rotations it decodes
    upright boxes.
    """

    def __init__(self, in_channels: int, hidden: int, num_classes: int, level: int, heading_bins: int = HEADING_BINS):
        super().__init__()
        self.level = level
        self.heading_bins = heading_bins
        regression = regression_channels(heading_bins)
        channels = {"heatmap": num_classes, **regression}
        self.branches = nn.ModuleDict({name: _branch(in_channels, hidden, c) for name, c in channels.items()})
        nn.init.constant_(self.branches["heatmap"][-1].bias, HEATMAP_BIAS)
        for name in regression:
            nn.init.zeros_(self.branches[name][-1].bias)
        last = self.branches["pitch_roll"][-1]
        nn.init.zeros_(last.weight)
        if heading_bins > 1:  # softmax of bin 0 = UPRIGHT_PRIOR, the other bins share the rest
            prior = math.log(UPRIGHT_PRIOR * (heading_bins - 1) / (1 - UPRIGHT_PRIOR))
            with torch.no_grad():
                last.bias.view(2, 2, heading_bins)[:, 0, 0] = prior  # (angle, logits|residuals, bin)

    def forward(self, features: Sequence[torch.Tensor], image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        x = features[self.level]  # (B, F, H / s, W / s)
        return {name: branch(x) for name, branch in self.branches.items()}


# ---- targets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Det3DTargets:
    """Training targets of a batch on a (h, w) feature map (``Det3DTask.targets``).

    Attributes:
        heatmap: (B, C, h, w) Gaussians, 1 exactly at each trained object's cell.
        index: (B, M) flat cell ``row * w + col`` of each box row (0 where not trained).
        valid: (B, M) rows that are trained.
        full: (B, M) trained rows with the source's full rotation (pitch/roll targets).
        offset: (B, M, 2) ``(du, dv)`` cells in [-0.5, 0.5).
        depth: (B, M, 1) log virtual depth.
        size: (B, M, 3) ``log(l, w, h)``.
        orientation: (B, M, 2 n) alpha's multi-bin target in the head's channel layout
            (``multibin_targets``): the one-hot of its bin, then its residual in that bin's
            channel (0 in the others); all 0 on rows that are not trained.
        pitch_roll: (B, M, 4 n) the same for pitch, then roll; all 0 on rows without ``full``.
    """

    heatmap: torch.Tensor
    index: torch.Tensor
    valid: torch.Tensor
    full: torch.Tensor
    offset: torch.Tensor
    depth: torch.Tensor
    size: torch.Tensor
    orientation: torch.Tensor
    pitch_roll: torch.Tensor


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float) -> torch.Tensor:
    """CenterNet's Gaussian radius (Law & Deng 2018, CornerNet; as in CenterNet's code).

    The smallest of the three radii at which a box of (height, width) whose corners are moved
    by it keeps ``min_overlap`` IoU with the original (the three cases of CornerNet's
    ``gaussian_radius``, with CenterNet's exact arithmetic).
    """
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt((b1**2 - 4 * a1 * c1).clamp(min=0))) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt((b2**2 - 4 * a2 * c2).clamp(min=0))) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt((b3**2 - 4 * a3 * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def rotation_to_yaw_pitch_roll_torch(rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``geometry.rotation_to_yaw_pitch_roll`` on tensors (..., 3, 3) -> three (...,) tensors."""
    pitch = torch.asin(rotation[..., 1, 0].clamp(-1.0, 1.0))
    yaw = torch.atan2(-rotation[..., 2, 0], rotation[..., 0, 0])
    roll = torch.atan2(-rotation[..., 1, 2], rotation[..., 1, 1])
    return yaw, pitch, roll


def angle_to_bin(angle: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-bin encoding of angles (Mousavian et al. 2017; MonoDLE's ``angle2class``, Ma et al. 2021).

    Bin k is centred at ``k 2 pi / bins``; the residual is the angle minus its bin's centre.

    Args:
        angle: (...) radians, any value (taken modulo 2 pi).
        bins: number of bins n.

    Returns:
        (...) int64 bin in ``[0, n)`` and (...) residual in ``[-pi / n, pi / n)``, radians.
    """
    step = 2 * math.pi / bins
    shifted = torch.remainder(angle + step / 2, 2 * math.pi)  # (...) in [0, 2 pi)
    index = torch.floor(shifted / step).clamp(0, bins - 1)  # clamp: a float remainder a hair below 2 pi
    return index.long(), shifted - (index + 0.5) * step


def multibin_targets(angles: torch.Tensor, bins: int) -> torch.Tensor:
    """The multi-bin targets of angles in the head's channel layout.

    Args:
        angles: (..., A) radians, A angles per row (alpha; or pitch, roll).
        bins: number of bins n.

    Returns:
        (..., 2 A n): per angle, the one-hot of its bin (n) then its residual at that bin's
        channel, 0 at the others (n).
    """
    index, residual = angle_to_bin(angles, bins)  # (..., A) each
    onehot = F.one_hot(index, bins).to(angles.dtype)  # (..., A, n)
    return torch.cat([onehot, onehot * residual[..., None]], dim=-1).flatten(-2)  # (..., A 2 n)


def multibin_loss(pred: torch.Tensor, target: torch.Tensor, bins: int) -> torch.Tensor:
    """Multi-bin loss (Mousavian et al. 2017; MonoDLE's heading loss, Ma et al. 2021) per row.

    Per angle: the cross-entropy of its n bin logits at the true bin, plus the L1 between the
    true bin's predicted residual and the target residual; summed over the row's angles.

    Args:
        pred: (..., 2 A n) head outputs at the rows' cells (per angle n logits, n residuals).
        target: (..., 2 A n) ``multibin_targets`` (a row of zeros costs 0).
        bins: number of bins n.

    Returns:
        (...) loss per row.
    """
    p = pred.unflatten(-1, (-1, 2, bins))  # (..., A, 2, n)
    t = target.unflatten(-1, (-1, 2, bins))  # (..., A, 2, n)
    onehot = t[..., 0, :]  # (..., A, n)
    ce = -(onehot * F.log_softmax(p[..., 0, :], dim=-1)).sum(-1)  # (..., A)
    l1 = (onehot * (p[..., 1, :] - t[..., 1, :]).abs()).sum(-1)  # (..., A)
    return (ce + l1).sum(-1)


def decode_multibin(outputs: np.ndarray, bins: int) -> np.ndarray:
    """Angles from multi-bin outputs: the arg-max bin's centre plus its residual, in ``[-pi, pi)``.

    Args:
        outputs: (N, 2 A n) per angle n bin logits then n residuals (the head's layout).
        bins: number of bins n.

    Returns:
        (N, A) radians; the inverse of ``angle_to_bin`` when the arg-max is the true bin.
    """
    o = np.asarray(outputs, dtype=np.float64)  # (N, 2 A n)
    # A from the width, not -1: with N = 0 (no detection kept) -1 would be ambiguous.
    o = o.reshape(len(o), o.shape[-1] // (2 * bins), 2, bins)  # (N, A, 2, n)
    index = np.argmax(o[:, :, 0], axis=-1)  # (N, A)
    residual = np.take_along_axis(o[:, :, 1], index[..., None], axis=-1)[..., 0]  # (N, A)
    angle = index * (2 * np.pi / bins) + residual
    return np.mod(angle + np.pi, 2 * np.pi) - np.pi


def _virtual_scale(K: torch.Tensor, virtual_focal: float) -> torch.Tensor:
    """(B,) factor taking metric depth to virtual depth: ``virtual_focal / sqrt(fx fy)`` (1 if 0)."""
    if virtual_focal <= 0:
        return torch.ones(K.shape[0], dtype=K.dtype, device=K.device)
    return virtual_focal / torch.sqrt((K[:, 0, 0] * K[:, 1, 1]).abs().clamp(min=1e-6))


# ---- numpy helpers of decoding ---------------------------------------------------------------


def stored_intrinsics(K_out: np.ndarray, view: View) -> np.ndarray:
    """The stored image's ``K`` from the output image's: the loader's mapping undone.

    The loader sets ``K_out = F (A K) M`` when flipped (``transforms.flip_K``), else ``A K``, with
    ``A`` the placement's pixel map ``c -> (c + 0.5) s - 0.5 + offset`` per axis. So
    ``K = A^-1 flip_K(K_out)`` (the flip is an involution).
    """
    pl = view.placement
    K = np.asarray(K_out, dtype=np.float64)
    if view.flipped:
        K = flip_K(K, pl.out_size[1])
    A = np.array([[pl.sx, 0.0, 0.5 * pl.sx - 0.5 + pl.left], [0.0, pl.sy, 0.5 * pl.sy - 0.5 + pl.top], [0.0, 0.0, 1.0]])
    return np.linalg.solve(A, K)


def amodal_boxes(boxes: np.ndarray, rotation: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cityscapesScripts' amodal 2D box of optical-frame 3D boxes, in the image of ``K`` and ``size``.

    The corners cut at z = 1 cm (``geometry.clipped_box_extent``), clipped to
    ``[0, W - 1] x [0, H - 1]``; ``[0, 0, 0, 0]`` for a box wholly behind the camera (as
    ``Box3dImageTransform.get_amodal_box_2d``).

    Returns:
        (N, 4) ``[x1, y1, x2, y2]`` px.
    """
    h, w = size
    extent = geo.clipped_box_extent(geo.box3d_corners(boxes, rotation), K, AMODAL_NEAR)  # (N, 4)
    out = np.empty_like(extent)
    out[:, 0::2] = np.minimum(w - 1, np.maximum(0, extent[:, 0::2]))
    out[:, 1::2] = np.minimum(h - 1, np.maximum(0, extent[:, 1::2]))
    out[np.isnan(extent).any(axis=1)] = 0.0
    return out


def projected_edges(boxes: np.ndarray, rotation: np.ndarray, K: np.ndarray, near: float = AMODAL_NEAR) -> np.ndarray:
    """The ``BOX_EDGES`` of optical-frame 3D boxes in the image of ``K``, cut at the plane z = ``near``.

    Args:
        boxes: (N, 7) ``[x, y, z, l, w, h, yaw]`` optical frame.
        rotation: (N, 3, 3) full rotations.
        K: (3, 3) intrinsics of the image.
        near: metres; the part of an edge nearer than this is cut off (an edge wholly nearer is
            not drawn: its projection would pass through the camera's centre).

    Returns:
        (N, E, 2, 2) ``[[u0, v0], [u1, v1]]`` px per box and edge, NaN for an edge wholly nearer
        than ``near``.
    """
    corners = geo.box3d_corners(boxes, rotation)  # (N, 8, 3)
    a, b = corners[:, BOX_EDGES[:, 0]], corners[:, BOX_EDGES[:, 1]]  # (N, E, 3) each
    za, zb = a[..., 2:], b[..., 2:]  # (N, E, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cut = a + (near - za) / (zb - za) * (b - a)  # (N, E, 3) where the edge crosses z = near
    a, b = np.where(za < near, cut, a), np.where(zb < near, cut, b)
    ends = np.stack([a, b], axis=2)  # (N, E, 2, 3)
    uv = geo.project(ends.reshape(-1, 3), K)[0].reshape(*ends.shape[:3], 2)  # (N, E, 2, 2)
    uv[((za < near) & (zb < near))[..., 0]] = np.nan
    return uv


# ---- metric ----------------------------------------------------------------------------------


def _iou_plus1(gts: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """(G, P) IoU with cityscapesScripts' ``calcIouMatrix`` arithmetic (+1 px areas, +1e-10)."""
    ix1 = np.maximum(gts[:, 0:1], preds[:, 0][None])
    iy1 = np.maximum(gts[:, 1:2], preds[:, 1][None])
    ix2 = np.minimum(gts[:, 2:3], preds[:, 2][None])
    iy2 = np.minimum(gts[:, 3:4], preds[:, 3][None])
    inter = np.maximum(ix2 - ix1 + 1, 0) * np.maximum(iy2 - iy1 + 1, 0)
    area_g = (gts[:, 2:3] - gts[:, 0:1] + 1) * (gts[:, 3:4] - gts[:, 1:2] + 1)
    area_p = (preds[:, 2] - preds[:, 0] + 1) * (preds[:, 3] - preds[:, 1] + 1)
    return inter / (area_g + area_p[None] - inter + 1e-10)


def _inside_ratio(regions: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """(R, P) share of each prediction inside each region (``calcOverlapMatrix``)."""
    ix1 = np.maximum(regions[:, 0:1], preds[:, 0][None])
    iy1 = np.maximum(regions[:, 1:2], preds[:, 1][None])
    ix2 = np.minimum(regions[:, 2:3], preds[:, 2][None])
    iy2 = np.minimum(regions[:, 3:4], preds[:, 3][None])
    inter = np.maximum(ix2 - ix1 + 1, 0) * np.maximum(iy2 - iy1 + 1, 0)
    area_p = (preds[:, 2] - preds[:, 0] + 1) * (preds[:, 3] - preds[:, 1] + 1)
    return inter / (area_p[None] + 1e-10)


def _greedy_matches(iou: np.ndarray, min_iou: float) -> tuple[list[int], list[int]]:
    """cityscapesScripts' ``_getMatches``: repeatedly take the largest IoU (first in row-major
    order on ties) while it exceeds ``min_iou``, then clear its row and column."""
    iou = iou.copy()
    rows: list[int] = []
    cols: list[int] = []
    if iou.size == 0:
        return rows, cols
    while iou.max() > min_iou:
        r, c = np.unravel_index(int(np.argmax(iou)), iou.shape)
        rows.append(int(r))
        cols.append(int(c))
        iou[r, :] = 0.0
        iou[:, c] = 0.0
    return rows, cols


def _interpolated_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """cityscapesScripts' AP: (recall, precision) points sorted by recall, framed by (0, 0) and
    (1, 0), precision made non-increasing from the right, summed over recall steps."""
    order = np.argsort(recall, kind="stable")
    r = np.concatenate([[0.0], recall[order], [1.0]])
    p = np.concatenate([[0.0], precision[order], [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


def _ap101(scores: np.ndarray, tp: np.ndarray, npos: int) -> float:
    """COCO's 101-point interpolated AP of detections (``scores``, ``tp`` flags) against ``npos``.

    Ranked by descending score, false positives first among equal scores.
    """
    if len(scores) == 0:
        return 0.0
    order = np.lexsort((tp, -scores))
    hits = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(hits), np.cumsum(1.0 - hits)
    recall, precision = ctp / npos, ctp / (ctp + cfp)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    at = np.searchsorted(recall, np.linspace(0.0, 1.0, 101), side="left")
    return float(np.mean(np.where(at < len(recall), envelope[np.minimum(at, len(recall) - 1)], 0.0)))


#: the four TP similarities of the detection score, in cityscapesScripts' order and result names.
DS_SIMILARITIES = ("center_dist", "size_similarity", "os_yaw", "os_pitch_roll")


class Det3DMetric(Metric):
    """Cityscapes-3D detection score and BEV centre-distance AP (module docstring); mergeable.

    State (all sums, so ``merge`` adds): per DS label and confidence threshold the TP, FP, FN
    counts and per depth bin the sums and counts of the four TP similarities; per class the
    number of ground-truth boxes; per class and BEV threshold the scores and TP flags of every
    prediction.
    """

    def __init__(self, classes: Sequence[str], config: Det3DConfig):
        self.classes = tuple(classes)
        self.config = config
        labels = config.ds_labels
        # class id -> index into ds_labels (-1: not scored by the detection score)
        self.ds_index = np.array(
            [labels.index(cityscapes3d_label(c)) if cityscapes3d_label(c) in labels else -1 for c in self.classes],
            dtype=np.int64,
        )
        # the exact thresholds of Box3dEvaluator (np.arange: s_i = i / num_conf as numpy rounds it)
        self.thresholds = np.arange(0.0, 1.01, 1.0 / config.ds_num_conf)
        self.depth_bins = np.arange(0, config.ds_max_depth + 1, config.ds_step)
        n_l, n_s, n_b = len(labels), len(self.thresholds), len(self.depth_bins)
        self.ds_counts = np.zeros((3, n_l, n_s), np.int64)  # TP, FP, FN
        self.ds_sums = np.zeros((len(DS_SIMILARITIES), n_l, n_s, n_b))
        self.ds_items = np.zeros((n_l, n_s, n_b), np.int64)
        self.ds_gt = np.zeros(n_l, np.int64)
        self.ds_samples = 0
        self.bev_npos = np.zeros(len(self.classes), np.int64)
        self.bev_scores: list[list[list[np.ndarray]]] = [[[] for _ in config.bev_thresholds] for _ in self.classes]
        self.bev_tp: list[list[list[np.ndarray]]] = [[[] for _ in config.bev_thresholds] for _ in self.classes]
        self.bev_samples = 0

    # ---- accumulate ----

    def update(self, prediction: Det3DPrediction | None, truth: Det3DTruth | None) -> None:
        if truth is None:
            return
        prediction = Det3DPrediction.empty() if prediction is None else prediction
        n_cls = len(self.classes)
        pred_ok = (prediction.classes >= 0) & (prediction.classes < n_cls)
        gt_ok = (truth.classes >= 0) & (truth.classes < n_cls)
        gt = _FrameBoxes(*cg.optical_boxes_to_frame(truth.boxes[gt_ok], truth.rotation[gt_ok], truth.sensor_T))
        pred = _to_truth_frame(prediction, truth.sensor_T, "det3d metric")
        keep = np.flatnonzero(pred_ok)
        pred = _FrameBoxes(pred.center[keep], pred.dims[keep], pred.rotation[keep])
        scores, pred_classes = prediction.scores[keep], prediction.classes[keep]
        gt_classes = truth.classes[gt_ok]
        self._update_bev(gt, gt_classes, pred, scores, pred_classes)
        if truth.amodal is not None and truth.K is not None:
            self._update_ds(truth, gt_ok, gt, gt_classes, pred, scores, pred_classes, prediction.boxes2d[keep])

    def _update_bev(
        self, gt: _FrameBoxes, gt_classes: np.ndarray, pred: _FrameBoxes, scores: np.ndarray, pred_classes: np.ndarray
    ) -> None:
        self.bev_samples += 1
        for c in range(len(self.classes)):
            g, p = np.flatnonzero(gt_classes == c), np.flatnonzero(pred_classes == c)
            self.bev_npos[c] += len(g)
            if len(p) == 0:
                continue
            p = p[np.argsort(-scores[p], kind="stable")]
            dist = np.hypot(
                pred.center[p, None, 0] - gt.center[None, g, 0], pred.center[p, None, 1] - gt.center[None, g, 1]
            )  # (P, G) ground plane
            for t, threshold in enumerate(self.config.bev_thresholds):
                taken = np.zeros(len(g), bool)
                hits = np.zeros(len(p), bool)
                for j in range(len(p)):  # nuScenes: the nearest unmatched truth within the threshold
                    d = np.where(taken, np.inf, dist[j])
                    if len(d) and d.min() < threshold:
                        taken[np.argmin(d)] = hits[j] = True
                self.bev_scores[c][t].append(scores[p])
                self.bev_tp[c][t].append(hits)

    def _update_ds(
        self,
        truth: Det3DTruth,
        gt_ok: np.ndarray,
        gt: _FrameBoxes,
        gt_classes: np.ndarray,
        pred: _FrameBoxes,
        scores: np.ndarray,
        pred_classes: np.ndarray,
        pred_modal: np.ndarray,
    ) -> None:
        cfg = self.config
        self.ds_samples += 1
        # the prediction's amodal box is recomputed from its 3D box with the sample's camera (as
        # Box3dEvaluator._worker does); the truth's is the annotation's
        opt_boxes, opt_rot = cg.frame_boxes_to_optical(pred.center, pred.dims, pred.rotation, truth.sensor_T)
        pred_amodal = amodal_boxes(opt_boxes, opt_rot, truth.K, truth.size)
        gt_amodal = np.asarray(truth.amodal, np.float64)[gt_ok]
        ignore = np.asarray(truth.ignore, np.float64).reshape(-1, 4)
        gt_label, pred_label = self.ds_index[gt_classes], self.ds_index[pred_classes]
        gt_angles = np.stack(cg.quaternion_yaw_pitch_roll(cg.matrix_to_quaternion(gt.rotation)), axis=1)
        pred_angles = np.stack(cg.quaternion_yaw_pitch_roll(cg.matrix_to_quaternion(pred.rotation)), axis=1)
        # BEV distance from V's origin in whole metres, truncated (CsBbox3d.depth's arithmetic)
        gt_depth = np.sqrt(gt.center[:, 0] ** 2 + gt.center[:, 1] ** 2).astype(np.int64)
        for label in range(len(cfg.ds_labels)):
            g, p = np.flatnonzero(gt_label == label), np.flatnonzero(pred_label == label)
            self.ds_gt[label] += len(g)
            if len(g) == 0 and len(p) == 0:
                continue
            iou = _iou_plus1(gt_amodal[g], pred_amodal[p])  # (G, P)
            in_ignore = (_inside_ratio(ignore, pred_modal[p]) > cfg.ds_min_iou).any(axis=0)  # (P,)
            previous = None
            for s, threshold in enumerate(self.thresholds):
                selected = scores[p] >= threshold
                if previous is None or not np.array_equal(selected, previous[0]):
                    previous = (
                        selected,
                        self._match(g, p, selected, iou, in_ignore, gt, pred, gt_angles, pred_angles, gt_depth),
                    )
                counts, bins, sims = previous[1]
                self.ds_counts[:, label, s] += counts
                np.add.at(self.ds_items[label, s], bins, 1)
                for k in range(len(DS_SIMILARITIES)):
                    np.add.at(self.ds_sums[k, label, s], bins, sims[k])

    def _match(
        self,
        g: np.ndarray,
        p: np.ndarray,
        selected: np.ndarray,
        iou: np.ndarray,
        in_ignore: np.ndarray,
        gt: _FrameBoxes,
        pred: _FrameBoxes,
        gt_angles: np.ndarray,
        pred_angles: np.ndarray,
        gt_depth: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
        """TP/FP/FN counts of one class in one image at one threshold, and its TPs' similarities."""
        cfg = self.config
        cols = np.flatnonzero(selected)
        rows, matched = _greedy_matches(iou[:, cols], cfg.ds_min_iou) if len(cols) else ([], [])
        unmatched = np.setdiff1d(cols, cols[matched]) if len(cols) else cols
        counts = np.array([len(rows), int(np.count_nonzero(~in_ignore[unmatched])), len(g) - len(rows)])
        gi, pi = g[np.asarray(rows, np.int64)], p[cols[np.asarray(matched, np.int64)]]
        near = gt_depth[gi] < cfg.ds_max_depth
        gi, pi = gi[near], pi[near]
        bins = gt_depth[gi] // cfg.ds_step
        dist = np.sqrt((gt.center[gi, 0] - pred.center[pi, 0]) ** 2 + (gt.center[gi, 1] - pred.center[pi, 1]) ** 2)
        gd, pd = gt.dims[gi], pred.dims[pi]
        delta = gt_angles[gi] - pred_angles[pi]  # (T, 3) yaw, pitch, roll
        sims = (
            1.0 - np.minimum(dist / float(cfg.ds_max_depth), 1.0),
            np.prod(np.minimum(gd / pd, pd / gd), axis=1),
            (1.0 + np.cos(delta[:, 0])) / 2.0,
            0.5 + (np.cos(delta[:, 1]) + np.cos(delta[:, 2])) / 4.0,
        )
        return counts, bins, sims

    def merge(self, other: Metric) -> None:
        if not isinstance(other, Det3DMetric) or other.classes != self.classes or other.config != self.config:
            raise ValueError("can only merge a Det3DMetric of the same classes and config")
        self.ds_counts += other.ds_counts
        self.ds_sums += other.ds_sums
        self.ds_items += other.ds_items
        self.ds_gt += other.ds_gt
        self.ds_samples += other.ds_samples
        self.bev_npos += other.bev_npos
        self.bev_samples += other.bev_samples
        for c in range(len(self.classes)):
            for t in range(len(self.config.bev_thresholds)):
                self.bev_scores[c][t].extend(other.bev_scores[c][t])
                self.bev_tp[c][t].extend(other.bev_tp[c][t])

    # ---- results ----

    def compute(self) -> dict[str, float]:
        out = dict.fromkeys(Det3DTask.metric_keys, math.nan)
        out.update(self._compute_ds())
        out.update(self._compute_bev())
        return out

    def _compute_ds(self) -> dict[str, float]:
        labels = self.config.ds_labels
        per: dict[str, list[float]] = {name: [] for name in ("ds", "ds_ap", *(f"ds_{s}" for s in DS_SIMILARITIES))}
        for label in range(len(labels)):
            tp, fp, fn = (self.ds_counts[i, label].astype(np.float64) for i in range(3))
            with np.errstate(divide="ignore", invalid="ignore"):
                precision = np.where(tp > 0, tp / (tp + fp), 0.0)
                recall = np.where(tp > 0, tp / (tp + fn), 0.0)
            ap = _interpolated_ap(recall, precision)
            quality = precision * recall
            working = int(np.argmax(quality)) if quality.max() > 0 else 0  # first best, else s = 0
            items = self.ds_items[label, working]  # (bins,)
            filled = items > 0
            sims = []
            for k in range(len(DS_SIMILARITIES)):
                means = self.ds_sums[k, label, working][filled] / items[filled]
                sims.append(float(np.mean(means)) if len(means) > 1 else 0.0)  # one bin -> 0, as the tool
            per["ds"].append(ap * sum(sims) / 4.0)
            per["ds_ap"].append(ap)
            for name, value in zip(DS_SIMILARITIES, sims):
                per[f"ds_{name}"].append(value)
        out: dict[str, float] = {}
        scored = self.ds_gt > 0
        for name, values in per.items():
            values = np.asarray(values)
            out[name] = float(np.mean(values[scored])) if scored.any() else math.nan
            for label, value in zip(labels, values):
                out[f"{name}/{label}"] = float(value) if self.ds_samples else math.nan
        out["ds_samples"] = float(self.ds_samples)
        return out

    def _compute_bev(self) -> dict[str, float]:
        thresholds = self.config.bev_thresholds
        ap = np.full((len(self.classes), len(thresholds)), np.nan)
        for c in range(len(self.classes)):
            if self.bev_npos[c] == 0:
                continue
            for t in range(len(thresholds)):
                scores = np.concatenate(self.bev_scores[c][t]) if self.bev_scores[c][t] else np.zeros(0)
                hits = np.concatenate(self.bev_tp[c][t]) if self.bev_tp[c][t] else np.zeros(0, bool)
                ap[c, t] = _ap101(scores, hits, int(self.bev_npos[c]))
        scored = self.bev_npos > 0
        out = {"bev_ap": float(np.mean(ap[scored])) if scored.any() else math.nan}
        for t, threshold in enumerate(thresholds):
            out[f"bev_ap@{threshold:g}"] = float(np.mean(ap[scored, t])) if scored.any() else math.nan
        for c, name in enumerate(self.classes):
            out[f"bev_ap/{name}"] = float(np.mean(ap[c])) if scored[c] else math.nan
        out["bev_samples"] = float(self.bev_samples)
        return out


# ---- export ----------------------------------------------------------------------------------


class Det3DWriter(PredictionWriter):
    """Cityscapes-3D prediction files, ``det3d/<source>/<split>/<id>_pred.json`` (module docstring)."""

    def __init__(self, out_dir: Path, classes: Sequence[str]):
        super().__init__(out_dir)
        self.classes = tuple(classes)

    def add(self, key: str, prediction: Det3DPrediction, sample: Sample) -> None:
        path = self.out_dir / prediction_path(key, sample)
        sensor_T = sensor_transform(sample)
        boxes = _to_truth_frame(prediction, sensor_T, str(path))
        quaternions = cg.matrix_to_quaternion(boxes.rotation)
        fmt = FORMAT_CAMERA if sensor_T is None else FORMAT_VEHICLE
        objects = []
        for i in range(len(prediction)):
            x1, y1, x2, y2 = (float(v) for v in prediction.boxes2d[i])
            objects.append(
                {
                    "2d": {"amodal": [x1, y1, x2 - x1, y2 - y1]},
                    "3d": {
                        "center": [float(v) for v in boxes.center[i]],
                        "dimensions": [float(v) for v in boxes.dims[i]],
                        "rotation": [float(v) for v in quaternions[i]],
                        "format": fmt,
                    },
                    "label": cityscapes3d_label(self.classes[int(prediction.classes[i])]),
                    "score": float(prediction.scores[i]),
                }
            )
        write_atomic(path, json.dumps({"objects": objects}))


def prediction_path(key: str, sample: Sample) -> Path:
    """``det3d/<source>/<split>/<id>_pred.json`` of a sample, relative to the predictions folder.

    ``<id>`` is the key without its ``<source>_<split>_`` prefix (the sanitized native id), so
    the key is recovered from the path.
    """
    prefix = f"{sample.source}_{sample.split}_"
    if not key.startswith(prefix):
        raise MtlDataError(f"sample key {key!r} does not start with {prefix!r} (<source>_<split>_<id>)")
    return Path("det3d") / sample.source / sample.split / f"{key[len(prefix) :]}{PRED_SUFFIX}"


def _numbers(value: Any, count: int, path: Path, where: str) -> np.ndarray:
    ok = (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if not ok or not np.all(np.isfinite(value)):
        raise InputError(path, f"{where}: expected {count} finite numbers, got {json.dumps(value)[:80]}")
    return np.asarray(value, dtype=np.float64)


def read_prediction_file(path: Path, class_of_label: Mapping[str, int]) -> Det3DPrediction:
    """One Cityscapes-3D prediction file -> a ``Det3DPrediction`` in the file's frame.

    Objects whose label is not in ``class_of_label`` are left out (the official evaluator
    skips labels it does not score).

    Raises:
        InputError: the file is not JSON or an object lacks or mistypes a field; names the file
            and the object.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("objects"), list):
        raise InputError(path, 'expected {"objects": [...]} (Cityscapes-3D prediction format)')
    rows, frames = [], set()
    for i, obj in enumerate(doc["objects"]):
        where = f"objects[{i}]"
        two = obj.get("2d") if isinstance(obj, dict) else None
        three = obj.get("3d") if isinstance(obj, dict) else None
        if not isinstance(two, dict) or not isinstance(three, dict) or "amodal" not in two:
            raise InputError(
                path,
                f"{where}: expected an object with '2d' (amodal [x, y, w, h]), '3d' (center, "
                "dimensions, rotation), 'label' and 'score'",
            )
        label, score = obj.get("label"), obj.get("score")
        if not isinstance(label, str):
            raise InputError(path, f"{where}.label: expected a string, got {json.dumps(label)}")
        score = _numbers([score], 1, path, f"{where}.score")[0]
        kind = "modal" if "modal" in two else "amodal"  # the box the evaluator tests ignore regions with
        box2d = _numbers(two[kind], 4, path, f"{where}.2d.{kind}")
        center = _numbers(three.get("center"), 3, path, f"{where}.3d.center")
        dims = _numbers(three.get("dimensions"), 3, path, f"{where}.3d.dimensions")
        quat = _numbers(three.get("rotation"), 4, path, f"{where}.3d.rotation")
        if dims.min() <= 0 or not np.linalg.norm(quat) > 0:
            raise InputError(
                path,
                f"{where}: dimensions must be positive and the rotation a non-zero quaternion "
                f"[w, x, y, z] (got {dims.tolist()}, {quat.tolist()})",
            )
        fmt = three.get("format", FORMAT_VEHICLE)
        if fmt not in _FORMAT_FRAME:
            raise InputError(path, f"{where}.3d.format: {fmt!r} is not one of {', '.join(_FORMAT_FRAME)}")
        frames.add(_FORMAT_FRAME[fmt])
        if label in class_of_label:
            rows.append((center, dims, quat, box2d, score, class_of_label[label]))
    if len(frames) > 1:
        raise InputError(path, "objects mix 3d.format values; one file holds one coordinate frame")
    frame = frames.pop() if frames else "vehicle"
    if not rows:
        return Det3DPrediction.empty(frame)
    center, dims, quat, box2d, scores, classes = (np.array(v) for v in zip(*rows))
    rotation = cg.quaternion_to_matrix(quat)
    heading = np.arctan2(rotation[:, 1, 0], rotation[:, 0, 0])
    boxes2d = np.column_stack([box2d[:, :2], box2d[:, :2] + box2d[:, 2:]])
    return Det3DPrediction(
        np.column_stack([center, dims, heading]),
        rotation,
        scores.astype(np.float64),
        classes.astype(np.int64),
        boxes2d,
        frame,
    )


# ---- the task --------------------------------------------------------------------------------


@register_task
class Det3DTask(Task):
    """Monocular 3D detection: CenterNet/SMOKE head, Cityscapes-3D DS + BEV AP (module docstring)."""

    name: ClassVar[str] = "det3d"
    Config: ClassVar[type] = Det3DConfig
    metric_keys: ClassVar[tuple[str, ...]] = (
        "ds",
        "ds_ap",
        "ds_center_dist",
        "ds_size_similarity",
        "ds_os_yaw",
        "ds_os_pitch_roll",
        "bev_ap",
    )
    higher_is_better: ClassVar[bool] = True
    class_table: ClassVar[str | None] = "det3d"
    default_classes: ClassVar[tuple[str, ...]] = DET_CLASSES
    #: the Cityscapes-3D format wants a file for every image (``{"objects": []}`` when nothing is
    #: detected) and the writer writes one, so a missing file means an incomplete export
    requires_every_prediction: ClassVar[bool] = True

    @property
    def headline(self) -> str:
        """``Det3DConfig.headline``: ``ds`` (Cityscapes-3D), or ``bev_ap`` for runs without it."""
        return self.config.headline

    # ---- model ----

    def build_head(self, features: FeatureSpec) -> nn.Module:
        if self.config.stride not in features.strides:
            raise MtlDataError(f"det3d: stride {self.config.stride} is not among the neck's strides {features.strides}")
        return Det3DHead(
            features.channels,
            self.config.head_channels,
            self.num_classes,
            features.strides.index(self.config.stride),
            self.config.heading_bins,
        )

    # ---- targets and loss ----

    def targets(self, batch: Mapping[str, Any], feature_size: tuple[int, int]) -> Det3DTargets:
        """The targets of a batch on a feature map of ``feature_size`` (module docstring)."""
        cfg, s = self.config, self.config.stride
        boxes = batch["det3d_boxes"].float()  # (B, M, 7)
        device = boxes.device
        b, m = boxes.shape[:2]
        fh, fw = (int(v) for v in feature_size)
        H, W = (int(v) for v in batch["image"].shape[-2:])
        K = batch["K"].float().to(device)  # (B, 3, 3) output image
        classes = batch["det3d_classes"].to(device)  # (B, M)
        rotation = batch["det3d_rotation"].float().to(device)  # (B, M, 3, 3)
        rows = torch.arange(m, device=device)[None] < batch["det3d_count"].to(device)[:, None]  # (B, M)

        centre = boxes[..., :3]  # (B, M, 3)
        z = centre[..., 2]
        front = z > cfg.min_depth
        z_safe = torch.where(front, z, torch.ones_like(z))
        uvw = torch.einsum("bij,bmj->bmi", K, centre)  # (B, M, 3)
        u, v = uvw[..., 0] / z_safe, uvw[..., 1] / z_safe
        col, row = torch.floor((u + 0.5) / s), torch.floor((v + 0.5) / s)  # (B, M) cells
        inside = (
            (u >= -0.5)
            & (u < W - 0.5)
            & (v >= -0.5)
            & (v < H - 0.5)
            & (col >= 0)
            & (col < fw)
            & (row >= 0)
            & (row < fh)
        )
        known = (classes >= 0) & (classes < self.num_classes)
        valid = rows & front & inside & known & batch["K_known"].to(device)[:, None]  # (B, M)
        zero = torch.zeros_like(u)
        u, v = torch.where(valid, u, zero), torch.where(valid, v, zero)
        col, row = torch.where(valid, col, zero), torch.where(valid, row, zero)

        # Gaussian radius from the projected box extent (corners clamped in front of the camera)
        signs = torch.tensor(_CORNER_SIGNS, dtype=boxes.dtype, device=device)  # (8, 3)
        half = boxes[..., [3, 5, 4]] / 2  # (B, M, 3): l along x, h along y, w along z
        local = signs[None, None] * half[:, :, None]  # (B, M, 8, 3)
        corners = torch.einsum("bmij,bmkj->bmki", rotation, local) + centre[:, :, None]  # (B, M, 8, 3)
        cuvw = torch.einsum("bij,bmkj->bmki", K, corners)  # (B, M, 8, 3)
        cz = cuvw[..., 2].clamp(min=cfg.min_depth)
        cu, cv = cuvw[..., 0] / cz, cuvw[..., 1] / cz
        box_w = ((cu.amax(-1) - cu.amin(-1)) / s).clamp(0, fw)  # (B, M) cells
        box_h = ((cv.amax(-1) - cv.amin(-1)) / s).clamp(0, fh)
        box_w, box_h = torch.where(valid, box_w, zero), torch.where(valid, box_h, zero)
        radius = torch.floor(gaussian_radius(box_h, box_w, cfg.min_overlap)).clamp(min=cfg.min_radius)  # (B, M)
        sigma = (2 * radius + 1) / 6
        dx = torch.arange(fw, device=device, dtype=boxes.dtype)[None, None] - col[..., None]  # (B, M, w)
        dy = torch.arange(fh, device=device, dtype=boxes.dtype)[None, None] - row[..., None]  # (B, M, h)
        gx = torch.exp(-(dx**2) / (2 * sigma[..., None] ** 2)) * (dx.abs() <= radius[..., None])
        gy = torch.exp(-(dy**2) / (2 * sigma[..., None] ** 2)) * (dy.abs() <= radius[..., None])
        gauss = gy[..., :, None] * gx[..., None, :] * valid[..., None, None]  # (B, M, h, w)
        cls = torch.where(valid, classes, torch.zeros_like(classes))  # (B, M)
        heatmap = torch.zeros(b, self.num_classes, fh * fw, dtype=boxes.dtype, device=device)
        heatmap.scatter_reduce_(1, cls[..., None].expand(b, m, fh * fw), gauss.reshape(b, m, fh * fw), "amax")

        # regression targets at the centre cells
        offset = torch.stack([(u + 0.5) / s - 0.5 - col, (v + 0.5) / s - 0.5 - row], dim=-1)  # (B, M, 2)
        scale = _virtual_scale(K, cfg.virtual_focal)  # (B,)
        depth = torch.log(torch.where(valid, z * scale[:, None], torch.ones_like(z)))[..., None]  # (B, M, 1)
        dims = torch.where(valid[..., None], boxes[..., 3:6], torch.ones_like(boxes[..., 3:6]))  # (B, M, 3) l w h
        size = torch.log(dims.clamp(min=1e-3))
        yaw, pitch, roll = rotation_to_yaw_pitch_roll_torch(rotation)  # (B, M) each
        alpha = yaw - torch.atan2(centre[..., 0], z_safe)
        orientation = multibin_targets(alpha[..., None], cfg.heading_bins)  # (B, M, 2 n)
        pitch_roll = multibin_targets(torch.stack([pitch, roll], dim=-1), cfg.heading_bins)  # (B, M, 4 n)
        full = valid & batch["det3d_full"].to(device)
        return Det3DTargets(
            heatmap.view(b, self.num_classes, fh, fw),
            (row * fw + col).long(),
            valid,
            full,
            torch.where(valid[..., None], offset, torch.zeros_like(offset)),
            depth,
            size,
            torch.where(valid[..., None], orientation, torch.zeros_like(orientation)),
            torch.where(full[..., None], pitch_roll, torch.zeros_like(pitch_roll)),
        )

    def loss(self, output: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """Per-sample losses (B,): focal heatmap loss + weighted L1 and multi-bin terms, 0 without K."""
        cfg = self.config
        logits = output["heatmap"].float()  # (B, C, h, w)
        t = self.targets(batch, logits.shape[-2:])
        # CenterNet's clamped sigmoid: log(p) and log(1 - p) stay finite
        p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
        pos = t.heatmap.eq(1).to(p.dtype)
        pos_term = torch.log(p) * (1 - p) ** cfg.focal_alpha * pos
        neg_term = torch.log(1 - p) * p**cfg.focal_alpha * (1 - t.heatmap) ** cfg.focal_beta * (1 - pos)
        objects = t.valid.sum(1).to(p.dtype)  # (B,)
        focal = -(pos_term + neg_term).sum(dim=(1, 2, 3)) / objects.clamp(min=1)

        def mean_over(per_object: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            # where, not a product: a masked row's loss is dropped even if not finite
            return torch.where(mask, per_object, 0.0).sum(1) / mask.sum(1).to(p.dtype).clamp(min=1)  # (B,)

        def l1(name: str, target: torch.Tensor) -> torch.Tensor:
            pred = self._gather(output[name].float(), t.index)  # (B, M, k)
            return mean_over((pred - target).abs().sum(-1), t.valid)

        def multibin(name: str, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            pred = self._gather(output[name].float(), t.index)  # (B, M, 2 A n)
            return mean_over(multibin_loss(pred, target, cfg.heading_bins), mask)

        total = (
            cfg.weight_heatmap * focal
            + cfg.weight_offset * l1("offset", t.offset)
            + cfg.weight_depth * l1("depth", t.depth)
            + cfg.weight_size * l1("size", t.size)
            + cfg.weight_orientation * multibin("orientation", t.orientation, t.valid)
            + cfg.weight_pitch_roll * multibin("pitch_roll", t.pitch_roll, t.full)
        )
        return total * batch["K_known"].to(total.device, total.dtype)

    @staticmethod
    def _gather(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, k, h, w) maps at flat cells (B, N) -> (B, N, k)."""
        b, k = maps.shape[:2]
        flat = maps.reshape(b, k, -1)  # (B, k, h w)
        return flat.gather(2, index[:, None, :].expand(b, k, index.shape[1])).transpose(1, 2)

    # ---- predictions ----

    def decode(self, output: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> list[Det3DPrediction | None]:
        """Peaks -> 3D boxes in each sample's stored optical frame (module docstring); None for dummy
        slots, an empty prediction for a sample without K."""
        cfg = self.config
        heat = torch.sigmoid(output["heatmap"].float())  # (B, C, h, w)
        b, c, fh, fw = heat.shape
        pooled = F.max_pool2d(heat, cfg.nms_kernel, stride=1, padding=cfg.nms_kernel // 2)
        peaks = heat * (pooled == heat)  # (B, C, h, w) non-peaks zeroed
        scores, flat = peaks.reshape(b, -1).topk(min(cfg.max_detections, c * fh * fw), dim=1)  # (B, N)
        cell = flat % (fh * fw)
        names = regression_channels(cfg.heading_bins)
        regress = torch.cat([self._gather(output[name].float(), cell) for name in names], dim=-1)  # (B, N, 6 + 6 n)
        scores, flat, regress, K_all = (to_numpy(x).astype(np.float64) for x in (scores, flat, regress, batch["K"]))
        flat = flat.astype(np.int64)
        known = to_numpy(batch["K_known"]).astype(bool)
        return per_sample(
            batch,
            lambda i: (
                self._decode_one(scores[i], flat[i], regress[i], K_all[i], fw, fh, view_of(batch, i))
                if known[i]
                else Det3DPrediction.empty()
            ),
        )

    def _decode_one(
        self, scores: np.ndarray, flat: np.ndarray, regress: np.ndarray, K: np.ndarray, fw: int, fh: int, view: View
    ) -> Det3DPrediction:
        cfg, s = self.config, self.config.stride
        keep = scores >= cfg.score_threshold
        scores, flat, r = scores[keep], flat[keep], regress[keep]  # r: (N, 6 + 6 n) in regression_channels order
        classes, cell = np.divmod(flat, fh * fw)
        row, col = np.divmod(cell, fw)
        u = (col + r[:, 0] + 0.5) * s - 0.5  # (N,) output px
        v = (row + r[:, 1] + 0.5) * s - 0.5
        scale = cfg.virtual_focal / math.sqrt(abs(K[0, 0] * K[1, 1])) if cfg.virtual_focal > 0 else 1.0
        z = np.exp(r[:, 2]) / scale
        centre = np.linalg.solve(K, np.stack([u * z, v * z, z]))  # (3, N) output optical frame
        x = centre[0]
        dims = np.exp(r[:, 3:6])
        n = cfg.heading_bins
        yaw = decode_multibin(r[:, 6 : 6 + 2 * n], n)[:, 0] + np.arctan2(x, z)  # (N,) alpha + ray angle
        pitch, roll = decode_multibin(r[:, 6 + 2 * n :], n).T  # (N,) each
        rotation = geo.yaw_pitch_roll_to_rotation(yaw, pitch, roll).reshape(-1, 3, 3)
        if view.flipped:  # the loader's mirror, an involution: x -> -x, R -> M R N
            centre = _MIRROR @ centre
            rotation = _MIRROR[None] @ rotation @ _MIRROR_W[None]
        boxes = np.column_stack([centre.T, dims, np.arctan2(rotation[:, 0, 2], rotation[:, 0, 0])]).reshape(-1, 7)
        K_stored = stored_intrinsics(K, view)
        boxes2d = amodal_boxes(boxes, rotation, K_stored, view.placement.src_size)
        return Det3DPrediction(boxes, rotation, scores, classes.astype(np.int64), boxes2d)

    def ground_truth(self, sample: Sample) -> Det3DTruth | None:
        """Boxes, rotations, classes, K and (Cityscapes-3D) the amodal 2D boxes and ignore regions.

        Raises:
            MtlDataError: the sample's ``det2d.amodal`` rows do not pair with its ``det3d`` boxes.
        """
        det = sample.det3d
        if det is None:
            return None
        boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 7)
        rotation = (
            geo.yaw_to_rotation(boxes[:, 6]).reshape(-1, 3, 3)
            if det.rotation is None
            else np.asarray(det.rotation, dtype=np.float64).reshape(-1, 3, 3)
        )
        amodal, ignore = None, np.zeros((0, 4))
        if sample.det2d is not None:
            ignore = np.asarray(sample.det2d.ignore, dtype=np.float64).reshape(-1, 4)
            if sample.det2d.amodal is not None:
                amodal = np.asarray(sample.det2d.amodal, dtype=np.float64).reshape(-1, 4)
                if len(amodal) != len(boxes) or not np.array_equal(sample.det2d.classes, det.classes):
                    raise MtlDataError(
                        f"sample {sample.key}: its {len(amodal)} det2d amodal boxes do not pair with "
                        f"its {len(boxes)} det3d boxes (the converter writes them in one order)"
                    )
        return Det3DTruth(
            boxes=boxes,
            classes=np.asarray(det.classes, dtype=np.int64),
            rotation=rotation,
            K=None if sample.K is None else np.asarray(sample.K, dtype=np.float64),
            size=sample.size,
            amodal=amodal,
            ignore=ignore,
            sensor_T=sensor_transform(sample),
        )

    def metric(self) -> Det3DMetric:
        return Det3DMetric(self.classes, self.config)

    # ---- export ----

    def writer(self, out_dir: Path) -> Det3DWriter:
        return Det3DWriter(out_dir, self.classes)

    # ---- picture ----

    def draw(self, image: np.ndarray, prediction: Det3DPrediction | None, sample: Sample) -> np.ndarray:
        """The boxes scoring ``DRAW_SCORE_THRESHOLD`` or more, projected with the sample's ``K``
        (module docstring); None draws nothing, as an empty prediction."""
        if sample.K is None:
            return caption(image, "no camera intrinsics (K) stored: 3D boxes cannot be drawn")
        pred = Det3DPrediction.empty() if prediction is None else prediction
        sensor_T = sensor_transform(sample) if pred.frame == "vehicle" else None
        if pred.frame == "vehicle" and sensor_T is None:
            return caption(image, "boxes in vehicle coordinates but no sensor_T_ISO_8855 stored: cannot be drawn")
        keep = np.flatnonzero(np.asarray(pred.scores) >= DRAW_SCORE_THRESHOLD)
        keep = keep[np.argsort(pred.scores[keep], kind="stable")]  # the most confident drawn last, on top
        boxes, rotation = pred.boxes[keep], pred.rotation.reshape(-1, 3, 3)[keep]
        if pred.frame != "optical":  # read back in V, or in C (identity extrinsic)
            boxes, rotation = cg.frame_boxes_to_optical(boxes[:, :3], boxes[:, 3:6], rotation, sensor_T)
        edges = projected_edges(boxes, rotation, np.asarray(sample.K, dtype=np.float64))  # (N, E, 2, 2)
        classes = np.asarray(pred.classes, dtype=np.int64)[keep]
        colours = distinct_colours(classes)  # (N, 3)
        out = draw_segments(image, edges.reshape(-1, 2, 2), np.repeat(colours, edges.shape[1], axis=0))
        h, w = image.shape[:2]
        start, end, inside = clip_segments(
            edges[:, :, 0].reshape(-1, 2), edges[:, :, 1].reshape(-1, 2), (0, 0), (w - 1, h - 1)
        )  # the parts of the edges in the image
        ends = np.where(inside[:, None, None], np.stack([start, end], axis=1), np.inf)  # (N E, 2, 2)
        # (N, 2) the top left of what is drawn of each box; inf where nothing is (no tag)
        anchors = ends.reshape(len(keep), 2 * len(BOX_EDGES), 2).min(axis=1)
        texts = [f"{class_name(self.classes, c)} {score:.2f}" for c, score in zip(classes, pred.scores[keep])]
        return draw_labels(out, anchors, texts, colours)

    def holds_predictions(self, pred_dir: Path) -> bool:
        return (Path(pred_dir) / "det3d").is_dir()

    def read_predictions(self, pred_dir: Path) -> dict[str, Det3DPrediction]:
        """Every ``det3d/<source>/<split>/<id>_pred.json`` under ``pred_dir``, by sample key, in the
        file's frame (V or C: the metric relates it to the sample's camera).

        Raises:
            MtlDataError: a JSON file elsewhere under ``det3d/``, or a malformed file (named).
        """
        root = Path(pred_dir) / "det3d"
        class_of_label = {cityscapes3d_label(name): i for i, name in enumerate(self.classes)}
        out: dict[str, Det3DPrediction] = {}
        for path in sorted(root.rglob("*.json")):
            parts = path.relative_to(root).parts
            if len(parts) != 3 or not path.name.endswith(PRED_SUFFIX) or len(path.name) == len(PRED_SUFFIX):
                raise InputError(
                    path, f"not at det3d/<source>/<split>/<id>{PRED_SUFFIX} (how det3d predictions are written)"
                )
            out[f"{parts[0]}_{parts[1]}_{path.name[: -len(PRED_SUFFIX)]}"] = read_prediction_file(path, class_of_label)
        return out
