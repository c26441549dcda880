"""Training-resolution copies of existing shards (``mtl-data reshard SHARDS --max-side N --to OUT``).

A user ingests each dataset once at full size (the master) and derives smaller training copies
from it without the raw data. ``ReshardConverter`` is a ``Converter`` whose "raw dataset" is one
source folder of the master; the unchanged ingest engine does the rest (``resize_sample``,
validation, ``encode_sample``, shard boundaries, manifest, resume, lock). So a copy holds what
``mtl-data ingest SOURCE RAW --max-side N`` gives, sample for sample:

* every label, ``meta.json`` and manifest row is byte-identical to that ingest's, because the
  master stores labels losslessly and ``decode_sample`` gives back the sample ``convert`` made;
* the image too when the master is PNG (lossless). A JPEG master gives the copy's image one
  more JPEG generation: not byte-identical, within the tolerance docs/conventions.md states.
* previous frames (``prevK`` members of a master ingested with ``--prev-frames``) are decoded
  with the sample and resized and encoded exactly like its image.

Samples are read in the master's (split, shard, position) order, which is the raw frames'
order; frames the master rejected are absent. The sample members are only read through
``shards.codec.decode_sample`` and written through ``encode_sample``, so a master of any schema
version the codec reads gives a copy of the current one (that is also how a master is
upgraded). Not registered as an ingest dataset: it is the ``reshard`` command.

Native layout (a source folder written by ``mtl-data ingest`` or ``mtl-data reshard``)::

    <source>/
        manifest.parquet           its presence = complete; samples listed with shard and offset
        <split>-NNNNNN.tar ...     the shards the manifest points into
        classes.json               copied to the output as it is
        [ingest.json]              the defaults of --image-format, --jpeg-quality, --shard-size,
                                   and the --prev-frames it was ingested with
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from mtl_data.errors import InputError, LayoutError, MtlDataError
from mtl_data.ingest.engine import STATE_DIR, ShardSize
from mtl_data.ingest.registry import Converter, Frame
from mtl_data.schema.sample import Sample
from mtl_data.schema.validate import SPLITS
from mtl_data.shards.manifest import MANIFEST_NAME, check_manifest, no_manifest_error
from mtl_data.shards.reader import DECODE_ERRORS, TAR_ERRORS, decode_members, read_class_tables, rebuild_hint
from mtl_data.shards.tario import iter_tar_samples

#: what ``check_layout`` and the errors call the input
_WHAT = "a source folder written by `mtl-data ingest` (manifest.parquet, <split>-NNNNNN.tar, classes.json)"


@dataclass(frozen=True)
class ShardFrame(Frame):
    """One sample of the master: ``paths["shard"]`` holds it, its first tar header at ``offset``."""

    key: str = ""
    offset: int = 0


class ReshardConverter(Converter):
    """Reads one source folder of existing shards (the master) as if it were a raw dataset.

    Args:
        root: the master's source folder (``shards/kitti``).

    Raises:
        MtlDataError: ``root`` is not a complete source folder, or its ``ingest.json`` or
            ``classes.json`` is not readable (``check_layout`` says which and what to do).
    """

    def __init__(self, root: Path):
        super().__init__(root)
        self.check_layout()
        self.report = _read_report(self.root)
        fingerprint = self.report.get("fingerprint", {})
        self.name = _source_name(self.root)
        self.taxonomy = fingerprint.get("taxonomy", "unified")
        self.tables = read_class_tables(self.root)

    def check_layout(self) -> None:
        """A complete source folder: its manifest readable, no ingest running or unfinished there,
        and every shard that ``ingest.json`` recorded present with its recorded size."""
        root = self.root
        if not root.is_dir():
            raise LayoutError(f"{root}: not a folder (expected {_WHAT})")
        if (root / STATE_DIR).exists():
            raise LayoutError(
                f"{root}: an ingest is running or unfinished there ({STATE_DIR}/ exists); "
                f"let it finish, or re-run it to complete it, then reshard"
            )
        if not (root / MANIFEST_NAME).is_file():
            raise LayoutError(f"{root}: no {MANIFEST_NAME} (expected {_WHAT}; run `mtl-data ingest` first)")
        check_manifest(root / MANIFEST_NAME)
        report = _read_report(root)
        for name, size in (report.get("shard_bytes") or {}).items():
            path = root / name
            actual = path.stat().st_size if path.is_file() else None
            if actual != size:
                state = "is missing" if actual is None else f"has {actual:,} bytes, {size:,} when it was written"
                raise LayoutError(f"{path}: master shard {state}; {self.rebuild_hint(path.name)}")

    def frames(self) -> list[ShardFrame]:
        """The master's samples in (split, shard, position) order: the order they were ingested in."""
        table = pq.read_table(
            self.root / MANIFEST_NAME, columns=["key", "split", "id", "shard", "position", "offset"]
        ).to_pylist()
        table.sort(key=lambda r: (SPLITS.index(r["split"]), r["shard"], r["position"]))
        return [
            ShardFrame(
                r["split"],
                r["id"],
                {"shard": self.root / r["shard"].rpartition("/")[2]},
                key=r["key"],
                offset=r["offset"],
            )
            for r in table
        ]

    def convert(self, frame: ShardFrame) -> Sample:
        """The master's sample, decoded in full: the full-size image (strictly: corrupt data is an
        error) and dense labels. Raises InputError naming the shard, the key and what to do."""
        path = frame.paths["shard"]
        where = f"{frame.key} at byte {frame.offset}"
        try:
            key, members = next(iter_tar_samples(path, frame.offset), (None, {}))
        except FileNotFoundError:
            raise InputError(
                path, f"master shard missing (it holds {frame.key})", hint=self.rebuild_hint(path.name)
            ) from None
        except TAR_ERRORS as exc:
            raise InputError(
                path, f"truncated or corrupt master shard ({exc} reading {where})", hint=self.rebuild_hint(path.name)
            ) from None
        if key != frame.key:
            found = "nothing" if key is None else repr(key)
            raise InputError(
                path,
                f"byte {frame.offset} holds {found}, not {frame.key!r} as the master's manifest says",
                hint=self.rebuild_hint(path.name, overwrite=True),
            )
        try:
            return decode_members(key, members)
        except DECODE_ERRORS as exc:
            raise InputError(
                path, f"{where} does not decode ({exc})", hint=self.rebuild_hint(path.name, overwrite=True)
            ) from None

    no_previous_frames = None

    def add_previous_frames(self, frame: Frame, sample: Sample, count: int) -> Sample:
        """``sample`` as decoded: it already holds the master's previous frames (at most
        ``count``, the master's ``--prev-frames``)."""
        return sample

    def class_tables(self) -> dict[str, list[str]]:
        """The master's ``classes.json``."""
        return self.tables

    def options_dict(self) -> dict:
        """What the master was built from (its ``ingest.json`` fingerprint): the copy's provenance."""
        return {"master": self.report.get("fingerprint")}

    def recorded_options(self) -> dict:
        """``image_format``, ``jpeg_quality`` and ``shard_size`` (a ``ShardSize``) the master was
        ingested with: the copy's defaults (the engine's where ``ingest.json`` does not say); and
        its ``prev_frames``, which the copy carries (0 when not recorded: none)."""
        recorded = self.report.get("fingerprint", {}).get("options", {})
        size = recorded.get("shard_size") or {}
        return {
            "image_format": recorded.get("image_format", "jpg"),
            "jpeg_quality": recorded.get("jpeg_quality", 95),
            "shard_size": ShardSize(**size) if size else ShardSize(bytes=256 * 10**6),
            "prev_frames": recorded.get("prev_frames", 0),
        }

    def recorded_max_side(self) -> int | None:
        """The ``--max-side`` the master was built with (None: full size)."""
        return self.report.get("fingerprint", {}).get("options", {}).get("max_side")

    def rebuild_hint(self, shard_file: str, overwrite: bool = False) -> str:
        """What to do about a damaged master shard: rebuild it with the command that wrote it,
        then re-run this reshard (it resumes)."""
        report = _read_report(self.root, quiet=True)
        master_of = (report.get("fingerprint", {}).get("converter_options") or {}).get("master", False)
        if master_of is not False:  # the master is itself a reshard copy
            split = shard_file.split("-")[0]
            fix = f"--split {split} --overwrite" if overwrite else "(it finds missing and truncated shards)"
            max_side = report.get("fingerprint", {}).get("options", {}).get("max_side")
            command = f"mtl-data reshard {report.get('root', 'MASTER')} --max-side {max_side} --to {self.root.parent}"
            how = f"re-run the reshard that wrote it: `{command} {fix}`"
        else:
            how = rebuild_hint(self.root.parent, f"{self.root.name}/{shard_file}", overwrite)
        return f"the master is damaged: {how}; then re-run this reshard, which resumes"


def _read_report(root: Path, quiet: bool = False) -> dict:
    """The master's ``ingest.json``; {} when it has none (or, ``quiet``, when it is unreadable)."""
    path = Path(root) / "ingest.json"
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if quiet:
            return {}
        raise MtlDataError(
            f"{path}: not readable JSON ({exc}); re-run the ingest that wrote it with --overwrite"
        ) from None
    if not isinstance(report, dict):
        if quiet:
            return {}
        raise MtlDataError(f"{path}: not an ingest report (a JSON object); re-run the ingest that wrote it")
    return report


def _source_name(root: Path) -> str:
    """The one source of a master folder's manifest (the copy goes to ``OUT/<source>/``)."""
    names = pq.read_table(root / MANIFEST_NAME, columns=["source"])["source"].unique().to_pylist()
    if not names:
        raise MtlDataError(f"{root}: the master holds no samples (its manifest is empty); nothing to reshard")
    if len(names) != 1:
        raise MtlDataError(
            f"{root / MANIFEST_NAME}: expected the samples of one source, found {len(names)} "
            f"({', '.join(map(str, names)) or 'none'}); re-run the ingest with --overwrite"
        )
    return names[0]


def master_folders(shards: Path, sources: Sequence[str] = ()) -> list[Path]:
    """The source folders to reshard: ``shards`` itself when it is one, else each of a shards root
    (``shards/*/manifest.parquet``), only those named in ``sources`` when given.

    Raises:
        MtlDataError: ``shards`` is neither; or a source in ``sources`` is not there (listing those
            that are).
    """
    shards = Path(shards)
    if (shards / MANIFEST_NAME).exists():
        found = {shards.name: shards}
    else:
        found = {p.parent.name: p.parent for p in sorted(shards.glob(f"*/{MANIFEST_NAME}"))}
    if not found:
        raise no_manifest_error(shards)
    missing = [s for s in sources if s not in found]
    if missing:
        raise MtlDataError(f"{shards}: no source {missing[0]!r} there; choose from {', '.join(sorted(found))}")
    return [found[s] for s in dict.fromkeys(sources)] if sources else list(found.values())


def check_out_root(out_root: Path, shards: Path, masters: Sequence[Path], names: Sequence[str]) -> None:
    """Refuse an output that would write into the shards being read.

    Raises:
        MtlDataError: ``out_root`` is ``shards`` or inside it, or a copy's folder
            (``out_root/<name>``) is, holds or lies inside a master folder.
    """
    out = Path(out_root).resolve()
    src = Path(shards).resolve()
    advice = "write the copies to a folder outside the master (beside it)"
    if out == src or src in out.parents:
        raise MtlDataError(f"--to {out_root}: inside the shards being read ({shards}); {advice}")
    for master, name in zip(masters, names):
        master, target = Path(master).resolve(), out / name
        if target == master or master in target.parents or target in master.parents:
            raise MtlDataError(f"--to {out_root}: {target} would overlap the master {master}; {advice}")
