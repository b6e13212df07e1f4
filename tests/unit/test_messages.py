"""The event envelope and the frame codecs (SPEC §3, §5)."""

from __future__ import annotations

import json
import uuid

import pytest

from nexo_actors.errors import MessageDecodeError
from nexo_actors.messages import (
    Deliver,
    Reply,
    decode_event,
    decode_frame,
    encode_event,
    encode_frame,
    is_empty,
    new_event,
    parse_inbound,
)

MAX = 4096


def test_event_round_trips_through_json() -> None:
    event = new_event("plugin.inbound.cli", {"text": "hi", "sender": "u"}, "cli",
                      session_id="s1", correlation_id="c1", reply_to="r.1")
    assert decode_event(encode_event(event)) == event


def test_frames_round_trip_through_msgpack() -> None:
    event = new_event("plugin.inbound.cli", {"text": "hi"}, "cli")
    for frame in (Deliver(agent_id="kate", event=event, redelivered=True),
                  Reply(agent_id="kate", event_id=event.id, reply=None, topic=None, outcome="merged")):
        assert decode_frame(encode_frame(frame)) == frame


def test_bad_frame_bytes_raise_one_typed_error_naming_the_problem() -> None:
    with pytest.raises(MessageDecodeError, match="invalid worker frame"):
        decode_frame(b"\x93not msgpack of a frame")


def test_an_envelope_keeps_its_id_and_takes_the_subject_and_reply_subject() -> None:
    body = {"id": str(uuid.uuid4()), "ts": 1.0, "topic": "ignored", "source": "x",
            "payload": {"text": "hi", "sender": "u"}}
    event = parse_inbound("plugin.inbound.cli", json.dumps(body).encode(), MAX, reply="_INBOX.1")
    assert event.id == body["id"]
    assert event.topic == "plugin.inbound.cli"
    assert event.reply_to == "_INBOX.1"


def test_a_plain_object_with_text_is_wrapped_into_an_envelope() -> None:
    event = parse_inbound("plugin.inbound.cli", b'{"text": "hi"}', MAX)
    assert event.payload == {"text": "hi"}
    assert event.topic == "plugin.inbound.cli"
    uuid.UUID(event.id)


@pytest.mark.parametrize(("body", "why"), [
    (b"\xff\xfe not json", "not JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"text": 5}', "invalid payload"),
    (b'{"hello": "world"}', "neither an event envelope nor an object with 'text'"),
    (b'{"id": "x", "payload": {"text": "hi"}}', "invalid envelope"),
])
def test_poison_bodies_raise_a_deserialization_error(body: bytes, why: str) -> None:
    with pytest.raises(MessageDecodeError, match="^deserialization error: .*" + why):
        parse_inbound("plugin.inbound.cli", body, MAX)


def test_a_body_over_max_payload_is_refused_before_parsing() -> None:
    with pytest.raises(MessageDecodeError, match="over max_payload 10"):
        parse_inbound("plugin.inbound.cli", b'{"text": "0123456789"}', 10)


def test_events_without_text_or_media_are_empty() -> None:
    assert is_empty(new_event("t", {"text": "  "}, "x"))
    assert is_empty(new_event("t", {"sender": "u"}, "x"))
    assert not is_empty(new_event("t", {"media": [{"url": "u"}]}, "x"))
    assert not is_empty(new_event("t", {"text": "hi"}, "x"))
