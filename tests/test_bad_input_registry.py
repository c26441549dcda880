"""Every kind of file each registered converter reads, broken in each way a download or a disk
breaks files, is one clear ``error:`` line (or a reject under ``--on-error skip``), never a
traceback.

Parametrized over the converter registry, on each source's synthetic native layout
(``mtl-data synth``); the kinds of file are found by walking that tree, so a new converter is
covered the moment it is registered. A kind is a role of ``Frame.paths`` with its extension
(``image.png``, ``label.txt``), or, for a file that no frame lists (``cams_lidars.json``, the
``gtFine_color.png`` files), ``unlisted:<top folder>/*<extension>``. One representative file
per kind is broken (a file of one frame when there is one, the second frame of its split):

* ``zero_bytes``, ``truncated`` (the first ~40 % of the bytes), ``truncated_100`` (the first
  100 bytes of a binary file: a container's directory or an image's header survives), and
  ``folder`` (a folder in place of the file);
* ``json_fields``: every JSON (or JSON-lines) file, one field at a time given a value of the
  wrong type (a string, a list of the wrong length, null, a nested object);
* previous frames (``Converter.previous_frame_paths``) are the kind ``prev<extension>``, broken
  in runs with ``--prev-frames 3``;
* ``non_utf8_name``: every file of one frame renamed to a name that is not valid UTF-8 (the
  JSON files that name them updated to match).

Each case runs ``mtl-data ingest`` in-process, where any exception other than the one-line
error path fails the test. Under ``--on-error fail`` the run exits non-zero with exactly one
``error:`` line naming the bad file and leaves no ``*.part`` file nor manifest; under
``--on-error skip`` it exits 0 with a reject naming the file (a file that several frames share
may fail the whole run with that one line instead). A run that succeeds on broken input must
leave shards byte-identical to those of the intact data (the converter did not read what was
broken), or be listed in ``ACCEPTED`` with the reason. One test per source and corruption
collects every problem of every kind, so one run shows them all.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CliResult, read_manifest, read_rejects

from mtl_data.cli.main import main
from mtl_data.ingest import CONVERTERS
from mtl_data.schema.sample import MAX_PREV_FRAMES
from mtl_data.synth import SYNTHESIZERS

NAMES = sorted(CONVERTERS)
FILE_CORRUPTIONS = ("zero_bytes", "truncated", "truncated_100", "folder")
CORRUPTIONS = (*FILE_CORRUPTIONS, "json_fields", "non_utf8_name")
TEXT_SUFFIXES = (".txt", ".json", ".csv")
#: JSON field mutations per JSON kind, spread evenly over its fields (keeps the suite fast).
MAX_MUTATIONS = 6
BAD_BYTE = "\udce9"  # os.fsencode -> b"\xe9": a Latin-1 "é", not valid UTF-8

#: Kinds of file the converter does not read: breaking one must leave the shards unchanged.
IGNORED = {
    ("a2d2", "unlisted:camera_lidar_semantic/*#.png"): "side-camera frames: only --cameras (default "
    "front_center) are converted",
    ("a2d2", "unlisted:camera_lidar_semantic/*#.json"): "side-camera frames: only --cameras are converted",
    ("a2d2", "unlisted:camera_lidar_semantic/*#.npz"): "side-camera frames: only --cameras are converted",
    ("a2d2", "unlisted:camera_lidar_semantic_bboxes/*#.png"): "the bboxes package repeats the semantic "
    "package's camera and label images; frames read them from camera_lidar_semantic/",
    ("a2d2", "unlisted:camera_lidar_semantic_bboxes/*#.npz"): "the bboxes package repeats the semantic "
    "package's lidar scans; frames read them from camera_lidar_semantic/",
    ("a2d2", "unlisted:camera_lidar_semantic_bboxes/*#.json"): "the bboxes package repeats the semantic "
    "package's camera json; frames read it from camera_lidar_semantic/",
    ("cityscapes", "unlisted:gtFine/*color.png"): "only *_gtFine_labelIds.png is read; the colour "
    "image is drawn from it",
    ("cityscapes", "unlisted:gtFine/*instanceIds.png"): "only *_gtFine_labelIds.png is read (no instance task)",
    ("cityscapes", "unlisted:leftImg8bit_sequence/*leftImg#bit.png"): "the sequence package repeats the "
    "labelled frame itself, which is read from leftImg8bit/ (its previous frames are the kind prev.png)",
    ("gtsrb", "unlisted:GTSRB/*test.test.csv"): "GT-final_test.test.csv lists the test images without "
    "ClassId; the labelled GT-final_test.csv beside GTSRB/ replaces it",
    ("tusimple", "unlisted:test_set/*#.jpg"): "only the labelled 20th frame of a clip is converted",
    ("tusimple", "unlisted:train_set/*#.jpg"): "only the labelled 20th frame of a clip is converted",
}

#: Broken input a converter accepts on purpose: (source, kind, corruption) -> why.
ACCEPTED = {
    ("kitti", "label.txt", "zero_bytes"): "an empty label_2 file is a frame without objects",
}


# ---- the raw data -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pristine_root(tmp_path_factory) -> Callable[[str], Path]:
    """``pristine_root(name)``: the synthetic raw dataset of ``name`` (read-only).

    Written once per session: under xdist the workers share it, behind a file lock.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above each worker's own
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            root = base / f"bad_input_synth_{name}"
            with open(base / f"bad_input_synth_{name}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (root / ".done").exists():
                    shutil.rmtree(root, ignore_errors=True)
                    SYNTHESIZERS[name](root / "raw", seed=0)
                    (root / ".done").touch()
            cache[name] = root / "raw"
        return cache[name]

    return get


def linked_copy(src: Path, dst: Path) -> Path:
    """A copy of ``src`` made of hard links (fast); corruptions replace files, never write into them."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` as a new file at ``path`` (a hard link to the pristine file is dropped, not written)."""
    path.unlink()
    path.write_bytes(data)


# ---- kinds of file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of file of a raw dataset, and the representative that gets broken.

    Attributes:
        name: ``<role><suffix>`` or ``unlisted:<top folder>/*<suffix>``.
        rel: the representative file, relative to the raw root.
        users: ids of the frames that list it (none for an unlisted file).
        args: ingest options that convert the frames reading it, and few others.
    """

    name: str
    rel: str
    users: tuple[str, ...]
    args: tuple[str, ...]

    @property
    def one_frame(self) -> bool:
        return len(self.users) == 1


def discover_kinds(name: str, root: Path) -> list[Kind]:
    """Every kind of file of the raw dataset at ``root``, with its representative."""
    converter = CONVERTERS[name](root)
    frames = converter.frames()
    position = {}
    for split in {f.split for f in frames}:
        for i, f in enumerate(x for x in frames if x.split == split):
            position[(f.split, f.id)] = i
    users = defaultdict(list)
    kind_of: dict[Path, str] = {}
    for f in frames:
        for role, path in f.paths.items():
            if path.is_file():
                users[path].append(f)
                kind_of.setdefault(path, f"{role}{path.suffix}")
        # previous frames (read with --prev-frames): kind "prev<suffix>", its runs ask for them
        for path in converter.previous_frame_paths(f, MAX_PREV_FRAMES):
            if path.is_file():
                users[path].append(f)
                kind_of.setdefault(path, f"prev{path.suffix}")
    for path in sorted(root.rglob("*")):
        if path.is_file() and path not in kind_of:
            rel = path.relative_to(root)
            top = rel.parts[0] if len(rel.parts) > 1 else "."
            tail = re.sub(r"\d+", "#", path.name.rsplit("_", 1)[-1])  # 20180807145028_..._000008114.png -> #.png
            kind_of[path] = f"unlisted:{top}/*{tail}"

    by_kind = defaultdict(list)
    for path, kind in kind_of.items():
        by_kind[kind].append(path)
    kinds = []
    for kind, paths in sorted(by_kind.items()):

        def rank(p: Path) -> tuple:
            fs = users[p]
            index = position[(fs[0].split, fs[0].id)] if fs else 0
            return (not fs, len(fs) != 1, len(fs), index != 1, index, str(p))

        path = min(paths, key=rank)
        fs = users[path]
        splits = sorted({f.split for f in fs})
        if not fs:  # a file no frame lists: it acts on every frame, or on none
            args = ("--limit", "3")
        elif len(fs) == 1:  # its frame and the next: one good frame on each side of the bad one
            args = ("--split", splits[0], "--limit", str(position[(fs[0].split, fs[0].id)] + 2))
        else:  # shared (an index of frames): the whole split, as its corruption may shift frames
            args = ("--split", splits[0]) if len(splits) == 1 else ()
        if kind.startswith("prev"):
            args = (*args, "--prev-frames", str(MAX_PREV_FRAMES))
        kinds.append(Kind(kind, str(path.relative_to(root)), tuple(f.id for f in fs), args))
    return kinds


# ---- corruptions ------------------------------------------------------------------------------


def corrupt_file(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "zero_bytes":
        _replace_file(path, b"")
    elif how == "truncated":
        # ~40 %, odd: never a whole number of records of a fixed-size binary format (KITTI's
        # 16-byte velodyne points), which would be a shorter valid file rather than a broken one
        _replace_file(path, data[: (len(data) * 2 // 5) | 1])
    elif how == "truncated_100":
        _replace_file(path, data[:100])
    elif how == "folder":
        path.unlink()
        path.mkdir()
        (path / "stray.txt").write_text("a folder where a file was expected\n")
    else:
        raise ValueError(how)


def _json_fields(doc, at: tuple = ()):
    """(path, value) of every field of a JSON document, depth first; only the first item of a list."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*at, key), value
            yield from _json_fields(value, (*at, key))
    elif isinstance(doc, list) and doc:
        yield (*at, 0), doc[0]
        yield from _json_fields(doc[0], (*at, 0))


def _wrong_values(value) -> list[tuple[str, object]]:
    """Values of the wrong type (or shape) for a field holding ``value``."""
    nested = ("object", {"unexpected": [1, 2]})
    if value is None or isinstance(value, bool):
        return [("string", "oops"), nested]
    if isinstance(value, (int, float)):
        return [("string", "oops"), ("null", None), nested]
    if isinstance(value, str):
        return [("number", 12.5), ("null", None), nested]
    if isinstance(value, list):
        wrong_length = value[:-1] if len(value) > 1 else [*value, *value[:1]] or [0]
        return [("string", "oops"), ("wrong_length", wrong_length), ("null", None)]
    return [("null", None), ("list", []), ("string", "oops")]  # an object


def _set(doc, at: tuple, value):
    if not at:
        return value
    doc[at[0]] = _set(doc[at[0]], at[1:], value)
    return doc


def json_mutations(data: bytes) -> list[tuple[str, bytes]]:
    """Up to ``MAX_MUTATIONS`` (label, new file bytes): one field of the document (or of the first
    line of a JSON-lines file) set to a value of the wrong type, spread evenly over the fields."""
    text = data.decode()
    try:
        doc, rest = json.loads(text), None
    except ValueError:  # JSON lines: mutate the first line
        first, _, rest = text.partition("\n")
        doc = json.loads(first)
    cases = [(at, label, value) for at, old in _json_fields(doc) for label, value in _wrong_values(old)]
    if len(cases) > MAX_MUTATIONS:
        step = (len(cases) - 1) / (MAX_MUTATIONS - 1)
        cases = [cases[round(i * step)] for i in range(MAX_MUTATIONS)]
    out = []
    for at, label, value in cases:
        new = _set(json.loads(json.dumps(doc)), at, value)
        body = json.dumps(new) if rest is None else json.dumps(new) + "\n" + rest
        out.append((f"{'.'.join(map(str, at))}={label}", body.encode()))
    return out


def _bad_name(name: str, frame_id: str) -> str:
    """``name`` with ``BAD_BYTE`` after the frame id in it, or before its extension."""
    if frame_id and frame_id in name:
        return name.replace(frame_id, frame_id + BAD_BYTE, 1)
    stem, dot, ext = name.partition(".")
    return f"{stem}{BAD_BYTE}{dot}{ext}"


def rename_frame_non_utf8(root: Path, name: str, kinds: list[Kind]) -> tuple[list[Path], list[Path], str]:
    """Rename every file of one frame to a name that is not valid UTF-8, and update the JSON files
    that name them. Returns (the old paths, the new paths, the output split)."""
    frames = CONVERTERS[name](root).frames()
    users = defaultdict(list)
    for f in frames:
        for path in f.paths.values():
            users[path].append(f)
    frame = next(f for k in kinds if k.one_frame for f in frames if f.id == k.users[0])
    old = [p for p in frame.paths.values() if p.is_file() and len(users[p]) == 1]
    new = [p.with_name(_bad_name(p.name, frame.id.rsplit("/", 1)[-1])) for p in old]
    for a, b in zip(old, new):
        os.rename(a, os.fsencode(b))
    for path in {p for p in frame.paths.values() if p.suffix == ".json" and p.is_file()}:
        text = path.read_text()
        for a, b in zip(old, new):
            # the longest trailing part of the old path that the file holds as a JSON string
            for k in range(len(a.parts), 0, -1):
                quoted = json.dumps("/".join(a.parts[-k:]))
                if quoted in text:
                    text = text.replace(quoted, json.dumps("/".join(b.parts[-k:])))
                    break
        _replace_file(path, text.encode())
    return old, new, frame.split


# ---- running and judging ----------------------------------------------------------------------


@pytest.fixture
def cli_fd(capfd) -> Callable[..., CliResult]:
    """``mtl-data ARGS`` in-process, with what C libraries print on file descriptor 2 (libpng,
    libjpeg, OpenCV's log) in its stderr, as a terminal shows it. Exceptions propagate."""

    def run(*args) -> CliResult:
        capfd.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capfd.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def _ingest(cli, name: str, root: Path, out: Path, args: tuple[str, ...], on_error: str) -> CliResult | str:
    """``mtl-data ingest`` in-process; an exception that escapes is returned as its traceback text."""
    try:
        return cli("ingest", name, root, "--to", out, "--workers", 1, "--on-error", on_error, *args)
    except Exception:  # anything but the one-line error path is a bug: report it
        return "exception escaped:\n" + traceback.format_exc(limit=-4)


def _shards(out: Path, name: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / name).glob("*.tar"))}


def _spellings(path: Path) -> set[str]:
    """How an error line may name ``path`` (a name that is not UTF-8 has no exact spelling)."""
    text = str(path)
    raw = os.fsencode(path)
    return {
        raw.decode("utf-8", "replace"),
        raw.decode("utf-8", "backslashreplace"),
        text.encode("utf-8", "backslashreplace").decode(),
        repr(raw)[2:-1],
    }


@dataclass
class Judge:
    """Runs one broken raw root under both modes and collects what is wrong with the outcomes."""

    cli: Callable
    name: str
    tmp: Path
    pristine: Callable[[tuple[str, ...]], dict[str, bytes]]
    problems: list[str]

    def check(
        self,
        case: str,
        root: Path,
        args: tuple[str, ...],
        names: set[str],
        one_frame: bool,
        success: str = "never",
        nothing_written: bool = False,
    ) -> None:
        """``names``: the spellings, any of which the error line and the reject must hold.
        ``success``: when a run without error is right: ``never``, ``accepted`` (always) or
        ``unchanged`` (when the shards are those of the intact data)."""
        out = self.tmp / f"out_{len(self.problems)}_{abs(hash(case))}"
        shutil.rmtree(out, ignore_errors=True)

        def problem(text: str) -> None:  # escaped: a report must be UTF-8 (xdist sends it)
            self.problems.append(f"[{case}] {text}".encode("utf-8", "backslashreplace").decode())

        # ---- --on-error fail
        result = _ingest(self.cli, self.name, root, out / "fail", args, "fail")
        if isinstance(result, str):
            return problem(f"fail mode: {result}")
        if result.code == 0:
            if success == "never":
                problem("broken input converted without an error")
            elif success == "unchanged" and _shards(out / "fail", self.name) != self.pristine(args):
                problem("broken input converted without an error, and the shards differ from the intact data's")
            return None  # accepted, or not read at all: skip mode would do the same
        error = [ln for ln in result.error_lines if ln.strip()]
        if "Traceback" in result.err or len(error) != 1 or not error[0].startswith("error: "):
            return problem(f"fail mode: expected one 'error:' line, got stderr {result.err!r}")
        if not any(n in error[0] for n in names):
            problem(f"fail mode: the error line does not name the bad file: {error[0]!r}")
        if list((out / "fail").rglob("*.part")) or (out / "fail" / self.name / "manifest.parquet").exists():
            problem("fail mode: a *.part file or a manifest was left behind")
        if nothing_written and list((out / "fail").rglob("*.tar")):
            problem("fail mode: shards were written before the error")

        # ---- --on-error skip
        result = _ingest(self.cli, self.name, root, out / "skip", args, "skip")
        if isinstance(result, str):
            return problem(f"skip mode: {result}")
        if result.code != 0:
            error = result.error_lines
            if one_frame:
                problem(f"skip mode: a bad file of one frame failed the whole run: {result.err.strip()!r}")
            elif "Traceback" in result.err or len(error) != 1 or not any(n in error[0] for n in names):
                problem(f"skip mode: expected one 'error:' line naming the bad file, got {result.err!r}")
            return None
        try:
            rejects = read_rejects(out / "skip", self.name)
            read_manifest(out / "skip", self.name)
        except Exception as exc:
            return problem(f"skip mode: output unreadable: {type(exc).__name__}: {exc}")
        if not any(n in r["path"] or n in r["error"] for r in rejects for n in names):
            problem(f"skip mode: no reject names the bad file; rejects: {rejects}")
        if list((out / "skip").rglob("*.part")) or (out / "skip" / self.name / ".ingest").exists():
            problem("skip mode: a *.part file or the .ingest state was left behind")
        return None


@pytest.fixture
def judge(cli_fd, pristine_root, tmp_path) -> Callable[[str], Judge]:
    """``judge(name)``: a ``Judge`` of ``name``'s converter, comparing with its intact data."""
    outputs: dict[tuple, dict[str, bytes]] = {}

    def make(name: str) -> Judge:
        def pristine(args: tuple[str, ...]) -> dict[str, bytes]:
            if args not in outputs:
                out = tmp_path / f"pristine_{len(outputs)}"
                result = cli_fd("ingest", name, pristine_root(name), "--to", out, "--workers", 1, *args)
                assert result.code == 0, result.err
                outputs[args] = _shards(out, name)
            return outputs[args]

        return Judge(cli_fd, name, tmp_path, pristine, [])

    return make


def _cases() -> list:
    params = []
    for name in NAMES:
        for how in CORRUPTIONS:
            params.append(pytest.param(name, how, id=f"{name}-{how}"))
    return params


# ---- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("name, how", _cases())
def test_broken_file_is_one_error_line_or_a_reject_never_a_traceback(name, how, pristine_root, judge, tmp_path):
    pristine = pristine_root(name)
    kinds = discover_kinds(name, pristine)
    assert kinds, f"{name}: the synthetic dataset has no files"
    jd = judge(name)
    count = 0

    if how == "non_utf8_name":
        root = linked_copy(pristine, tmp_path / "raw")
        old, new, split = rename_frame_non_utf8(root, name, kinds)
        names = set().union(*(_spellings(p) for p in new), *({str(p)} for p in old))
        jd.check(how, root, ("--split", split), names, one_frame=True, nothing_written=True)
        assert not jd.problems, "\n".join(jd.problems)
        return

    for kind in kinds:
        if how == "truncated_100" and kind.rel.endswith(TEXT_SUFFIXES):
            continue
        if (name, kind.name) in IGNORED and how != "zero_bytes":
            continue  # one corruption shows that the file is not read
        if how == "json_fields":
            if not kind.rel.endswith(".json"):
                continue
            variants = json_mutations((pristine / kind.rel).read_bytes())
        else:
            variants = [(how, None)]
        for label, data in variants:
            count += 1
            root = linked_copy(pristine, tmp_path / f"raw_{count}")
            bad = root / kind.rel
            if data is None:
                corrupt_file(bad, how)
            else:
                _replace_file(bad, data)
            if (name, kind.name, how) in ACCEPTED:
                success = "accepted"
            elif how == "json_fields" or (name, kind.name) in IGNORED:
                success = "unchanged"  # a field (or a file) the converter does not read
            else:
                success = "never"
            jd.check(f"{kind.name} {kind.rel} {label}", root, kind.args, {str(bad)}, kind.one_frame, success)
            shutil.rmtree(root)
    if how == "json_fields" and count == 0:
        pytest.skip(f"{name} reads no JSON")
    assert count, f"{name}: no file to break with {how}"
    assert not jd.problems, "\n".join(jd.problems)
