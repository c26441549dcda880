"""One shared check of a raw dataset's folder tree, so every converter fails the same way.

Every converter's ``check_layout`` raises its `LayoutError` through these helpers, in three
forms, each naming the path and the expected tree:

* ``<root>: not a folder (expected the <dataset> root: <tree>)`` (`check_root`);
* ``<root>: no <what> found (expected <tree>); did you mean <folder>?`` when nothing of the
  dataset is where it was looked for (`nothing_found`; the hint names a folder next to it that
  looks like the root: `nested_root_hint`);
* ``<path>: missing folder (expected <tree>)`` for a required sub-folder, or with what needs it
  (`missing_folder`).

`check_split_layout` checks a tree of split folders with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    tree += "; [..] = optional"
    check_root(root, dataset, tree)
    present = [name for name in splits if (root / name).is_dir()]
    if not present:
        raise nothing_found(root, f"{dataset} split folder", tree, lambda p: any((p / n).is_dir() for n in splits))
    for name in present:
        for sub in splits[name].required:
            if not (root / name / sub).is_dir():
                raise missing_folder(root / name / sub, f"expected {tree}")
    return present


def check_root(root: Path, dataset: str, tree: str) -> None:
    """Raise `LayoutError` unless ``root`` is a folder.

    Args:
        dataset: the dataset's name as users know it (``KITTI object``, ``GTSRB``).
        tree: the expected tree, in one line.
    """
    if not Path(root).is_dir():
        raise LayoutError(f"{root}: not a folder (expected the {dataset} root: {tree})")


def missing_folder(path: Path, why: str) -> LayoutError:
    """The error for a required folder that is not there (``why``: the expected tree, or what needs it)."""
    return LayoutError(f"{path}: missing folder ({why})")


def nothing_found(root: Path, what: str, tree: str, looks_like_root: Callable[[Path], bool]) -> LayoutError:
    """The error for a root holding nothing of the dataset, with `nested_root_hint`.

    Args:
        what: what was looked for (``GTSRB layout``, ``leftImg8bit folder``).
        looks_like_root: whether a folder holds the dataset (what the hint looks for).
    """
    return LayoutError(f"{root}: no {what} found (expected {tree}){nested_root_hint(root, looks_like_root)}")


def nested_root_hint(root: Path, looks_like_root: Callable[[Path], bool]) -> str:
    """``"; did you mean <folder>?"`` for the nearest folder that looks like the dataset root, else "".

    Users pass a folder inside the root (the parent is suggested) or the folder the download was
    unpacked in (a child or grandchild is suggested, the first in sorted order).
    """
    root = Path(root)
    if root.parent != root and looks_like_root(root.parent):
        return f"; did you mean {root.parent}?"
    for child in _sub_folders(root):
        for candidate in [child, *_sub_folders(child)]:
            if looks_like_root(candidate):
                return f"; did you mean {candidate}?"
    return ""


def _sub_folders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:  # unreadable: nothing to suggest
        return []


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
