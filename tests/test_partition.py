"""Array jobs: ``ingest --partition I/N`` then ``merge`` give a single run's output, byte for byte."""

from __future__ import annotations

import shutil

import pytest
from conftest import assert_error_line, ingest_cli, raw_with_a_bad_frame, tree_bytes

from mtl_data.ingest import engine
from mtl_data.ingest.engine import IngestOptions, ShardSize, partition_range, plan_ingest, run_ingest
from mtl_data.ingest.gtsrb import GtsrbConverter
from mtl_data.ingest.kitti import KittiConverter

CONVERTERS = {"kitti": KittiConverter, "gtsrb": GtsrbConverter}
SHARD_SIZES = {("kitti", "count"): "3", ("kitti", "bytes"): "300KB", ("gtsrb", "count"): "4", ("gtsrb", "bytes"): "7KB"}


def test_partition_ranges_are_contiguous_even_and_cover_every_frame():
    for frames in (0, 1, 2, 7, 100):
        for count in (1, 2, 3, 8):
            ranges = [partition_range(frames, i, count) for i in range(count)]
            assert ranges[0][0] == 0 and ranges[-1][1] == frames
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
            sizes = [end - start for start, end in ranges]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("source", ["kitti", "gtsrb"])
@pytest.mark.parametrize("rule", ["count", "bytes"])
def test_partitions_then_merge_equal_a_single_run_byte_for_byte(synth_root, tmp_path, cli, source, rule):
    raw = raw_with_a_bad_frame(synth_root, tmp_path, source)
    size = SHARD_SIZES[source, rule]
    single = ingest_cli(cli, source, raw, tmp_path / "single", "--shard-size", size, "--on-error", "skip")
    assert single.code == 0, single.err
    conv = CONVERTERS[source](raw)
    for index in (0, 1):  # the library path: no automatic merge
        options = IngestOptions(shard_size=ShardSize.parse(size), on_error="skip", partition=(index, 2))
        run_ingest(plan_ingest(conv, tmp_path / "parts", options))
    out = tmp_path / "parts" / source
    assert sorted(p.name for p in out.iterdir()) == [".partitions"]  # final shards untouched so far
    result = cli("merge", out)
    assert result.code == 0, result.err
    expected = tree_bytes(tmp_path / "single" / source)
    assert sum(name.endswith(".tar") for name in expected) >= 3
    assert expected["rejects.jsonl"].count(b"\n") == 1
    assert tree_bytes(out) == expected
    assert not (out / ".partitions").exists() and not (out / ".ingest").exists()


def test_the_last_finishing_partition_merges_by_itself(synth_root, tmp_path, cli):
    raw = synth_root("kitti")
    assert ingest_cli(cli, "kitti", raw, tmp_path / "single", "--shard-size", "3").code == 0
    first = ingest_cli(cli, "kitti", raw, tmp_path / "parts", "--shard-size", "3", "--partition", "1/2")
    assert first.code == 0, first.err
    assert "mtl-data merge" in first.err and not (tmp_path / "parts" / "kitti" / "manifest.parquet").exists()
    last = ingest_cli(cli, "kitti", raw, tmp_path / "parts", "--shard-size", "3", "--partition", "0/2")
    assert last.code == 0, last.err
    assert tree_bytes(tmp_path / "parts" / "kitti") == tree_bytes(tmp_path / "single" / "kitti")
    assert not (tmp_path / "parts" / "kitti" / ".partitions").exists()
    again = ingest_cli(cli, "kitti", raw, tmp_path / "parts", "--shard-size", "3", "--partition", "1/2")
    assert again.code == 0 and not (tmp_path / "parts" / "kitti" / ".partitions").exists()  # merged: a no-op


def test_three_partitions_one_without_frames(synth_root, tmp_path, cli):
    raw = synth_root("kitti")  # 2 test frames: partition 0/3 gets none
    assert partition_range(2, 0, 3) == (0, 0)
    args = ("--split", "test", "--shard-size", "1")
    assert ingest_cli(cli, "kitti", raw, tmp_path / "single", *args).code == 0
    for index in (2, 0, 1):
        result = ingest_cli(cli, "kitti", raw, tmp_path / "parts", *args, "--partition", f"{index}/3")
        assert result.code == 0, result.err
    assert tree_bytes(tmp_path / "parts" / "kitti") == tree_bytes(tmp_path / "single" / "kitti")


def test_interrupted_partition_resumes_and_the_merge_is_still_identical(synth_root, tmp_path, cli, monkeypatch):
    raw = synth_root("gtsrb")
    assert ingest_cli(cli, "gtsrb", raw, tmp_path / "single", "--shard-size", "5").code == 0
    assert ingest_cli(cli, "gtsrb", raw, tmp_path / "parts", "--shard-size", "5", "--partition", "0/2").code == 0
    convert = engine.process_frame
    calls = []

    def crash_after_12(converter, options, frame):
        calls.append(frame.id)
        if len(calls) > 12:
            raise KeyboardInterrupt  # as a kill would: mid-partition
        return convert(converter, options, frame)

    monkeypatch.setattr(engine, "process_frame", crash_after_12)
    options = IngestOptions(shard_size=ShardSize(count=5), partition=(1, 2))
    with pytest.raises(KeyboardInterrupt):
        run_ingest(plan_ingest(GtsrbConverter(raw), tmp_path / "parts", options))
    part = tmp_path / "parts" / "gtsrb" / ".partitions" / "1-of-2"
    assert not (part / "partition.json").exists() and len(list(part.glob("train-*.tar"))) == 2

    calls.clear()
    monkeypatch.setattr(engine, "process_frame", lambda *a: calls.append(a[2].id) or convert(*a))
    result = ingest_cli(cli, "gtsrb", raw, tmp_path / "parts", "--shard-size", "5", "--partition", "1/2")
    assert result.code == 0, result.err
    frames = sum(end - start for start, end in (partition_range(75, 1, 2), partition_range(10, 1, 2)))
    assert len(calls) == frames - 10  # the two finished chunks were not converted again
    assert tree_bytes(tmp_path / "parts" / "gtsrb") == tree_bytes(tmp_path / "single" / "gtsrb")


@pytest.mark.parametrize(
    "partition, says", [("2/2", "'2/2': expected I/N with 0 <= I < N"), ("x", "'x': expected I/N")]
)
def test_bad_partition_option_is_one_error_line(synth_root, tmp_path, cli, partition, says):
    result = ingest_cli(cli, "kitti", synth_root("kitti"), tmp_path / "o", "--partition", partition)
    assert_error_line(result, "--partition", says)
    assert not (tmp_path / "o").exists()


def test_merge_with_a_partition_missing_names_it_and_the_command(synth_root, tmp_path, cli):
    raw = synth_root("kitti")
    run_ingest(plan_ingest(KittiConverter(raw), tmp_path / "o", IngestOptions(partition=(0, 3))))
    run_ingest(plan_ingest(KittiConverter(raw), tmp_path / "o", IngestOptions(partition=(2, 3))))
    line = assert_error_line(cli("merge", tmp_path / "o"), "partition 1/3 of 3 is missing")
    assert f"mtl-data ingest kitti {raw.resolve()} --to {tmp_path / 'o'} --partition 1/3" in line
    assert not (tmp_path / "o" / "kitti" / "manifest.parquet").exists()
    assert_error_line(cli("merge", tmp_path), "no partitions to merge")
    # reading the unmerged output says what to do (stats, validate, the loader open it alike)
    line = assert_error_line(cli("stats", tmp_path / "o"), "no manifest.parquet found")
    assert "partitions of array jobs, not merged yet" in line and f"mtl-data merge {tmp_path / 'o'}" in line


def test_partitions_with_different_options_are_refused(synth_root, tmp_path, cli):
    raw = synth_root("kitti")
    assert ingest_cli(cli, "kitti", raw, tmp_path / "o", "--shard-size", "3", "--partition", "0/2").code == 0
    result = ingest_cli(cli, "kitti", raw, tmp_path / "o", "--shard-size", "2", "--partition", "1/2")
    assert_error_line(result, "partition 0/2 was built with other options", "options.shard_size.count: 3 -> 2")
    result = ingest_cli(cli, "kitti", raw, tmp_path / "o", "--shard-size", "3", "--partition", "1/3")
    assert_error_line(result, "holds partitions of 2, not 3")
    # two jobs that started before either wrote anything: the merge finds the mismatch
    assert ingest_cli(cli, "kitti", raw, tmp_path / "b", "--shard-size", "2", "--partition", "1/2").code == 0
    shutil.move(tmp_path / "b" / "kitti" / ".partitions" / "1-of-2", tmp_path / "o" / "kitti" / ".partitions")
    line = assert_error_line(cli("merge", tmp_path / "o" / "kitti"), "partition 1/2 was built with other options")
    assert "options.shard_size.count: 3 -> 2" in line
    assert not (tmp_path / "o" / "kitti" / "manifest.parquet").exists()
