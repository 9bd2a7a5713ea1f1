"""The jitter buffer puts reordered RTP back in order and gives up on lost packets."""

from __future__ import annotations

from channels.rtp import JitterBuffer, RtpPacket


def packet(seq: int, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc, bytes([seq & 0xFF]) * 160)


def push_all(buffer: JitterBuffer, sequences: list[int]) -> list[int]:
    out: list[int] = []
    for seq in sequences:
        out += [p.sequence for p, _pcm in buffer.push(packet(seq), b"pcm")]
    return out


def test_in_order_packets_pass_straight_through() -> None:
    assert push_all(JitterBuffer(), [10, 11, 12, 13]) == [10, 11, 12, 13]


def test_swapped_packets_come_out_in_order() -> None:
    assert push_all(JitterBuffer(), [10, 12, 11, 13, 15, 14]) == [10, 11, 12, 13, 14, 15]


def test_a_lost_packet_is_given_up_after_depth_packets() -> None:
    buffer = JitterBuffer(depth=3)
    assert push_all(buffer, [10, 12, 13, 14]) == [10]
    assert push_all(buffer, [15]) == [12, 13, 14, 15]
    assert push_all(buffer, [11]) == []  # too late now: dropped


def test_duplicates_are_dropped_and_flush_returns_the_rest_in_order() -> None:
    buffer = JitterBuffer(depth=5)
    assert push_all(buffer, [1, 1, 3, 2, 2, 5]) == [1, 2, 3]
    assert [p.sequence for p, _ in buffer.flush()] == [5]
    assert buffer.flush() == []


def test_sequence_wraps_around_65535() -> None:
    assert push_all(JitterBuffer(), [65534, 0, 65535, 1]) == [65534, 65535, 0, 1]


def test_new_ssrc_releases_what_was_held_and_starts_over() -> None:
    buffer = JitterBuffer(depth=5)
    assert push_all(buffer, [10, 12]) == [10]
    released = [p.sequence for p, _ in buffer.push(packet(500, ssrc=2), b"pcm")]
    assert released == [12, 500]
