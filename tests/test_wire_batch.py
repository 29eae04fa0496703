"""Batches built from encoded envelopes decode like any envelope."""

from __future__ import annotations

from ion.model.messages import EnvelopeBatch, Event, Severity, new_envelope, new_message_id
from ion.wire.batch import batch_payload
from ion.wire.codec import decode, encode


def test_batch_of_encoded_envelopes_decodes_to_the_same_envelopes() -> None:
    envs = [
        new_envelope(
            Event(type="t", severity=Severity.INFO, subject="s", message="x" * i),
            source_node="n1",
            ion="k",
            sequence=i + 1,
            stream="ion/v1/nodes/n1/events",
            now_ms=1000 + i,
        )
        for i in range(300)  # long enough that lengths need multi-byte varints
    ]
    mid = new_message_id()
    payload = batch_payload([encode(e) for e in envs], message_id=mid, source_node="n1", now_ms=5)
    outer = decode(payload)
    assert outer.message_id == mid
    assert outer.source_node == "n1"
    assert outer.created_ms == 5
    assert isinstance(outer.body, EnvelopeBatch)
    assert list(outer.body.envelopes) == envs


def test_empty_batch() -> None:
    outer = decode(batch_payload([], message_id=new_message_id(), source_node="n", now_ms=1))
    assert isinstance(outer.body, EnvelopeBatch)
    assert list(outer.body.envelopes) == []
