"""RTP is taken only from the source the SDP named, or with comedia the first that sent."""

from __future__ import annotations

import asyncio
import logging

import pytest

from channels.media import MediaClock, RtpSession
from channels.rtp import G711

from .media_peer import Peer, negotiated, open_session, until

pytestmark = pytest.mark.timeout(30)


class Received:
    def __init__(self, session: RtpSession) -> None:
        self.pcm: list[bytes] = []
        session.on_audio = lambda pcm, _gap: self.pcm.append(pcm)


def loud(value: int) -> bytes:
    return value.to_bytes(2, "little", signed=True) * 160


def run(coroutine_function) -> None:  # noqa: ANN001
    asyncio.run(coroutine_function())


def test_rtp_from_another_port_is_dropped_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        caller, intruder = Peer(), Peer()
        session = await open_session(MediaClock(), rtp_timeout=5)
        session.configure(negotiated(caller.port))
        session.start()
        received = Received(session)
        try:
            before = session.last_received
            for _ in range(3):
                intruder.send_audio(session, loud(9000))
            await until(lambda: session.packets_dropped == 3)
            assert received.pcm == []
            assert session.packets_received == 0
            assert session.last_received == before  # the RTP timeout is not reset
            caller.send_audio(session, loud(1000))
            await until(lambda: len(received.pcm) == 1)
            intruder.send_audio(session, loud(9000))
            caller.send_audio(session, loud(1000))
            await until(lambda: len(received.pcm) == 2)
            await until(lambda: session.packets_dropped == 4)
            assert len({bytes(pcm) for pcm in received.pcm}) == 1  # only the caller's audio
        finally:
            session.close()
            caller.close()
            intruder.close()

    with caplog.at_level(logging.INFO, logger="channels.media"):
        run(scenario)
    drops = [r for r in caplog.records if "dropped RTP" in r.getMessage()]
    assert len(drops) == 1, [r.getMessage() for r in caplog.records]


def test_dropped_rtp_does_not_keep_a_dead_call_alive() -> None:
    async def scenario() -> None:
        caller, intruder = Peer(), Peer()
        session = await open_session(MediaClock(), rtp_timeout=1)
        session.configure(negotiated(caller.port))
        timed_out: list[bool] = []
        session.on_timeout = lambda: timed_out.append(True)
        session.start()
        try:
            started = session.last_received
            intruder.send_audio(session)
            await until(lambda: session.packets_dropped == 1)
            session.check_timeout(started + 1.5)
            assert timed_out == [True]
        finally:
            session.close()
            caller.close()
            intruder.close()

    run(scenario)


def test_rtp_from_another_address_with_the_right_port_is_dropped() -> None:
    async def scenario() -> None:
        caller = Peer()
        session = await open_session(MediaClock())
        # The SDP names a different host; the packet comes from 127.0.0.1 with its port.
        session.configure(negotiated(caller.port, "192.0.2.7", direction="recvonly"))
        received = Received(session)
        try:
            caller.send_audio(session)
            await until(lambda: session.packets_dropped == 1)
            assert received.pcm == []
        finally:
            session.close()
            caller.close()

    run(scenario)


def test_ipv4_mapped_sdp_address_matches_the_plain_ipv4_source() -> None:
    async def scenario() -> None:
        caller = Peer()
        session = await open_session(MediaClock())
        session.configure(negotiated(caller.port, "::ffff:127.0.0.1", direction="recvonly"))
        received = Received(session)
        try:
            caller.send_audio(session)
            await until(lambda: len(received.pcm) == 1)
            assert session.packets_dropped == 0
        finally:
            session.close()
            caller.close()

    run(scenario)


def test_comedia_latches_the_first_source_for_the_whole_call() -> None:
    async def scenario() -> None:
        first, second = Peer(), Peer()
        session = await open_session(MediaClock(), comedia=True)
        session.configure(negotiated(40000, "192.0.2.7"))  # behind NAT: the SDP is useless
        received = Received(session)
        try:
            first.send_audio(session, loud(1000))
            await until(lambda: len(received.pcm) == 1)
            assert session.remote == ("127.0.0.1", first.port)
            second.send_audio(session, loud(9000))
            await until(lambda: session.packets_dropped == 1)
            assert session.remote == ("127.0.0.1", first.port)
            # A re-INVITE, even one naming the second source, does not move the latch.
            session.configure(negotiated(second.port))
            assert session.remote == ("127.0.0.1", first.port)
            second.send_audio(session, loud(9000))
            await until(lambda: session.packets_dropped == 2)
            first.send_audio(session, loud(1000))
            await until(lambda: len(received.pcm) == 2)
        finally:
            session.close()
            first.close()
            second.close()

    run(scenario)


def test_reinvite_moves_the_expected_source_and_hold_keeps_it() -> None:
    async def scenario() -> None:
        old, new = Peer(), Peer()
        session = await open_session(MediaClock())
        session.configure(negotiated(old.port))
        received = Received(session)
        try:
            old.send_audio(session)
            await until(lambda: len(received.pcm) == 1)
            session.configure(negotiated(new.port, "0.0.0.0"))  # hold: old source still valid
            old.send_audio(session)
            await until(lambda: len(received.pcm) == 2)
            session.configure(negotiated(new.port))
            old.send_audio(session)
            await until(lambda: session.packets_dropped == 1)
            new.send_audio(session)
            await until(lambda: len(received.pcm) == 3)
        finally:
            session.close()
            old.close()
            new.close()

    run(scenario)


def test_audio_heard_after_a_stretch_nobody_listened_to_has_no_gap_and_no_loss() -> None:
    """While the greeting plays nobody takes the caller's audio and it is not decoded; when the
    recording starts, the stream picks up from the next packet, with no silence put in and no
    packet counted lost for the stretch skipped."""

    async def scenario() -> None:
        caller = Peer()
        clock = MediaClock()
        session = await open_session(clock)
        session.configure(negotiated(caller.port))
        try:
            earlier: list[bytes] = []
            session.on_audio = lambda pcm, _gap: earlier.append(pcm)  # a first recording
            caller.send_audio(session, loud(100))
            caller.send_audio(session, loud(200))
            await until(lambda: len(earlier) == 2)
            session.on_audio = None  # then a prompt: 400 ms nobody listens to
            for _ in range(20):
                caller.send_audio(session, loud(500))
            await until(lambda: session.packets_received == 22)
            heard: list[tuple[bytes, int]] = []
            session.on_audio = lambda pcm, gap: heard.append((pcm, gap))  # a second recording
            for value in range(1000, 7000, 1000):
                caller.send_audio(session, loud(value))
            await until(lambda: len(heard) == 6)
            pcmu = G711("PCMU")
            sent = [pcmu.decode(pcmu.encode(loud(v))) for v in range(1000, 7000, 1000)]
            assert [pcm for pcm, _gap in heard] == sent
            assert [gap for _pcm, gap in heard] == [0] * 6
            assert (clock.rtp.lost, clock.rtp.late) == (0, 0)
        finally:
            session.close()
            caller.close()

    run(scenario)
