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

    Args:
        path: the tar file.
        offset: start reading at this byte offset (a manifest ``offset``) instead of the start.
    """
    with open(path, "rb") as f:
        f.seek(offset)
        with tarfile.open(fileobj=f, mode="r|") as tar:
            key, members = None, {}
            for info in tar:
                if not info.isfile():
                    continue
                k, ext = split_member_name(info.name)
                if key is not None and k != key:
                    yield key, members
                    members = {}
                key = k
                members[ext] = tar.extractfile(info).read()
            if key is not None:
                yield key, members
