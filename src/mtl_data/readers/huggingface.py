"""The shards as a Hugging Face ``datasets.Dataset``, every source of a split mixed, one schema.

The stock builder (``load_dataset("webdataset", data_files=...)``) infers its features from the
first five samples of the first tar and refuses a split whose samples carry different members
(``ValueError: The TAR archives of the dataset should be in WebDataset format, but the files in
the archive don't share the same prefix or the same types.``); where the first five happen to
agree it fails later, casting a member or a ``null`` meta field that another sample fills
(``TypeError: Couldn't cast array of type string to null``). Partial labels are exactly that
case, so this module builds the dataset itself: the project's shard reader and codec read each
sample, and one explicit ``datasets.Features`` (``hf_features``) covers every member of the
unified schema. Decisions (docs/readers.md):

- one row per sample, one column per task named after it (and ``lane_lines``, the polylines of
  ``lane.json``, beside the ``lane`` mask); a task the sample does not label is None (never an
  empty label: a KITTI frame with no objects has ``det2d`` with zero boxes);
- ``image``, ``seg`` and ``lane`` are top-level ``datasets.Image()`` columns holding the stored
  PNG / JPEG bytes as they are in the tar (no re-encoding, the Arrow cache stays compact),
  decoded by Pillow on access: ``seg`` and ``lane`` mode ``L`` (uint8). Not inside a struct:
  ``with_format("numpy")`` then fails on the struct's list-of-lists fields (``ValueError: The
  truth value of an array ... is ambiguous``);
- ``depth`` is a ``binary`` column holding the ``depth.pts`` bytes as stored (schema 2; a schema 1
  shard's ``depth.png`` is converted to the same bytes, losslessly, so one column type covers
  both). No ``datasets`` feature decodes them: ``depth_map(row["depth"])`` gives the (H, W) uint16
  ``round(metres * 256)``, 0 = no measurement (or ``shards.depthpoints``' numpy snippet, without
  this package);
- boxes are lists of lists in the schema's units: ``det2d.boxes`` ``[x1, y1, x2, y2]`` px of
  the stored image, ``det3d.boxes`` ``[x, y, z, l, w, h, yaw]`` m / rad in the optical frame,
  class ids as int64; a per-box list the source has not is None. Inside a task's struct no list
  is declared fixed-size: ``datasets`` before 5.1 cannot cast a None struct holding one;
- the source-specific ``meta.json`` keys (``extra``) and the ``notes`` counts are JSON text:
  their keys differ by source, which a fixed Arrow struct cannot hold.

``datasets`` is imported inside the functions (``pip install 'mtl-data[hf]'``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import TASKS, Sample
from mtl_data.shards.codec import IMAGE_FORMATS, DecodeError, decode_sample, depth_to_uint16
from mtl_data.shards.depthpoints import EXTENSION as DEPTH_POINTS
from mtl_data.shards.depthpoints import decode_depth_points, encode_depth_points
from mtl_data.shards.reader import ShardSet, labels_any
from mtl_data.shards.tario import iter_tar_samples

if TYPE_CHECKING:
    import datasets

#: the members whose bytes go into ``Image`` columns as stored: column -> member extension.
_PNG_COLUMNS = {"seg": "seg.png", "lane": "lane.png"}


#: zero bytes put back after a ``numpy.bytes_`` value (see ``depth_map``); the zlib stream's end is
#: its own, so any more than were dropped are ignored.
_NUL_PAD = b"\0" * 64


def depth_map(data: bytes) -> np.ndarray:
    """The (H, W) uint16 depth map of a ``depth`` column value (``depth.pts`` bytes).

    ``round(metres * 256)``, 0 = no measurement: metres = ``depth_map(row["depth"]) / 256``.
    Takes the value as any format gives it: ``bytes``, or the ``numpy.bytes_`` of
    ``with_format("numpy")``, which drops trailing NUL bytes (a zlib stream's checksum ends in
    one for about 1 row in 256); they are put back here.

    Raises:
        ValueError: the bytes are not a well-formed ``depth.pts`` member.
    """
    if isinstance(data, np.bytes_):
        data = bytes(data) + _NUL_PAD
    return decode_depth_points(bytes(data)).to_map()


def _datasets():
    try:
        import datasets
    except ImportError:
        raise MtlDataError(
            "reading the shards as a Hugging Face dataset needs the `datasets` package: "
            "pip install 'mtl-data[hf]' (or pip install 'datasets>=2.19')"
        ) from None
    return datasets


def hf_features() -> datasets.Features:
    """The ``datasets.Features`` of ``to_hf_dataset``: every member of the unified schema.

    Raises:
        MtlDataError: ``datasets`` is not installed.
    """
    ds = _datasets()
    Value, Seq, Image = ds.Value, ds.Sequence, ds.Image
    f64, i64, text = Value("float64"), Value("int64"), Value("string")

    # Lists inside a task's struct have no fixed length (the widths are in the comments and the
    # schema): datasets < 5.1 cannot cast a None struct that holds a fixed-size list.
    boxes = Seq(Seq(f64))

    return ds.Features(
        {
            "key": text,
            "source": text,
            "split": text,
            "id": text,
            "sequence": text,
            "size": Seq(i64, length=2),  # [height, width] of the stored image
            "orig_size": Seq(i64, length=2),
            "K": Seq(Seq(f64, length=3), length=3),
            "timestamp_us": i64,
            "tasks": Seq(text),  # the task columns below that are not None, in TASKS order
            "image": Image(),
            "seg": Image(),  # 8-bit: unified class id, 255 = ignore
            "depth": Value("binary"),  # depth.pts bytes: depth_map(value) -> (H, W) uint16 round(m * 256)
            "det2d": {
                "boxes": boxes,  # [x1, y1, x2, y2] px of the stored image
                "classes": Seq(i64),
                "ignore": boxes,
                "truncated": Seq(f64),
                "occluded": Seq(i64),
                "native_class": Seq(text),
                "amodal": boxes,
            },
            "det3d": {
                "boxes": boxes,  # [x, y, z, l, w, h, yaw] m, rad; optical frame of the stored image
                "classes": Seq(i64),
                "rotation": Seq(Seq(Seq(f64))),  # 3x3 per box
                "native_class": Seq(text),
            },
            "steer": {"angle_deg": f64, "speed_kmh": f64, "gap_ms": f64},
            "sign": {"class_id": i64, "roi": Seq(f64)},  # roi [x1, y1, x2, y2] px
            "lane": Image(),  # 8-bit: 0 background, 1..N lanes left to right, 255 ignore
            "lane_lines": {  # lane.json: the native polylines; None exactly where lane is None
                "h_samples": Seq(f64),  # row px
                "lanes": Seq(Seq(f64)),  # x px per lane and h_sample, -2 = no point
                "thickness": f64,  # px the mask was drawn with
            },
            "extra": text,  # JSON object: the source's own meta.json keys
            "notes": text,  # JSON object: counts of recoverable input problems
        }
    )


def webdataset_features() -> datasets.Features:
    """``features=`` for the stock builder, ``load_dataset("webdataset", data_files=..., features=...)``.

    Given the features, the builder skips its inference from the first samples (which is what
    refuses partial labels) and fills a member a sample lacks with None. Columns are the member
    names (``jpg``/``png``, ``meta.json``, ``seg.png`` ...), typed as in ``hf_features``, plus
    the builder's ``__key__`` and ``__url__``. Depth is ``depth.pts`` (binary, read it with
    ``depth_map``) in schema 2 shards and ``depth.png`` (Pillow ``I;16``, the uint16 map) in
    schema 1 shards; both columns are declared, the one a shard lacks is None. The builder
    decodes ``meta.json`` into a fixed struct, so the source-specific meta keys and ``notes``
    are dropped (``to_hf_dataset`` keeps them). Needs ``datasets`` >= 2.21: earlier builders
    raise ``KeyError`` on an absent image member.

    Raises:
        MtlDataError: ``datasets`` is not installed.
    """
    ds = _datasets()
    f = hf_features()
    text = ds.Value("string")
    meta = {"schema": ds.Value("int64")}
    meta.update({k: f[k] for k in ("source", "split", "id", "sequence", "size", "orig_size", "K", "timestamp_us")})
    meta.update(tasks=f["tasks"], sign_roi=f["sign"]["roi"])
    return ds.Features(
        {
            **{ext: ds.Image() for ext in IMAGE_FORMATS},
            "meta.json": meta,
            "seg.png": ds.Image(),
            DEPTH_POINTS: ds.Value("binary"),
            "depth.png": ds.Image(),  # schema 1 shards
            "det2d.json": f["det2d"],
            "det3d.json": f["det3d"],
            "steer.json": f["steer"],
            "sign.cls": ds.Value("int64"),
            "lane.png": ds.Image(),
            "lane.json": f["lane_lines"],
            "__key__": text,
            "__url__": text,
        }
    )


def _list(values: Any) -> list | None:
    return None if values is None else np.asarray(values).tolist()


def _image(data: bytes) -> dict:
    # path None: Image.encode_example drops the bytes when ``path`` names an existing file.
    return {"bytes": data, "path": None}


def sample_row(sample: Sample, members: dict[str, bytes]) -> dict:
    """The ``hf_features`` row of a decoded sample; ``members`` give the stored image, PNG and
    ``depth.pts`` bytes."""
    image_ext = next(e for e in IMAGE_FORMATS if e in members)
    row = {
        "key": sample.key,
        "source": sample.source,
        "split": sample.split,
        "id": sample.id,
        "sequence": sample.sequence,
        "size": list(sample.size),
        "orig_size": [int(v) for v in sample.orig_size],
        "K": _list(sample.K),
        "timestamp_us": sample.timestamp_us,
        "tasks": list(sample.tasks),
        "image": _image(members[image_ext]),
        "extra": json.dumps(sample.extra),
        "notes": json.dumps(sample.notes),
    }
    for task, ext in _PNG_COLUMNS.items():
        row[task] = None if getattr(sample, task) is None else _image(members[ext])
    row["depth"] = None
    if sample.depth is not None:  # a schema 1 depth.png becomes the same map's depth.pts
        stored = members.get(DEPTH_POINTS)
        row["depth"] = stored if stored is not None else encode_depth_points(depth_to_uint16(sample.depth))
    d2, d3, s, g, la = sample.det2d, sample.det3d, sample.steer, sample.sign, sample.lane
    row["det2d"] = None
    if d2 is not None:
        row["det2d"] = {
            "boxes": _list(d2.boxes),
            "classes": _list(d2.classes),
            "ignore": _list(d2.ignore),
            "truncated": _list(d2.truncated),
            "occluded": _list(d2.occluded),
            "native_class": _list(d2.native_class),
            "amodal": _list(d2.amodal),
        }
    row["det3d"] = None
    if d3 is not None:
        row["det3d"] = {
            "boxes": _list(d3.boxes),
            "classes": _list(d3.classes),
            "rotation": _list(d3.rotation),
            "native_class": _list(d3.native_class),
        }
    row["steer"] = None if s is None else {"angle_deg": s.angle_deg, "speed_kmh": s.speed_kmh, "gap_ms": s.gap_ms}
    row["sign"] = None if g is None else {"class_id": int(g.class_id), "roi": _list(g.roi)}
    row["lane_lines"] = None
    if la is not None:
        row["lane_lines"] = {"h_samples": _list(la.h_samples), "lanes": _list(la.xs), "thickness": float(la.thickness)}
    return row


def _decode(key: str, members: dict[str, bytes], tasks: Collection[str] | None) -> Sample:
    """``codec.decode_sample`` without decoding the image (its stored bytes go to the dataset):
    a zero-strided stand-in of the ``meta.json`` size takes its place."""
    if "meta.json" not in members:
        raise DecodeError("no meta.json member")
    if not any(e in members for e in IMAGE_FORMATS):
        raise DecodeError("no jpg or png image member")
    try:
        h, w = json.loads(members["meta.json"])["size"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"meta.json: no [height, width] size ({exc})") from None
    stand_in = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (int(h), int(w), 3))
    return decode_sample(key, members, tasks=tasks, image=stand_in)


def generate_rows(
    root: str, shards: list[tuple[str, tuple[str, ...], int, int]], tasks: tuple[str, ...] | None
) -> Iterator[dict]:
    """Yield the ``hf_features`` rows of the listed samples, shard by shard in tar order.

    Args:
        root: the shards root.
        shards: ``(shard path relative to root, keys to read from it, size, mtime_ns)``; size and
            mtime are not used here, only hashed into the dataset's cache fingerprint so that a
            re-ingested shard is read again instead of served from a stale cache.
        tasks: the tasks whose labels are read (the others are None); None = all.

    Raises:
        MtlDataError: a sample does not decode, or a manifest key is not in its shard.
    """
    for shard, keys, _size, _mtime in shards:
        wanted = set(keys)
        for key, members in iter_tar_samples(Path(root) / shard):
            if key not in wanted:
                continue
            wanted.discard(key)
            try:
                sample = _decode(key, members, tasks)
            except (DecodeError, KeyError, ValueError, TypeError) as exc:
                raise MtlDataError(f"{shard}: {key}: does not decode: {exc} (see `mtl-data validate`)") from None
            yield sample_row(sample, members)
        if wanted:
            raise MtlDataError(
                f"{shard}: {len(wanted)} manifest keys not in the shard (first: {sorted(wanted)[0]!r}); "
                "check it with `mtl-data validate`"
            )


def select_shards(
    shards_root: str | Path,
    source: str | Collection[str] | None = None,
    split: str | None = "train",
    tasks: Collection[str] | None = None,
    labelled_only: bool = False,
) -> tuple[Path, list[tuple[str, tuple[str, ...], int, int]]]:
    """The shards root and the ``generate_rows`` shard list of a selection, from the manifests.

    Raises:
        MtlDataError: no manifest, an unknown source, split or task, or nothing selected.
    """
    shard_set = ShardSet.open(Path(shards_root))
    m = shard_set.manifest
    if tasks is not None:
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise MtlDataError(f"unknown tasks {', '.join(unknown)}; the tasks are {', '.join(TASKS)}")
    if source is not None:
        wanted = [source] if isinstance(source, str) else list(source)
        unknown = sorted(set(wanted) - set(shard_set.sources()))
        if unknown:
            raise MtlDataError(
                f"{shards_root}: no source {', '.join(unknown)} (it has {', '.join(shard_set.sources())})"
            )
        m = m.filter(pl.col("source").is_in(wanted))
    if split is not None:
        splits = sorted(m["split"].unique().to_list())
        if split not in splits:
            raise MtlDataError(f"{shards_root}: no split {split!r} in the selected sources (they have {splits})")
        m = m.filter(pl.col("split") == split)
    if labelled_only:
        m = m.filter(labels_any(TASKS if tasks is None else tasks))
    if m.height == 0:
        raise MtlDataError(f"{shards_root}: no sample labels any of {', '.join(tasks or TASKS)} in that selection")
    listing = []
    for (shard,), group in m.sort("shard", "position").group_by("shard", maintain_order=True):
        stat = (shard_set.root / shard).stat()
        listing.append((shard, tuple(group["key"].to_list()), stat.st_size, stat.st_mtime_ns))
    return shard_set.root, listing


def to_hf_dataset(
    shards_root: str | Path,
    source: str | Collection[str] | None = None,
    split: str | None = "train",
    tasks: Collection[str] | None = None,
    *,
    labelled_only: bool = False,
    streaming: bool = False,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """A split of the shards as a Hugging Face dataset with the ``hf_features`` columns.

    Rows come in (shard, position) order: sources sorted by name, each shard in tar order.

    Args:
        shards_root: a shards root (``shards/``) or one source folder (``shards/kitti``).
        source: one source name, several, or None = every source under the root.
        split: ``train``, ``val``, ``test`` ... or None = every split.
        tasks: read only these tasks' labels (the other task columns are None); None = all.
        labelled_only: keep only the samples that label at least one of ``tasks`` (the
            manifest's ``has_<task>`` columns; no tar is opened for the others).
        streaming: False = a ``datasets.Dataset``, written once to an Arrow cache (random
            access, ``len``); True = a ``datasets.IterableDataset`` read from the tars on each
            pass (no copy).
        cache_dir: where ``datasets`` writes that cache (default: its own, ``HF_DATASETS_CACHE``).
            The cache is reused only while the selected shards keep their size and mtime.
        num_proc: processes building the cache, shards split between them (not with streaming).

    Raises:
        MtlDataError: ``datasets`` is not installed, no manifest under ``shards_root``, an unknown
            source, split or task, nothing selected, or a sample that does not decode (wrapped
            in ``datasets``' ``DatasetGenerationError`` when it happens while the cache is built).
    """
    ds = _datasets()
    root, shards = select_shards(shards_root, source, split, tasks, labelled_only)
    gen_kwargs = {"root": str(root), "shards": shards, "tasks": None if tasks is None else tuple(tasks)}
    features = hf_features()
    if streaming:
        return ds.IterableDataset.from_generator(generate_rows, features=features, gen_kwargs=gen_kwargs)
    return ds.Dataset.from_generator(
        generate_rows,
        features=features,
        gen_kwargs=gen_kwargs,
        cache_dir=None if cache_dir is None else str(cache_dir),
        num_proc=num_proc,
    )
