"""SIP over TCP: messages cut out of a byte stream by Content-Length, keep-alive pings answered."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.sip.stream import PONG, FramingError, StreamFramer


def sip_message(
    body: bytes = b"", *, length_header: str = "Content-Length", cseq: int = 1
) -> bytes:
    head = (
        "OPTIONS sip:voicemail.example SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 192.0.2.10:50000;branch=z9hG4bK-{cseq}\r\n"
        "From: <sip:alice@example.com>;tag=a\r\n"
        "To: <sip:voicemail.example>\r\n"
        "Call-ID: stream@192.0.2.10\r\n"
        f"CSeq: {cseq} OPTIONS\r\n"
        f"{length_header}: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def feed_all(framer: StreamFramer, chunks: list[bytes]) -> tuple[list[bytes], int]:
    """Every message and the number of pongs due, over a sequence of reads."""
    messages: list[bytes] = []
    pongs = 0
    for chunk in chunks:
        result = framer.feed(chunk)
        messages.extend(result.messages)
        pongs += result.pongs
        assert result.pong == (result.pongs > 0)
    return messages, pongs


def messages_of(framer: StreamFramer, data: bytes) -> list[bytes]:
    return framer.feed(data).messages


def test_one_message_in_one_read() -> None:
    message = sip_message(b"hello")
    assert messages_of(StreamFramer(), message) == [message]


def test_message_fed_byte_by_byte_comes_out_once_whole() -> None:
    message = sip_message(b"v=0\r\n\r\nbody with a blank line")
    framer = StreamFramer()
    assert feed_all(framer, [message[i : i + 1] for i in range(len(message))]) == ([message], 0)
    assert framer.buffered == 0


def test_two_messages_in_one_read_and_a_partial_third() -> None:
    first, second, third = sip_message(b"1"), sip_message(b"22", cseq=2), sip_message(cseq=3)
    framer = StreamFramer()
    assert messages_of(framer, first + second + third[:10]) == [first, second]
    assert framer.buffered == 10
    assert messages_of(framer, third[10:]) == [third]


def test_compact_and_lowercase_content_length_are_understood() -> None:
    for name in ("l", "content-length", "CONTENT-LENGTH"):
        message = sip_message(b"abc", length_header=name)
        assert messages_of(StreamFramer(), message + sip_message()) == [message, sip_message()]


def test_message_without_content_length_is_a_framing_error() -> None:
    message = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\nCSeq: 1 OPTIONS\r\n\r\n"
    with pytest.raises(FramingError, match="missing Content-Length"):
        StreamFramer().feed(message)


@pytest.mark.parametrize("value", ["abc", "-1", "1 2", ""])
def test_bad_content_length_is_a_framing_error(value: str) -> None:
    message = f"OPTIONS sip:x SIP/2.0\r\nContent-Length: {value}\r\n\r\n".encode()
    with pytest.raises(FramingError):
        StreamFramer().feed(message)


def test_conflicting_content_lengths_are_a_framing_error() -> None:
    message = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab"
    with pytest.raises(FramingError, match="conflicting"):
        StreamFramer().feed(message)


def test_double_crlf_ping_gets_one_crlf_pong() -> None:
    framer = StreamFramer()
    result = framer.feed(b"\r\n\r\n")
    assert result.messages == [] and result.pong and result.pongs == 1
    assert PONG == b"\r\n"
    assert not framer.feed(b"").pong  # answered once, not again


def test_ping_split_across_reads_and_between_messages() -> None:
    framer = StreamFramer()
    message = sip_message(b"x")
    chunks = [message + b"\r\n", b"\r", b"\n" + message + b"\r\n\r\n\r\n\r\n"]
    assert feed_all(framer, chunks) == ([message, message], 3)


def test_single_crlf_before_a_message_is_skipped_without_pong() -> None:
    framer = StreamFramer()
    message = sip_message()
    assert feed_all(framer, [b"\r\n" + message + b"\r\n", message]) == ([message, message], 0)


def test_endless_headers_are_a_framing_error() -> None:
    framer = StreamFramer(max_header_bytes=16 * 1024)
    framer.feed(b"OPTIONS sip:x SIP/2.0\r\n")
    with pytest.raises(FramingError, match="headers longer"):
        for _ in range(200):
            framer.feed(b"X-Padding: " + b"a" * 100 + b"\r\n")


def test_oversized_body_is_refused_before_it_arrives() -> None:
    message = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 70000\r\n\r\n"
    with pytest.raises(FramingError, match="exceeds"):
        StreamFramer(max_body_bytes=64 * 1024).feed(message)


def test_framing_error_carries_earlier_messages_and_the_framer_stays_failed() -> None:
    good = sip_message(b"ok")
    framer = StreamFramer()
    with pytest.raises(FramingError) as caught:
        framer.feed(good + b"INVITE sip:x SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n")
    assert caught.value.messages == [good]
    with pytest.raises(FramingError):
        framer.feed(good)


def test_bare_lf_line_ends_are_framed_too() -> None:
    message = b"OPTIONS sip:x SIP/2.0\nContent-Length: 3\n\nabc"
    assert messages_of(StreamFramer(), message + message) == [message, message]


# -- any split of any stream -----------------------------------------------------------

bodies = st.binary(max_size=300) | st.sampled_from([b"", b"\r\n\r\n", b"\r\n", b"a\r\n\r\nb"])
separators = st.sampled_from([(b"", 0), (b"\r\n", 0), (b"\r\n\r\n", 1), (b"\r\n\r\n\r\n\r\n", 2)])


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(st.tuples(separators, bodies), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12),
)
def test_any_split_of_a_message_sequence_gives_the_same_messages(
    parts: list[tuple[tuple[bytes, int], bytes]], cuts: list[int]
) -> None:
    messages = [sip_message(body, cseq=i) for i, (_, body) in enumerate(parts)]
    separators_used = [separator for (separator, _), _ in parts]
    stream = b"".join(sep + msg for sep, msg in zip(separators_used, messages, strict=True))
    pings = sum(count for (_, count), _ in parts)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in zip(points, points[1:], strict=False)]
    framer = StreamFramer()
    assert feed_all(framer, chunks) == (messages, pings)
    assert framer.buffered == 0
