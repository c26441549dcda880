"""The converter interface and the registry the CLI builds its choices from.

Adding a dataset touches one file: a module in ``mtl_data.ingest`` that subclasses
``Converter`` and decorates it with ``@register_converter``. The CLI grows a
``mtl-data ingest <name>`` command with the common options plus the fields of the converter's
``Options`` dataclass, and the contract tests run over it.

The registry reads as the training side's (timm style): ``register_converter`` /
``create_converter(name, root)`` / ``list_converters()``, with ``converter_class(name)``; the
``CONVERTERS`` table behind them stays public.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mtl_data.errors import InputError, MtlDataError
from mtl_data.ingest.readers import read_image
from mtl_data.schema.sample import Sample


@dataclass(frozen=True)
class Frame:
    """One native frame to convert: cheap to list, to pickle and to send to a worker.

    Attributes:
        split: output split (``train``, ``val``, ``test``).
        id: the source's frame id (unique within the split).
        paths: the native files of the frame, by role (``image``, ``label`` ...); a role may
            point at a file that does not exist, which ``convert`` reports.
    """

    split: str
    id: str
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def primary_path(self) -> Path:
        """The file named in errors about the frame as a whole."""
        return next(iter(self.paths.values()))


@dataclass(frozen=True)
class NoOptions:
    """A converter without options of its own."""


class Converter:
    """Reads one raw dataset layout and turns each native frame into a ``Sample``.

    Subclasses set ``name`` and ``Options``, document their native layout as a tree in the
    class docstring, and implement ``check_layout``, ``frames`` and ``convert``. An instance
    is pickled to worker processes, so it holds only plain data.

    Args:
        root: the raw dataset folder.
        options: an instance of ``Options`` (the converter's own settings).
        taxonomy: ``unified``, ``native`` or the path of a taxonomy JSON file.
    """

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    #: frames sent to a worker process in one task. 1 suits frames that take milliseconds;
    #: sources of tiny samples (GTSRB crops, ~0.2 ms each) batch them, or the pool's per-task
    #: cost exceeds the work and more workers run slower.
    frames_per_task: ClassVar[int] = 1
    #: why this source's samples never have previous frames (``--prev-frames``), said once per
    #: run; None for a source whose ``previous_frame_paths`` finds them.
    no_previous_frames: ClassVar[str | None] = "this source has no previous frames"

    def __init__(self, root: Path, options: Any = None, taxonomy: str = "unified"):
        self.root = Path(root)
        self.options = options if options is not None else self.Options()
        self.taxonomy = taxonomy
        check_option_ranges(self.options)

    def check_layout(self) -> None:
        """Raise ``LayoutError`` naming the first missing folder, with what was expected."""
        raise NotImplementedError

    def frames(self) -> list[Frame]:
        """Every frame of every split present, in a deterministic order."""
        raise NotImplementedError

    def convert(self, frame: Frame) -> Sample:
        """Convert one frame; raise ``InputError`` naming the file (and line) on bad input."""
        raise NotImplementedError

    def class_tables(self) -> dict[str, list[str]]:
        """Class names of each task's output ids, written next to the shards as classes.json."""
        return {}

    # ---- previous frames (--prev-frames) -------------------------------------------------------

    def previous_frame_paths(self, frame: Frame, count: int) -> list[Path]:
        """Where the frames t-1 .. t-``count`` before ``frame`` would be, t-1 first (fewer when
        the sequence starts earlier). They need not exist: a missing one is no previous frame."""
        return []

    def read_previous_frame(self, frame: Frame, path: Path, k: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of the previous frame t-``k`` at ``path``, through the same image
        path as ``frame``'s own image (a source that undistorts its images undistorts these too).

        Raises:
            InputError: naming ``path`` when it does not decode.
        """
        return read_image(
            path,
            f"previous frame t-{k} missing",
            f"previous frame t-{k} does not decode as an image (truncated or not an image?)",
        )

    def add_previous_frames(self, frame: Frame, sample: Sample, count: int) -> Sample:
        """``sample`` (converted from ``frame``) with up to ``count`` previous frames in ``prev``.

        The frames t-1, t-2, ... are taken while they exist: the first missing one ends the run
        (t-2 is never used without t-1), so a sample holds K <= ``count`` consecutive frames.

        Raises:
            InputError: naming the file when a previous frame exists but does not decode, or has
                another size than the sample's image (a frame of another camera or sequence).
        """
        prev = []
        for k, path in enumerate(self.previous_frame_paths(frame, count)[:count], start=1):
            if not path.exists():  # a folder in its place is an error, from read_previous_frame
                break
            image = self.read_previous_frame(frame, path, k)
            if image.shape != sample.image.shape:
                h, w = sample.image.shape[:2]
                raise InputError(
                    path,
                    f"previous frame t-{k} is {image.shape[1]}x{image.shape[0]}, but its labelled frame "
                    f"{frame.paths.get('image', frame.primary_path).name} is {w}x{h}; previous frames must be "
                    "the same camera's",
                )
            prev.append(image)
        return dataclasses.replace(sample, prev=tuple(prev))

    def options_dict(self) -> dict:
        """The converter's options as plain data (for the fingerprint and ingest.json)."""
        return dataclasses.asdict(self.options)


def check_option_ranges(options: Any) -> None:
    """Enforce the ``range`` metadata, ``(low, high)`` with high excluded, of option fields.

    The CLI builds its range-checked options from the same metadata; this covers library use.

    Raises:
        ValueError: naming the option as typed on the command line.
    """
    for f in dataclasses.fields(options):
        if "range" in f.metadata:
            low, high = f.metadata["range"]
            value = getattr(options, f.name)
            if not low <= value < high:
                raise ValueError(f"--{f.name.replace('_', '-')} must be in [{low}, {high}), got {value}")


CONVERTERS: dict[str, type[Converter]] = {}


def register_converter(cls: type[Converter]) -> type[Converter]:
    """Class decorator: make ``cls`` available as ``mtl-data ingest <cls.name>``."""
    if cls.name in CONVERTERS:
        raise ValueError(f"converter {cls.name!r} registered twice")
    CONVERTERS[cls.name] = cls
    return cls


def list_converters() -> list[str]:
    """The registered datasets, sorted by name."""
    return sorted(CONVERTERS)


def converter_class(name: str) -> type[Converter]:
    """The registered ``Converter`` subclass of ``name``; MtlDataError listing the datasets otherwise."""
    try:
        return CONVERTERS[name]
    except KeyError:
        raise MtlDataError(f"unknown dataset {name!r}; choose from {', '.join(list_converters())}") from None


def create_converter(name: str, root: Path, options: Any = None, taxonomy: str = "unified") -> Converter:
    """The converter of dataset ``name`` over the raw folder ``root`` (``options``: its ``Options``)."""
    return converter_class(name)(root, options, taxonomy)
