"""The deposit workload of bench.calls: the mailboxes, the caller's audio and sipp's scenario.

Every caller leaves the same 10 s message after a filler stream as long as the longest
greeting plus a margin; the mailboxes are chosen so that their greetings differ by a few
packets at most, so one stream serves every caller.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

from tests import sipp
from tests.audio import (
    PAYLOAD_PCMA,
    PAYLOAD_PCMU,
    g711_decode,
    g711_encode,
    test_signal,
    write_rtp_pcap,
)
from tests.server import SOUNDS

FRAME_BYTES = 320  # 20 ms of 8 kHz 16-bit PCM: one RTP packet of the caller and of the server
FRAME_SECONDS = 0.020
MESSAGE_SECONDS = 10.0
MARGIN_FRAMES = 25  # the caller talks 0.5 s past the longest greeting before its message starts
BYE_AFTER_MS = 200  # silence between the last RTP packet and the BYE
REFERENCE_MAILBOX = "1000"


# -- the workload ---------------------------------------------------------------------------


def prompt_frames(name: str) -> int:
    """20 ms packets the server sends for one prompt (it pads the last one)."""
    return math.ceil(len(SOUNDS.load_pcm(name)) / FRAME_BYTES)


def greeting_frames(mailbox: str) -> int:
    """Packets from the answer to the end of the beep, for VoiceMail(mailbox,u) with no greeting
    recorded: vm-theperson, the digits, vm-isunavail, vm-intro, beep."""
    names = ["vm-theperson", *(f"digits/{d}" for d in mailbox), "vm-isunavail", "vm-intro"]
    return sum(prompt_frames(name) for name in [*names, "beep"])


def mailboxes_like_reference(count: int) -> list[str]:
    """`count` four-digit mailboxes whose greetings are as long as 1000's, or nearly.

    One mailbox per caller (maxmsg is 100 per mailbox), with greetings that differ by a few
    packets at most, so one pcap serves every caller.
    """
    digit = {d: prompt_frames(f"digits/{d}") for d in "0123456789"}
    target = sum(digit[d] for d in REFERENCE_MAILBOX)
    candidates = (
        "".join(p)
        for p in itertools.product("0123456789", repeat=4)
        if "".join(p) != REFERENCE_MAILBOX
    )
    ranked = sorted(candidates, key=lambda m: (abs(sum(digit[d] for d in m) - target), m))
    if count > len(ranked):
        raise ValueError(f"at most {len(ranked)} mailboxes")
    return ranked[:count]


@dataclass
class Workload:
    mailboxes: list[str]
    filler_frames: int  # caller's RTP before its message: the longest greeting + margin
    pcap: Path  # filler then message, one continuous RTP stream (for sipp)
    g711: Path  # the same stream's payload bytes (for bench.loadgen)
    payload_type: int  # 0 PCMU, 8 PCMA
    sent_pcm: bytes  # what the server decodes from that stream, sample for sample

    @property
    def message_offset(self) -> int:
        return self.filler_frames * FRAME_BYTES

    @property
    def caller_rtp_seconds(self) -> float:
        return self.filler_frames * FRAME_SECONDS + MESSAGE_SECONDS

    def expected_lead_in(self, mailbox: str) -> float:
        """Seconds of filler an ideal server records before the message (its beep ends then)."""
        return (self.filler_frames - greeting_frames(mailbox)) * FRAME_SECONDS


CODECS = {"PCMU": PAYLOAD_PCMU, "PCMA": PAYLOAD_PCMA}


def make_workload(
    directory: Path, calls: int, codec: str = "PCMA", margin_frames: int = MARGIN_FRAMES
) -> Workload:
    """The mailboxes and the caller's stream: filler (seed 2) then test_signal(10.0) (seed 1);
    the caller talks `margin_frames` past the longest greeting before its message starts."""
    mailboxes = mailboxes_like_reference(calls)
    filler_frames = max(greeting_frames(m) for m in mailboxes) + margin_frames
    filler = test_signal(filler_frames * FRAME_SECONDS, seed=2)
    message = test_signal(MESSAGE_SECONDS)
    pcm = filler + message
    payload_type = CODECS[codec]
    pcap = directory / "caller.pcap"
    write_rtp_pcap(pcap, pcm, payload_type)
    encoded = g711_encode(pcm, payload_type)
    g711 = directory / "caller.g711"
    g711.write_bytes(encoded)
    sent = g711_decode(encoded, payload_type)
    return Workload(mailboxes, filler_frames, pcap, g711, payload_type, sent)


def scenario_xml(workload: Workload, after_bye: str = "") -> str:
    """INVITE (rtd 1 until the 200), ACK, RTP for greeting + margin + 10 s, BYE (rtd 2), then
    `after_bye` (sipp XML)."""
    user = "[field0]"
    plain = '<send retrans="500">'
    invite = sipp.invite(user, [workload.payload_type, 101]).replace(
        plain, '<send retrans="500" start_rtd="1">', 1
    )
    bye = sipp.bye(user).replace(plain, '<send retrans="500" start_rtd="2">', 1)
    return sipp.scenario(
        "calls",
        invite,
        sipp.recv(100, optional=True),
        sipp.recv(180, optional=True),
        sipp.recv(200, extra=' rtd="1"'),
        sipp.ack(user),
        sipp.play_pcap(workload.pcap),
        sipp.pause(workload.caller_rtp_seconds * 1000 + BYE_AFTER_MS),
        bye,
        sipp.recv(200, extra=' rtd="2"'),
        *([after_bye] if after_bye else []),
    )
