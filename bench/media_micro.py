"""The Python cost of one RTP packet in the server, without the network: a microbenchmark.

``.venv/bin/python -m bench.media_micro`` sends 100 000 prompt packets through
`RtpSession.tick()` into a transport that drops them, and feeds 100 000 received packets to
`datagram_received` twice: while nobody listens (a greeting plays) and while a recording takes
them. CPU time per packet, microseconds; the system calls (sendto, recvmsg, epoll) that the
real server also pays per packet are not in it.
"""

from __future__ import annotations

import time

import uvloop

from channels.media import MediaClock, RtpSession
from channels.rtp import rtp_header
from channels.sdp import NegotiatedAudio

PACKETS = 100_000


class DroppingTransport:
    def sendto(self, data: bytes, address: object) -> None:
        pass

    def close(self) -> None:
        pass


def per_packet_us(step, items) -> float:  # noqa: ANN001
    start = time.process_time()
    for item in items:
        step(item)
    return (time.process_time() - start) / len(items) * 1e6


async def measure() -> dict[str, float]:
    session = RtpSession(MediaClock())
    session.connection_made(DroppingTransport())  # type: ignore[arg-type]
    session.configure(NegotiatedAudio("127.0.0.1", 4000, 8, "PCMA", 101, 20, "sendrecv"))
    session.play(b"\x01\x02" * 160 * PACKETS)
    results = {
        "tick (send one prompt packet)": per_packet_us(lambda _: session.tick(), range(PACKETS))
    }
    source = ("127.0.0.1", 4000)
    packets = [rtp_header(8, i, i * 160, 77, False) + b"\xd5" * 160 for i in range(PACKETS)]
    results["receive, nobody listening"] = per_packet_us(
        lambda p: session.datagram_received(p, source), packets
    )
    heard: list[bytes] = []
    session.on_audio = lambda pcm, _gap: heard.append(pcm)
    packets = [
        rtp_header(8, PACKETS + i, (PACKETS + i) * 160, 77, False) + b"\xd5" * 160
        for i in range(PACKETS)
    ]
    results["receive, recording"] = per_packet_us(
        lambda p: session.datagram_received(p, source), packets
    )
    assert len(heard) == PACKETS, len(heard)
    return results


def main() -> None:
    for name, value in uvloop.run(measure()).items():
        print(f"| {name} | {value:.2f} us |")


if __name__ == "__main__":
    main()
