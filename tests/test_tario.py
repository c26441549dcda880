"""The shard reader (``shards.tario.iter_tar_samples``) reads tar headers itself: it must give
what ``tarfile`` gives on every archive shape a shard can have, and fail where ``tarfile`` fails."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from mtl_data.shards.tario import TarShardWriter, iter_tar_samples, split_member_name


def by_tarfile(path: Path, offset: int = 0) -> list[tuple[str, dict[str, bytes]]]:
    """The reference: ``tarfile``'s stream reader grouped into samples."""
    out: list[tuple[str, dict[str, bytes]]] = []
    with open(path, "rb") as f:
        f.seek(offset)
        with tarfile.open(fileobj=f, mode="r|") as tar:
            for info in tar:
                if info.isfile():
                    key, ext = split_member_name(info.name)
                    if not out or out[-1][0] != key:
                        out.append((key, {}))
                    out[-1][1][ext] = tar.extractfile(info).read()
    return out


def write(path: Path, samples: list[tuple[str, list[tuple[str, bytes]]]]) -> list[int]:
    writer = TarShardWriter(path.with_suffix(".tmp"), path)
    offsets = [writer.add(key, members)[1] for key, members in samples]
    writer.commit()
    return offsets


SAMPLES = [
    ("a" * 140, [("jpg", b"\xff\xd8" * 700), ("meta.json", b"{}")]),  # a pax header for the long name
    ("kitti_train_0001", [("jpg", b""), ("depth.pts", bytes(range(256)) * 3)]),  # an empty member
    ("städte_0002", [("det2d.json", b"x" * 512), ("lane.png", b"y" * 513)]),  # non-ASCII: pax
]


def test_every_sample_and_member_as_tarfile_reads_them_from_any_manifest_offset(tmp_path):
    path = tmp_path / "s.tar"
    offsets = write(path, SAMPLES)
    assert list(iter_tar_samples(path)) == by_tarfile(path) == [(k, dict(m)) for k, m in SAMPLES]
    for offset in offsets:
        assert list(iter_tar_samples(path, offset)) == by_tarfile(path, offset)


def test_directories_and_links_are_skipped(tmp_path):
    path = tmp_path / "mixed.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("dir")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in (("k.jpg", b"1"), ("k" * 120 + ".jpg", b"22")):  # GNU long name
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("k.link")
        link.type = tarfile.SYMTYPE
        link.linkname = "k.jpg"
        tar.addfile(link)
    assert list(iter_tar_samples(path)) == by_tarfile(path)


@pytest.mark.parametrize("cut", [100, 512 + 700, -1030])
def test_a_truncated_shard_fails_as_tarfile_does_after_the_samples_before_the_cut(tmp_path, cut):
    path = tmp_path / "s.tar"
    write(path, SAMPLES)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    got, error = [], None
    try:
        got.extend(iter_tar_samples(path))
    except tarfile.ReadError as exc:
        error = exc
    expected, expected_error = [], None
    try:
        expected.extend(by_tarfile(path))
    except tarfile.ReadError as exc:
        expected_error = exc
    assert [k for k, _ in got] == [k for k, _ in expected][: len(got)]
    assert (error is None) == (expected_error is None)


def test_a_header_that_does_not_check_is_an_error(tmp_path):
    path = tmp_path / "s.tar"
    write(path, SAMPLES)
    data = bytearray(path.read_bytes())
    data[1024 + 3] ^= 0xFF  # inside the second header block's name
    path.write_bytes(bytes(data))
    with pytest.raises(tarfile.ReadError):
        list(iter_tar_samples(path))
