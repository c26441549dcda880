"""One shared check of a raw dataset's folder tree, so every converter fails the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mtl_data.errors import InputError, LayoutError, printable
from mtl_data.ingest.registry import Frame


@dataclass(frozen=True)
class SplitLayout:
    """Folders one native split must (and may) contain, relative to the split folder."""

    required: Sequence[str]
    optional: Sequence[str] = ()


def check_split_layout(root: Path, dataset: str, splits: Mapping[str, SplitLayout]) -> list[str]:
    """Check ``root`` against a layout of split folders; return the native splits present.

    At least one split folder must exist, and every split folder that exists must have all its
    required sub-folders.

    Raises:
        LayoutError: naming the missing path and the expected tree.
    """
    root = Path(root)
    tree = "; ".join(
        f"{name}/{{{','.join([*lay.required, *(f'[{o}]' for o in lay.optional)])}}}" for name, lay in splits.items()
    )
    if not root.is_dir():
        raise LayoutError(f"{root}: not a folder (expected the {dataset} root containing {tree})")
    present = [name for name in splits if (root / name).is_dir()]
    if not present:
        raise LayoutError(
            f"{root}: no {dataset} split folder found (expected {tree}; [..] = optional){_nested_hint(root, splits)}"
        )
    for name in present:
        for sub in splits[name].required:
            if not (root / name / sub).is_dir():
                raise LayoutError(f"{root / name / sub}: missing folder (expected {tree}; [..] = optional)")
    return present


def _nested_hint(root: Path, splits: Mapping[str, SplitLayout]) -> str:
    """Suggest a sub-folder that holds the splits (users often pass the parent)."""
    for child in sorted(p for p in root.glob("*/") if p.is_dir()):
        for grandchild in [child, *sorted(p for p in child.glob("*/") if p.is_dir())]:
            if any((grandchild / name).is_dir() for name in splits):
                return f"; did you mean {grandchild}?"
    return ""


def list_stems(folder: Path, suffix: str) -> dict[str, Path]:
    """``{stem: path}`` of the files ending in ``suffix`` directly inside ``folder`` (sorted)."""
    if not folder.is_dir():
        return {}
    return {p.name[: -len(suffix)]: p for p in sorted(folder.iterdir()) if p.name.endswith(suffix) and p.is_file()}


def check_utf8_names(frame: Frame) -> None:
    """Refuse a frame whose id or file names are not valid UTF-8.

    Such a name (``000002\\xe9.png``, written by a tool using Latin-1) opens fine, but its id
    cannot go into the manifest, whose strings are UTF-8: the frame is rejected before it is
    converted, naming the path with the bad bytes escaped.

    Raises:
        InputError: naming the first such path (or the frame's first path for a bad id).
    """
    for path in frame.paths.values():
        if printable(path) != str(path):
            raise InputError(
                path,
                "file name is not valid UTF-8 (the bytes shown as \\x..)",
                hint="rename it to UTF-8, e.g. with `convmv -f latin1 -t utf8`",
            )
    if printable(frame.id) != frame.id:
        raise InputError(
            frame.primary_path,
            f"frame id '{printable(frame.id)}' is not valid UTF-8",
            hint="rename the files (or fix the index) to UTF-8 names",
        )
