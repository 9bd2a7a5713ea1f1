"""RTP packets, G.711, RFC 4733 DTMF de-duplication and the gap-filling receive buffer."""

from __future__ import annotations

import struct

import pytest

from channels.rtp import (
    FRAME_SAMPLES,
    G711,
    DtmfReceiver,
    ReceiveBuffer,
    RtpError,
    RtpPacket,
    is_rtcp,
)

SSRC = 0x11223344


def header(
    *,
    pt: int = 0,
    seq: int = 1,
    ts: int = 1000,
    ssrc: int = SSRC,
    csrc: int = 0,
    extension: bool = False,
    padding: bool = False,
    marker: bool = False,
) -> bytes:
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension else 0) | csrc
    second = (0x80 if marker else 0) | pt
    return struct.pack("!BBHII", first, second, seq, ts, ssrc)


# -- packets ---------------------------------------------------------------------------


def test_packet_survives_serialize_and_parse() -> None:
    packet = RtpPacket(8, 65535, 2**32 - 1, SSRC, b"\xd5" * 160, marker=True)
    assert RtpPacket.parse(bytes(packet)) == packet


def test_sequence_and_timestamp_are_serialised_modulo_their_width() -> None:
    data = bytes(RtpPacket(0, 65536 + 5, 2**32 + 7, SSRC, b""))
    parsed = RtpPacket.parse(data)
    assert (parsed.sequence, parsed.timestamp) == (5, 7)


def test_csrc_list_is_skipped() -> None:
    data = header(csrc=2) + b"\x00\x00\x00\x01\x00\x00\x00\x02" + b"audio"
    assert RtpPacket.parse(data).payload == b"audio"


def test_header_extension_is_skipped() -> None:
    data = header(extension=True) + b"\xbe\xde\x00\x02" + b"\x00" * 8 + b"audio"
    assert RtpPacket.parse(data).payload == b"audio"


def test_padding_is_removed() -> None:
    data = header(padding=True) + b"audio" + b"\x00\x00\x03"
    assert RtpPacket.parse(data).payload == b"audio"


def test_csrc_extension_and_padding_together() -> None:
    data = (
        header(csrc=1, extension=True, padding=True, marker=True, pt=8)
        + b"\x00\x00\x00\x09"
        + b"\x10\x00\x00\x01"
        + b"\xff" * 4
        + b"audio"
        + b"\x00\x02"
    )
    packet = RtpPacket.parse(data)
    assert (packet.payload, packet.payload_type, packet.marker) == (b"audio", 8, True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00\x00\x01",
        header()[:11],
        b"\x40" + header()[1:] + b"audio",  # version 1
        b"\x00" + header()[1:] + b"audio",  # version 0 (e.g. STUN)
        header(csrc=3) + b"\x00" * 8,  # CSRC list cut short
        header(extension=True) + b"\xbe\xde",  # extension header cut short
        header(extension=True) + b"\xbe\xde\x00\x05" + b"\x00" * 4,  # extension body cut short
        header(padding=True) + b"ab\x09",  # more padding than packet
        header(padding=True) + b"ab\x00",  # padding count 0
    ],
    ids=[
        "empty",
        "4-bytes",
        "11-bytes",
        "v1",
        "v0",
        "csrc-short",
        "ext-short",
        "ext-body-short",
        "padding-long",
        "padding-zero",
    ],
)
def test_short_or_malformed_packets_are_rejected(data: bytes) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(data)


def test_rtcp_is_recognised_and_rtp_is_not() -> None:
    receiver_report = bytes([0x81, 201]) + b"\x00\x07" + b"\x00" * 28
    sender_report = bytes([0x80, 200]) + b"\x00\x06" + b"\x00" * 24
    assert is_rtcp(receiver_report)
    assert is_rtcp(sender_report)
    assert not is_rtcp(header(pt=0) + b"audio")
    assert not is_rtcp(header(pt=8, marker=True) + b"audio")
    assert not is_rtcp(header(pt=101, marker=True) + b"\x05\x00\x00\xa0")
    assert not is_rtcp(b"\x00\xc9")  # not version 2
    assert not is_rtcp(b"\x81")


# -- G.711 -----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_g711_frame_is_one_byte_per_sample_and_decodes_to_a_frame(codec: str) -> None:
    g711 = G711(codec)
    tone = struct.pack("<160h", *([8000, -8000] * 80))
    payload = g711.encode(tone)
    assert len(payload) == FRAME_SAMPLES
    decoded = struct.unpack("<160h", g711.decode(payload))
    assert all(abs(got - sent) < 300 for got, sent in zip(decoded, [8000, -8000] * 80, strict=True))


def test_g711_silence_bytes_are_the_standard_ones() -> None:
    assert G711("PCMU").encode(b"\x00\x00") == b"\xff"
    assert G711("PCMA").encode(b"\x00\x00") == b"\xd5"


def test_unknown_codec_is_refused() -> None:
    with pytest.raises(ValueError):
        G711("G729")


# -- RFC 4733 DTMF ---------------------------------------------------------------------


def dtmf(
    event: int, ts: int, *, end: bool = False, duration: int = 160, ssrc: int = SSRC
) -> RtpPacket:
    payload = bytes([event, (0x80 if end else 0) | 10]) + duration.to_bytes(2, "big")
    return RtpPacket(101, 1, ts, ssrc, payload)


def test_one_key_press_is_one_digit_across_updates_and_three_end_packets() -> None:
    receiver = DtmfReceiver()
    press = [dtmf(5, 8000, duration=d) for d in (160, 320, 480)]
    press += [dtmf(5, 8000, end=True, duration=640)] * 3
    assert [receiver.receive(p) for p in press] == ["5", None, None, None, None, None]


def test_new_event_with_new_timestamp_is_reported_even_for_the_same_key() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(dtmf(11, 8000)) == "#"
    assert receiver.receive(dtmf(11, 8000, end=True)) is None
    assert receiver.receive(dtmf(11, 9600)) == "#"
    assert receiver.receive(dtmf(0, 11200, end=True)) == "0"  # start packets lost


def test_late_end_packet_of_previous_key_is_not_a_new_press() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(dtmf(1, 8000)) == "1"
    assert receiver.receive(dtmf(2, 9600)) == "2"
    assert receiver.receive(dtmf(1, 8000, end=True)) is None  # reordered


def test_star_and_letters_and_non_dtmf_events() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(dtmf(10, 100)) == "*"
    assert receiver.receive(dtmf(15, 200)) == "D"
    assert receiver.receive(dtmf(16, 300)) is None  # flash
    assert receiver.receive(RtpPacket(101, 1, 400, SSRC, b"\x05\x00")) is None  # too short


# -- receive buffer --------------------------------------------------------------------


def audio(ts: int, *, ssrc: int = SSRC, samples: int = FRAME_SAMPLES) -> RtpPacket:
    return RtpPacket(0, 1, ts % 2**32, ssrc, b"\xff" * samples)


def place_all(buffer: ReceiveBuffer, timestamps: list[int]) -> list[int]:
    return [buffer.place(audio(ts), FRAME_SAMPLES) for ts in timestamps]


def test_consecutive_packets_need_no_silence() -> None:
    assert place_all(ReceiveBuffer(), [1000, 1160, 1320, 1480]) == [0, 0, 0, 0]


def test_gap_is_filled_with_the_number_of_samples_lost() -> None:
    # Packets at 1320 and 1480 were lost: 320 samples (40 ms) of silence go before 1640.
    assert place_all(ReceiveBuffer(), [1000, 1160, 1640]) == [0, 0, 2 * FRAME_SAMPLES]


def test_duplicate_and_late_packets_are_dropped() -> None:
    buffer = ReceiveBuffer()
    assert place_all(buffer, [1000, 1160, 1160, 1480, 1320, 1000]) == [0, 0, -1, 160, -1, -1]
    assert buffer.place(audio(1640), FRAME_SAMPLES) == 0  # the stream carries on


def test_new_ssrc_restarts_the_timeline() -> None:
    buffer = ReceiveBuffer()
    place_all(buffer, [1000, 1160])
    assert buffer.place(audio(500_000, ssrc=7), FRAME_SAMPLES) == 0
    assert buffer.place(audio(500_160, ssrc=7), FRAME_SAMPLES) == 0
    assert buffer.place(audio(499_840, ssrc=7), FRAME_SAMPLES) == -1


def test_timestamp_wrap_around_is_continuous() -> None:
    start = 2**32 - 2 * FRAME_SAMPLES
    assert place_all(ReceiveBuffer(), [start, start + 160, start + 320, start + 480]) == [0] * 4


def test_gap_across_the_wrap_is_filled_and_late_packet_before_it_dropped() -> None:
    buffer = ReceiveBuffer()
    start = 2**32 - FRAME_SAMPLES
    assert place_all(buffer, [start, start + 320, start + 160]) == [0, 160, -1]


def test_jump_longer_than_two_seconds_is_a_new_talk_spurt_not_silence() -> None:
    assert place_all(ReceiveBuffer(), [1000, 1000 + 10 * 8000]) == [0, 0]


def test_sender_clock_restart_far_behind_resynchronises_instead_of_dropping() -> None:
    buffer = ReceiveBuffer()
    place_all(buffer, [5_000_000, 5_000_160])
    assert place_all(buffer, [1000, 1160, 1320]) == [0, 0, 0]
