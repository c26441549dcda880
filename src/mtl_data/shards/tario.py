"""Reproducible tar shards: write members of a sample adjacently, read them back in order.

Tars are plain POSIX (pax) archives with fixed metadata (mtime, owner, mode), so the same members
always give the same bytes; any tar client, webdataset or the Hugging Face webdataset loader
reads them.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

from mtl_data.files import make_dirs, open_output, remove_quietly, writing

#: fixed member mtime (2010-01-01T00:00:00Z): reproducible, and not so old that tar warns.
SHARD_MTIME = 1262304000


class TarShardWriter:
    """Write one shard to ``tmp_path``; ``commit`` renames it to ``final_path`` when complete.

    Until ``commit``, readers globbing ``*.tar`` never see a partial shard. A write that fails
    (disk full, read-only folder) raises ``OutputError`` naming ``tmp_path``; the caller then
    calls ``abort``, which never raises, so the original error is the one reported.
    """

    def __init__(self, tmp_path: Path, final_path: Path):
        self.tmp_path = Path(tmp_path)
        self.final_path = Path(final_path)
        make_dirs(self.tmp_path.parent)
        with writing(self.tmp_path):
            self._file = open_output(self.tmp_path)
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)
        self.count = 0

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._tar.offset

    def add(self, key: str, members: list[tuple[str, bytes]]) -> tuple[int, int]:
        """Append the members of one sample; returns (position, byte offset of its first header)."""
        offset = self._tar.offset
        with writing(self.tmp_path):
            for ext, data in members:
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                info.mtime = SHARD_MTIME
                info.mode = 0o444
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                self._tar.addfile(info, io.BytesIO(data))
        self.count += 1
        return self.count - 1, offset

    def commit(self) -> None:
        """Finish the archive, flush it to disk and rename it to its final name."""
        with writing(self.tmp_path):
            self._tar.close()
            self._file.close()
            self.tmp_path.replace(self.final_path)

    def abort(self) -> None:
        """Close and delete the temporary file. Never raises: it runs while another error
        propagates (a full disk fails the end-of-archive blocks and the flush again), and
        that error is the one to report."""
        self._tar.closed = True  # no end-of-archive blocks: the file is deleted anyway
        with contextlib.suppress(OSError):
            self._file.close()  # closes the descriptor even when the final flush fails
        remove_quietly(self.tmp_path)


def split_member_name(name: str) -> tuple[str, str]:
    """``key.ext.more`` -> (``key``, ``ext.more``), cutting at the first dot as webdataset does."""
    key, _, ext = name.partition(".")
    return key, ext


def iter_tar_samples(path: Path, offset: int = 0) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {extension: bytes})`` for consecutive samples of a shard, in order.

    A direct reader of the headers this project's writer produces (ustar blocks, with pax
    ``x`` records for long or non-ASCII names): each member is one ``read`` of its size, no
    ``TarInfo`` objects and no buffered copies. ``tarfile``'s stream reader costs 1-1.6 ms per
    sample of KITTI / A2D2 shards, more than half the training loader's JPEG-decode floor;
    this costs ~0.1 ms (BENCHMARKS.md, "Loader"). Members that are not regular files are
    skipped; a damaged archive raises ``tarfile.ReadError`` as ``tarfile`` would.

    Args:
        path: the tar file.
        offset: start reading at this byte offset (a manifest ``offset``) instead of the start.

    Raises:
        tarfile.ReadError: a header that does not check, or the file ends inside a member.
    """
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        key, members = None, {}
        for name, data in _iter_members(f):
            k, ext = split_member_name(name)
            if key is not None and k != key:
                yield key, members
                members = {}
            if isinstance(data, tarfile.ReadError):
                raise data
            key = k
            members[ext] = data
        if key is not None:
            yield key, members


_BLOCK = 512
#: type flags of regular files (tarfile.REGULAR_TYPES); other members are skipped.
_FILE_TYPES = (b"0", b"\0", b"7")


def _read_exact(f, size: int) -> bytes:
    data = f.read(size)
    while len(data) < size:  # a raw file may return short reads; b"" is the end of the file
        more = f.read(size - len(data))
        if not more:
            raise tarfile.ReadError("unexpected end of data")
        data += more
    return data


def _octal(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256 (sizes of 8 GiB and more)
        return int.from_bytes(field[1:], "big") * (-1 if field[:1] == b"\xff" else 1)
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise tarfile.ReadError(f"invalid header field {field!r}") from None


def _pax_records(data: bytes) -> dict[str, str]:
    """``"%d %s=%s\\n"`` records of a pax extended header."""
    out, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _iter_members(f) -> Iterator[tuple[str, bytes | tarfile.ReadError]]:
    """(name, data) of each regular file member from the current position to the end; when the
    file ends inside a member's data, that member's (name, the ReadError) comes last, so that a
    reader still sees the header (as ``tarfile`` reports it) before the error."""
    pax: dict[str, str] = {}
    while True:
        block = f.read(_BLOCK)
        if len(block) < _BLOCK:
            if block.strip(b"\0"):  # a partial header; a clean end of file is fine too
                raise tarfile.ReadError("unexpected end of data")
            return
        if not block.strip(b"\0"):  # an end-of-archive block
            return
        if _octal(block[148:156]) != sum(block[:148]) + 256 + sum(block[156:]):
            raise tarfile.ReadError("bad checksum")
        kind, size = block[156:157], _octal(block[124:136])
        if kind in (b"x", b"g", b"L", b"K"):  # pax headers; GNU long names (never written here)
            data = _read_padded(f, size)
            if kind == b"x":  # the next member's
                pax = _pax_records(data)
            elif kind == b"L":
                pax = {**pax, "path": data.rstrip(b"\0").decode("utf-8", "surrogateescape")}
            continue
        size = int(pax.get("size", size))  # a pax size overrides the header's
        name = pax.get("path")
        if name is None:
            raw = block[:100].split(b"\0", 1)[0]
            if block[257:262] == b"ustar" and block[345]:
                raw = block[345:500].split(b"\0", 1)[0] + b"/" + raw
            name = raw.decode("utf-8", "surrogateescape")
        pax = {}
        try:
            data = _read_padded(f, size)
        except tarfile.ReadError as exc:
            if kind in _FILE_TYPES:
                yield name, exc
            raise
        if kind in _FILE_TYPES:
            yield name, data


def _read_padded(f, size: int) -> bytes:
    """A member's ``size`` bytes, and the padding to the next 512-byte block."""
    data = _read_exact(f, size)
    if size % _BLOCK:
        _read_exact(f, _BLOCK - size % _BLOCK)
    return data
