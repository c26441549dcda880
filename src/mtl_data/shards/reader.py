"""Reading shards back: locate a sample, summarize counts, check everything against the schema.

Paths in the manifest's ``shard`` column are relative to the shards root (the folder holding
one sub-folder per source), so a root or a single source folder both work as input.

Images are decoded strictly here (``decode_image_strict``): libjpeg repairs corrupt JPEG data
with a warning on stderr and returns an image anyway; that warning is captured and reported as
corruption, never shown on the terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import TASKS, Sample
from mtl_data.schema.validate import validate, validate_meta
from mtl_data.shards.codec import IMAGE_FORMATS, DecodeError, decode_image, decode_sample, prev_members
from mtl_data.shards.manifest import MANIFEST_NAME, no_manifest_error, read_manifests, sample_row
from mtl_data.shards.tario import iter_tar_samples

#: what reading a truncated or corrupt tar raises (tarfile's own errors, a short read, a bad header)
TAR_ERRORS = (tarfile.TarError, EOFError, OSError, UnicodeDecodeError, ValueError)


class _Fd2Capture:
    """What C libraries print on file descriptor 2 while a function runs (libjpeg's warnings).

    The descriptor is pointed at a temporary file for the call only, so Python's own stderr
    output (a progress bar) before and after is untouched.
    """

    def __init__(self):
        self._file = tempfile.TemporaryFile(buffering=0)

    def call(self, fn: Callable, *args):
        """``(fn(*args), text printed on fd 2 during the call)``."""
        fd = self._file.fileno()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all: capture into the file and close it again after
            saved = None
        os.dup2(fd, 2)
        try:
            result = fn(*args)
        finally:
            if saved is None:
                os.close(2)
            else:
                os.dup2(saved, 2)
                os.close(saved)
        os.lseek(fd, 0, os.SEEK_SET)
        return result, os.read(fd, 1 << 16).decode(errors="replace").strip()

    def close(self) -> None:
        self._file.close()


def decode_image_strict(data: bytes, capture: _Fd2Capture | None = None) -> tuple[np.ndarray | None, str]:
    """Decode image bytes fully: ``(RGB image or None, problem)``; problem is "" when it is intact.

    A JPEG whose entropy-coded data is corrupt still decodes (libjpeg fills in what it cannot
    read and prints "Corrupt JPEG data: ..."; a truncated one "Premature end of JPEG file");
    here that message is the problem, and it is kept off the terminal.
    """
    own = capture is None
    capture = capture or _Fd2Capture()
    try:
        image, printed = capture.call(decode_image, data)
    finally:
        if own:
            capture.close()
    problem = " ".join(printed.split())
    if image is None:
        return None, problem or "does not decode"
    return (None, problem) if problem else (image, "")


#: what ``decode_members`` raises on content that does not decode (DecodeError, and what
#: malformed JSON values give).
DECODE_ERRORS = (DecodeError, KeyError, ValueError, TypeError)


def decode_images_strict(
    members: dict[str, bytes], capture: _Fd2Capture | None = None
) -> tuple[np.ndarray | None, list[np.ndarray] | None, str]:
    """The image and the previous frames (``prevK``) of a sample, each decoded with
    ``decode_image_strict``: ``(image, previous frames, problem)``, problem "" when all are intact,
    else naming the member (and images None). ``(None, None, "")`` without an image member."""
    image_ext = next((e for e in IMAGE_FORMATS if e in members), None)
    if image_ext is None:
        return None, None, ""
    try:
        exts = [image_ext, *prev_members(members, image_ext)]
    except DecodeError as exc:
        return None, None, str(exc)
    images = []
    for ext in exts:
        image, problem = decode_image_strict(members[ext], capture)
        if problem:
            return None, None, f"{ext}: corrupt image data ({problem})"
        images.append(image)
    return images[0], images[1:], ""


def decode_members(key: str, members: dict[str, bytes], strict: bool = True) -> Sample:
    """``codec.decode_sample`` of one sample's members, its image and previous frames decoded
    with ``decode_image_strict`` when ``strict`` (corrupt JPEG data is an error, not a repaired
    picture).

    Raises:
        One of ``DECODE_ERRORS``: a member does not decode.
    """
    image, prev, problem = decode_images_strict(members) if strict else (None, None, "")
    if problem:
        raise DecodeError(problem)
    return decode_sample(key, members, image=image, prev=prev)


def rebuild_hint(root: Path, shard: str, overwrite: bool = False) -> str:
    """What to do about a damaged shard (``kitti/train-000001.tar`` under ``root``): the ingest
    command that rebuilds it, with the raw root its ``ingest.json`` recorded.

    A missing or truncated shard is found by a plain re-run (its size differs from the one
    recorded); corrupt bytes of the same size need ``--overwrite`` on its split.
    """
    source, _, name = shard.partition("/")
    built = {}
    with contextlib.suppress(OSError, ValueError):
        built = json.loads((Path(root) / source / "ingest.json").read_text())
    raw = built.get("root", "RAW") if isinstance(built, dict) else "RAW"
    command = f"mtl-data ingest {source} {raw} --to {root}"
    if overwrite:
        split = name.split("-")[0]
        return f"rebuild its split: `{command} --split {split} --overwrite` with the options of {source}/ingest.json"
    return (
        f"re-run the ingest that wrote it (`{command}` with the options of {source}/ingest.json): "
        "it finds missing and truncated shards and rebuilds their split"
    )


def labels_any(tasks: Iterable[str] = TASKS) -> pl.Expr:
    """Polars expression over manifest rows: True where the sample labels at least one of ``tasks``."""
    return pl.any_horizontal([pl.col(f"has_{t}") for t in tasks])


def read_class_tables(source_dir: Path) -> dict[str, list[str]]:
    """The ``classes.json`` of a source folder (task -> class names by id); {} when it has none.

    Raises:
        MtlDataError: the file is not readable JSON (naming it).
    """
    path = Path(source_dir) / "classes.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MtlDataError(f"{path}: not readable JSON ({exc}); re-run the ingest with --overwrite") from None


@dataclass(frozen=True)
class ShardSet:
    """The shards under a root: the root itself and its manifest rows."""

    root: Path
    manifest: pl.DataFrame

    @classmethod
    def open(cls, path: Path) -> ShardSet:
        """Open a shards root (``shards/``) or one source folder (``shards/kitti``).

        Raises:
            MtlDataError: no manifest below ``path`` (nothing ingested, or an ingest unfinished).
        """
        path = Path(path)
        if not path.is_dir():
            raise MtlDataError(f"{path}: no such folder (expected a shards root written by `mtl-data ingest`)")
        try:
            table = read_manifests(path)
        except FileNotFoundError:
            raise no_manifest_error(path) from None
        root = path.parent if (path / MANIFEST_NAME).exists() else path
        return cls(root, pl.from_arrow(table))

    def sources(self) -> list[str]:
        return sorted(self.manifest["source"].unique().to_list())

    def class_tables(self, source: str) -> dict[str, list[str]]:
        """``read_class_tables`` of the source's folder."""
        return read_class_tables(self.root / source)

    def counts(self) -> pl.DataFrame:
        """Samples, shards and labelled samples per task, per source and split."""
        return (
            self.manifest.group_by("source", "split", maintain_order=True)
            .agg(
                pl.len().alias("samples"),
                pl.col("shard").n_unique().alias("shards"),
                *[pl.col(f"has_{t}").sum().alias(t) for t in TASKS],
            )
            .sort("source", pl.col("split").replace_strict({"train": 0, "val": 1, "test": 2}, default=3))
        )

    def row(self, key: str) -> dict:
        """The manifest row of ``key``; MtlDataError if absent."""
        hit = self.manifest.filter(pl.col("key") == key)
        if hit.height == 0:
            raise MtlDataError(f"{self.root}: no sample with key {key!r} in the manifest")
        return hit.row(0, named=True)

    def read_members(self, key: str) -> dict[str, bytes]:
        """The raw members of one sample, read from its shard at the manifest's byte offset.

        Raises:
            MtlDataError: no such key; or its shard is missing, truncated or corrupt (naming the
                shard and how to rebuild it).
        """
        row = self.row(key)
        path = self.root / row["shard"]
        try:
            got_key, members = next(iter_tar_samples(path, offset=row["offset"]), (None, {}))
        except FileNotFoundError:
            raise MtlDataError(
                f"{path}: shard missing (it holds {key}); {rebuild_hint(self.root, row['shard'])}"
            ) from None
        except TAR_ERRORS as exc:
            raise MtlDataError(
                f"{path}: truncated or corrupt shard ({exc} reading {key} at byte {row['offset']}); "
                f"{rebuild_hint(self.root, row['shard'])}"
            ) from None
        if got_key != key:
            found = "nothing" if got_key is None else repr(got_key)
            raise MtlDataError(
                f"{path}: byte {row['offset']} holds {found}, not {key!r}; "
                f"{rebuild_hint(self.root, row['shard'], overwrite=True)}"
            )
        return members

    def read_sample(self, key: str, strict: bool = False) -> Sample:
        """One sample, decoded.

        Args:
            key: its key.
            strict: decode the image with ``decode_image_strict`` (corrupt JPEG data is an error,
                libjpeg's warning never reaches stderr). It points fd 2 elsewhere during the
                decode, so it is for single-threaded tools (inspect), not a trainer's loop.

        Raises:
            MtlDataError: it cannot be read or a member is corrupt (naming the shard and key).
        """
        members = self.read_members(key)
        shard = self.row(key)["shard"]
        try:
            return decode_members(key, members, strict)
        except DECODE_ERRORS as exc:
            raise MtlDataError(
                f"{self.root / shard}: {key} does not decode ({exc}); {rebuild_hint(self.root, shard, overwrite=True)}"
            ) from None


def check_shards(shards: ShardSet, progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """Decode every sample of every shard and yield each problem found, as one line.

    Checks: every tar sample decodes (the image and its previous frames fully and strictly:
    ``decode_image_strict``; previous frames must have the image's size, ``validate``),
    validates against the schema, and matches its manifest row (shard, position, offset, and
    every derived column); every manifest row is found in its shard; keys are unique; no stray
    shard lies next to a manifest; no shard is truncated.

    Args:
        shards: what to check.
        progress: called with the number of manifest rows dealt with, as the check advances
            (their sum is the manifest's row count).
    """
    capture = _Fd2Capture()
    try:
        yield from _check_shards(shards, progress or (lambda n: None), capture)
    finally:
        capture.close()


def _check_shards(shards: ShardSet, progress: Callable[[int], None], capture: _Fd2Capture) -> Iterator[str]:
    m = shards.manifest
    dupes = m.filter(pl.col("key").is_duplicated())["key"].unique().to_list()
    for key in sorted(dupes):
        yield f"manifest: key {key!r} appears more than once"
    expected = {r["key"]: r for r in m.iter_rows(named=True)}
    seen: set[str] = set()
    listed = set(m["shard"].unique().to_list())
    on_disk = {f"{p.parent.name}/{p.name}" for s in shards.sources() for p in (shards.root / s).glob("*.tar")}
    for stray in sorted(on_disk - listed):
        yield f"{stray}: shard on disk but no manifest row points into it"
    rows_per_shard = dict(m.group_by("shard").len().iter_rows())
    for shard in sorted(listed):
        path = shards.root / shard
        before = len(seen)
        if not path.exists():
            yield f"{shard}: listed in the manifest but missing; {rebuild_hint(shards.root, shard)}"
        else:
            source = shard.split("/")[0]
            num_det = len(shards.class_tables(source).get("det2d", [])) or None
            yield from _check_shard(shards.root, shard, expected, seen, num_det, progress, capture)
        progress(max(0, rows_per_shard[shard] - (len(seen) - before)))  # rows not found in the tar
    for key in sorted(set(expected) - seen):
        row = expected[key]
        if (shards.root / row["shard"]).exists():
            yield f"{row['shard']}: {key}: in the manifest but not in the shard"


def _check_shard(
    root: Path,
    shard: str,
    expected: dict,
    seen: set,
    num_det: int | None,
    progress: Callable[[int], None],
    capture: _Fd2Capture,
) -> Iterator[str]:
    path = root / shard
    offsets = _member_offsets(path)
    try:
        for position, (key, members) in enumerate(iter_tar_samples(path)):
            where = f"{shard}: {key}"
            if key in seen:
                yield f"{where}: key appears in more than one place"
            seen.add(key)
            row = expected.get(key)
            if row is None:
                yield f"{where}: not in the manifest"
                continue
            progress(1)
            image, prev, problem = decode_images_strict(members, capture)
            if problem:
                yield f"{where}: {problem}; {rebuild_hint(root, shard, True)}"
                continue
            try:
                meta = json.loads(members["meta.json"]) if "meta.json" in members else {}
                sample = decode_sample(key, members, image=image, prev=prev)
            except DECODE_ERRORS as exc:
                yield f"{where}: does not decode: {exc}"
                continue
            for problem in validate_meta(meta) + validate(sample, num_det):
                yield f"{where}: {problem}"
            actual = sample_row(sample)
            actual.update(shard=shard, position=position, offset=offsets.get(key))
            for col, want in actual.items():
                if not _same(row.get(col), want):
                    yield f"{where}: manifest {col}={row.get(col)!r} but the shard gives {want!r}"
    except Exception as exc:  # a truncated or corrupt tar stops the walk; report, do not crash
        yield f"{shard}: truncated or corrupt tar ({exc}); {rebuild_hint(root, shard)}"


def _member_offsets(path: Path) -> dict[str, int]:
    """Byte offset of the first header of each key in a tar."""
    offsets: dict[str, int] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                offsets.setdefault(info.name.partition(".")[0], info.offset)
    except tarfile.TarError:
        pass
    return offsets


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and bool(np.isclose(a, b, rtol=1e-6, atol=1e-6))
    return a == b
