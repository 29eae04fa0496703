"""TensorBoard event files read without TensorFlow: framing, CRCs, the Event/Summary subset,
files that are still being written, damage, and files written by real TensorFlow."""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tf_support import (
    REPO,
    event,
    event_file,
    key,
    length_delimited,
    simple_value,
    tensor,
    tensor_value,
    varint,
)

from node.engines import tfevents
from node.engines.tfevents import (
    EventDecodeError,
    EventTailer,
    crc32c,
    frame_record,
    masked_crc32c,
    parse_event,
)

DT_FLOAT, DT_DOUBLE, DT_INT32, DT_STRING, DT_INT64, DT_BFLOAT16, DT_HALF = 1, 2, 3, 7, 9, 14, 19


def test_crc32c_matches_the_standard_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    # Incremental use gives the same as one call.
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")


def test_frame_layout() -> None:
    record = frame_record(b"abc")
    assert len(record) == 8 + 4 + 3 + 4
    assert struct.unpack("<Q", record[:8]) == (3,)
    assert struct.unpack("<I", record[8:12]) == (masked_crc32c(record[:8]),)
    assert record[12:15] == b"abc"
    assert struct.unpack("<I", record[15:]) == (masked_crc32c(b"abc"),)


def test_tf1_simple_value() -> None:
    scalars = parse_event(event(1700000000.5, 7, simple_value("epoch_loss", 0.25)))
    assert [(s.tag, s.value, s.step, s.wall_time) for s in scalars] == [
        ("epoch_loss", 0.25, 7, 1700000000.5)
    ]


@pytest.mark.parametrize(
    ("tensor_bytes", "expected"),
    [
        (tensor(DT_FLOAT, content=struct.pack("<f", 1.5)), 1.5),
        (tensor(DT_DOUBLE, content=struct.pack("<d", 0.1)), 0.1),
        (tensor(DT_INT64, content=struct.pack("<q", -3)), -3.0),
        (tensor(DT_INT32, content=struct.pack("<i", 42)), 42.0),
        (tensor(DT_HALF, content=struct.pack("<e", 0.5)), 0.5),
        (tensor(DT_BFLOAT16, content=struct.pack("<I", 0x3FC00000)[2:]), 1.5),
        # The typed fields instead of tensor_content: packed and unpacked forms.
        (tensor(DT_FLOAT, fields=length_delimited(5, struct.pack("<f", 2.5))), 2.5),
        (tensor(DT_FLOAT, fields=key(5, 5) + struct.pack("<f", 3.5)), 3.5),
        (tensor(DT_DOUBLE, fields=length_delimited(6, struct.pack("<d", 4.25))), 4.25),
        (tensor(DT_INT32, fields=key(7, 0) + varint(-5)), -5.0),
        (tensor(DT_INT64, fields=length_delimited(10, varint(1 << 40))), float(1 << 40)),
        (tensor(DT_HALF, fields=key(13, 0) + varint(0x3C00)), 1.0),
        # A shape of [1] or [1, 1] still holds one number.
        (tensor(DT_FLOAT, content=struct.pack("<f", 6.0), dims=(1, 1)), 6.0),
    ],
)
def test_tf2_tensor_scalars(tensor_bytes: bytes, expected: float) -> None:
    (scalar,) = parse_event(event(1.0, 3, tensor_value("v", tensor_bytes)))
    assert scalar.value == pytest.approx(expected)
    assert scalar.step == 3


@pytest.mark.parametrize(
    "tensor_bytes",
    [
        tensor(DT_FLOAT, content=struct.pack("<3f", 1, 2, 3), dims=(3,)),  # a histogram-like
        tensor(DT_FLOAT, content=struct.pack("<2f", 1, 2)),  # content disagrees with shape
        tensor(DT_STRING, fields=length_delimited(8, b"text")),  # a text summary
        tensor(DT_FLOAT),  # no value at all
        tensor(DT_FLOAT, content=struct.pack("<f", 1.0), dims=(0,)),  # empty
    ],
)
def test_tensors_that_are_not_one_number_are_skipped(tensor_bytes: bytes) -> None:
    assert parse_event(event(1.0, 1, tensor_value("not-a-scalar", tensor_bytes))) == []


def test_events_of_other_kinds_and_unknown_fields_are_fine() -> None:
    file_version = key(1, 1) + struct.pack("<d", 1.0) + length_delimited(3, b"brain.Event:2")
    assert parse_event(file_version) == []
    unknown = length_delimited(99, b"future") + key(100, 0) + varint(5)
    scalars = parse_event(event(2.0, 1, simple_value("x", 1.0)) + unknown)
    assert [s.tag for s in scalars] == ["x"]
    # Several values in one summary, and a negative step.
    both = event(2.0, -1, simple_value("a", 1.0), simple_value("b", 2.0))
    assert [(s.tag, s.value, s.step) for s in parse_event(both)] == [("a", 1, -1), ("b", 2, -1)]


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a",  # key, then nothing
        key(5, 2) + varint(10) + b"short",  # length past the end
        key(1, 0) + b"\xff" * 11,  # varint too long
        key(1, 3),  # a group
        b"\x00",  # field number 0
        key(5, 2) + varint(2) + key(1, 2) + b"\x05",  # a truncated value inside the summary
    ],
)
def test_malformed_events_raise_only_decode_errors(data: bytes) -> None:
    with pytest.raises(EventDecodeError):
        parse_event(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    with contextlib.suppress(EventDecodeError):
        parse_event(data)


# Following files -------------------------------------------------------------------------


def test_tailer_reads_new_records_and_keeps_the_latest_per_tag(tmp_path: Path) -> None:
    path = event_file(tmp_path / "events.out.tfevents.1.host", event(1.0, 0, simple_value("l", 3)))
    tailer = EventTailer(tmp_path)
    assert tailer.poll()
    assert tailer.values() == {"l": 3.0, "step": 0.0}
    assert not tailer.poll()  # nothing new
    event_file(path, event(2.0, 1, simple_value("l", 2)), event(2.0, 1, simple_value("v", 9)))
    assert tailer.poll()
    assert tailer.values() == {"l": 2.0, "v": 9.0, "step": 1.0}
    assert tailer.newest_wall_time() == 2.0
    assert tailer.counters.records == 3


def test_a_partial_record_is_read_once_complete(tmp_path: Path) -> None:
    record = frame_record(event(1.0, 5, simple_value("loss", 0.5)))
    path = tmp_path / "events.out.tfevents.1"
    tailer = EventTailer(tmp_path)
    for cut in (0, 5, 12, len(record) - 1):  # nothing, half a header, a header, all but the CRC
        path.write_bytes(record[:cut])
        assert not tailer.poll()
        assert tailer.values() == {}
    path.write_bytes(record)
    assert tailer.poll()
    assert tailer.values() == {"loss": 0.5, "step": 5.0}
    assert tailer.counters.corrupt_records == 0


def test_a_bad_data_crc_skips_only_that_record(tmp_path: Path) -> None:
    good = frame_record(event(1.0, 1, simple_value("a", 1)))
    bad = bytearray(frame_record(event(2.0, 2, simple_value("a", 2))))
    bad[-1] ^= 0xFF
    later = frame_record(event(3.0, 3, simple_value("b", 3)))
    (tmp_path / "x.tfevents.1").write_bytes(good + bytes(bad) + later)
    tailer = EventTailer(tmp_path)
    tailer.poll()
    assert tailer.values() == {"a": 1.0, "b": 3.0, "step": 3.0}
    assert tailer.counters.corrupt_records == 1


def test_a_bad_length_crc_abandons_the_file_but_not_the_others(tmp_path: Path) -> None:
    good = frame_record(event(1.0, 1, simple_value("a", 1)))
    bad = bytearray(frame_record(event(2.0, 2, simple_value("a", 2))))
    bad[9] ^= 0xFF  # the length's CRC
    (tmp_path / "x.tfevents.1").write_bytes(good + bytes(bad) + good)
    event_file(tmp_path / "y.tfevents.2", event(5.0, 9, simple_value("c", 7)))
    tailer = EventTailer(tmp_path)
    tailer.poll()
    assert tailer.values() == {"a": 1.0, "c": 7.0, "step": 9.0}
    assert tailer.counters.corrupt_records == 1
    event_file(tmp_path / "x.tfevents.1", event(6.0, 10, simple_value("a", 5)))
    tailer.poll()  # the damaged file stays abandoned
    assert tailer.values()["a"] == 1.0


def test_a_record_with_a_good_crc_but_no_event_inside_is_counted(tmp_path: Path) -> None:
    event_file(tmp_path / "x.tfevents.1", b"\xff\xff\xff", event(1.0, 1, simple_value("a", 1)))
    tailer = EventTailer(tmp_path)
    tailer.poll()
    assert tailer.values() == {"a": 1.0, "step": 1.0}
    assert tailer.counters.malformed_events == 1


def test_huge_records_are_skipped_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tfevents, "MAX_SCALAR_RECORD_BYTES", 100)
    graph = key(4, 2) + varint(500) + b"g" * 500  # a graph_def-sized event
    event_file(tmp_path / "x.tfevents.1", graph, event(1.0, 2, simple_value("a", 4)))
    tailer = EventTailer(tmp_path)
    tailer.poll()
    assert tailer.values() == {"a": 4.0, "step": 2.0}
    assert tailer.counters.skipped_records == 1


def test_new_files_and_run_directories_appear(tmp_path: Path) -> None:
    tailer = EventTailer(tmp_path / "not-yet")
    assert not tailer.poll()  # the directory does not exist yet: no error
    event_file(
        tmp_path / "not-yet/train/events.out.tfevents.1", event(1.0, 1, simple_value("l", 1))
    )
    assert tailer.poll()
    event_file(
        tmp_path / "not-yet/validation/events.out.tfevents.2", event(2.0, 1, simple_value("l", 2))
    )
    (tmp_path / "not-yet/unrelated.txt").write_text("not an event file")
    assert tailer.poll()
    assert tailer.values() == {"train/l": 1.0, "validation/l": 2.0, "step": 1.0}


def test_the_newest_wall_time_wins_across_files(tmp_path: Path) -> None:
    # A restarted job writes a new file starting at step 0: its values are the current ones.
    event_file(tmp_path / "a.tfevents.1", event(10.0, 50, simple_value("loss", 0.1)))
    event_file(tmp_path / "b.tfevents.2", event(20.0, 0, simple_value("loss", 0.9)))
    tailer = EventTailer(tmp_path)
    tailer.poll()
    assert tailer.values() == {"loss": pytest.approx(0.9), "step": 0.0}


def test_a_poll_reads_a_bounded_amount(tmp_path: Path) -> None:
    records = [event(float(i), i, simple_value("n", i)) for i in range(200)]
    event_file(tmp_path / "x.tfevents.1", *records)
    tailer = EventTailer(tmp_path, budget_bytes=1000)
    tailer.poll()
    first = tailer.counters.records
    assert 0 < first < 200
    while tailer.poll():
        pass
    assert tailer.values()["n"] == 199.0
    assert tailer.counters.records == 200


def test_a_vanished_file_is_forgotten(tmp_path: Path) -> None:
    path = event_file(tmp_path / "x.tfevents.1", event(1.0, 1, simple_value("a", 1)))
    tailer = EventTailer(tmp_path)
    tailer.poll()
    path.unlink()
    assert not tailer.poll()
    assert tailer.values() == {"a": 1.0, "step": 1.0}  # what was read stays


# Files written by TensorFlow ---------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    root = sys.argv[1]
    # TF2: scalars as tensors (what Keras and tf.summary write), float32 and float64.
    writer = tf.summary.create_file_writer(root + "/tf2")
    with writer.as_default():
        for step in range(5):
            tf.summary.write("loss", tf.constant(1.0 / (step + 1)), step=step)
            tf.summary.write("lr", tf.constant(0.001, tf.float64), step=step)
            tf.summary.write("hist", tf.ones([3, 3]), step=step)  # not a scalar
    writer.close()
    # TF1: Summary.Value.simple_value, as tf.compat.v1 summaries wrote them.
    writer = tf.summary.create_file_writer(root + "/tf1")
    with writer.as_default():
        for step in range(3):
            value = summary_pb2.Summary.Value(tag="acc", simple_value=0.5 + step / 10)
            summary = summary_pb2.Summary(value=[value])
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
    writer.close()
    """
)


@pytest.mark.integration
def test_files_written_by_tensorflow(tmp_path: Path) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tailer = EventTailer(tmp_path)
    assert tailer.poll()
    values = tailer.values()
    assert values["tf2/loss"] == pytest.approx(0.2)
    assert values["tf2/lr"] == pytest.approx(0.001)
    assert values["tf1/acc"] == pytest.approx(0.7)
    assert "tf2/hist" not in values
    assert values["step"] in (2.0, 4.0)  # whichever file's last event is newest
    assert tailer.counters.corrupt_records == tailer.counters.malformed_events == 0
