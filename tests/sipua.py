"""The pure SIP side of the test softphone: parse what the server sends, build what we send.

Written independently of `channels.sip` on purpose: the softphone checks the server, so it
must not share the server's parser. Only what a UDP user agent on 127.0.0.1 needs: requests
and responses with their headers, the SDP offer and answer, RFC 2617/7616 MD5 digest, and
RFC 4733 telephone-event payloads.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import struct
from dataclasses import dataclass, field

COMPACT = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
}
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}
CODECS = {number: name for name, number in PAYLOAD_TYPES.items()}
TELEPHONE_EVENT = 101
EVENT_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14}
EVENT_CODES["D"] = 15


class SipParseError(ValueError):
    """What the server sent is not a SIP message we can read."""


@dataclass
class SipMessage:
    """One request or response; header names are kept as sent, looked up case-insensitively."""

    start_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        if not self.is_response:
            raise ValueError(f"not a response: {self.start_line!r}")
        return int(self.start_line.split()[1])

    @property
    def method(self) -> str:
        """The request's method, or the CSeq method of a response."""
        if self.is_response:
            return self.cseq[1]
        return self.start_line.split()[0]

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = (self.header("CSeq") or "0 ?").split()
        return int(number), method.upper()

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if _canonical(key) == wanted]

    def __str__(self) -> str:
        head = "\r\n".join([self.start_line, *(f"{k}: {v}" for k, v in self.headers)])
        return head + "\r\n\r\n" + self.body.decode("utf-8", "replace")


def _canonical(name: str) -> str:
    lowered = name.strip().lower()
    return COMPACT.get(lowered, lowered)


def parse(data: bytes) -> SipMessage:
    """Parse one datagram; folded header lines are joined, the body cut at Content-Length."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = data.partition(b"\n\n")
    lines = re.split(r"\r?\n", head.decode("utf-8", "replace"))
    if not lines or not (lines[0].startswith("SIP/2.0 ") or lines[0].endswith(" SIP/2.0")):
        raise SipParseError(f"not a SIP start line: {lines[0]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without a colon: {line!r}")
        headers.append((name.strip(), value.strip()))
    message = SipMessage(lines[0], headers, body)
    length = message.header("Content-Length")
    if length is not None:
        message.body = body[: int(length)]
    return message


def build(start_line: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """Serialise a message; Content-Length is always added from the body."""
    lines = [start_line, *(f"{name}: {value}" for name, value in headers)]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def tag_of(value: str) -> str | None:
    match = re.search(r";\s*tag=([^;>\s]+)", value)
    return match.group(1) if match else None


def uri_of(value: str) -> str:
    """The URI in a name-addr (`"x" <sip:a@b>;p`) or addr-spec header value."""
    match = re.search(r"<([^>]*)>", value)
    return match.group(1) if match else value.split(";")[0].strip()


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_hex(8)


def new_branch() -> str:
    return "z9hG4bK-" + secrets.token_hex(8)


def response_to(request: SipMessage, status: int, reason: str, to_tag: str | None) -> bytes:
    """A response copying the request's Via, From, To (tagged), Call-ID and CSeq."""
    headers = [(name, value) for name, value in request.headers if _canonical(name) == "via"]
    to = request.header("To") or ""
    if to_tag and tag_of(to) is None:
        to += f";tag={to_tag}"
    headers += [
        ("From", request.header("From") or ""),
        ("To", to),
        ("Call-ID", request.header("Call-ID") or ""),
        ("CSeq", request.header("CSeq") or ""),
    ]
    return build(f"SIP/2.0 {status} {reason}", headers)


# -- SDP -----------------------------------------------------------------------------------


def sdp_offer(address: str, port: int, codecs: tuple[str, ...], session_id: int) -> bytes:
    """An audio offer of G.711 codecs in preference order plus telephone-event 101."""
    numbers = [PAYLOAD_TYPES[codec] for codec in codecs]
    family = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=softphone {session_id} {session_id} IN {family} {address}",
        "s=test softphone",
        f"c=IN {family} {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, [*numbers, TELEPHONE_EVENT]))}",
        *(f"a=rtpmap:{PAYLOAD_TYPES[codec]} {codec}/8000" for codec in codecs),
        f"a=rtpmap:{TELEPHONE_EVENT} telephone-event/8000",
        f"a=fmtp:{TELEPHONE_EVENT} 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass(frozen=True)
class SdpAnswer:
    address: str
    port: int
    payload_type: int
    telephone_event: int | None


def parse_answer(body: bytes) -> SdpAnswer:
    """The server's answer: where to send RTP, the chosen G.711 codec, its telephone-event."""
    text = body.decode("utf-8", "replace")
    address = port = None
    formats: list[int] = []
    rtpmap: dict[int, str] = {}
    for line in re.split(r"\r?\n", text):
        if line.startswith("c=") and address is None:
            address = line.split()[-1]
        elif line.startswith("m=audio"):
            parts = line[2:].split()
            port = int(parts[1])
            formats = [int(f) for f in parts[3:]]
        elif line.startswith("a=rtpmap:"):
            number, _, encoding = line[len("a=rtpmap:") :].partition(" ")
            rtpmap[int(number)] = encoding.split("/")[0].lower()
    if address is None or port is None or not formats:
        raise SipParseError(f"SDP answer without c= or m=audio:\n{text}")
    audio = [f for f in formats if f in CODECS or rtpmap.get(f) in ("pcmu", "pcma")]
    if not audio:
        raise SipParseError(f"SDP answer without G.711:\n{text}")
    events = [f for f in formats if rtpmap.get(f) == "telephone-event"]
    return SdpAnswer(address, port, audio[0], events[0] if events else None)


# -- digest authentication ------------------------------------------------------------------


def parse_challenge(value: str) -> dict[str, str]:
    """`Digest realm="x", nonce="y", qop="auth"` into a dict with lower-case keys."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipParseError(f"not a Digest challenge: {value!r}")
    return {
        key.lower(): quoted or bare
        for key, quoted, bare in re.findall(r'([\w-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', rest)
    }


def digest_authorization(
    challenge: dict[str, str],
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization value answering an MD5 challenge (qop=auth when offered)."""
    algorithm = challenge.get("algorithm", "MD5")
    if algorithm.upper() != "MD5":
        raise ValueError(f"digest algorithm {algorithm} is not supported by the softphone")
    realm, nonce = challenge["realm"], challenge["nonce"]

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{username}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    fields = [
        f'username="{username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        "algorithm=MD5",
    ]
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce = cnonce or secrets.token_hex(8)
        response = md5(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
        fields += [f'response="{response}"', "qop=auth", f"nc={nc:08x}", f'cnonce="{cnonce}"']
    else:
        fields.append(f'response="{md5(f"{ha1}:{nonce}:{ha2}")}"')
    if "opaque" in challenge:
        fields.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(fields)


# -- RTP ------------------------------------------------------------------------------------

_RTP = struct.Struct("!BBHII")


@dataclass(frozen=True)
class Rtp:
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> Rtp | None:
    """An RTP packet (RFC 3550) or None for RTCP and anything that is not RTP version 2."""
    if len(data) < _RTP.size or data[0] >> 6 != 2 or 72 <= (data[1] & 0x7F) <= 76:
        return None
    first, second, sequence, timestamp, ssrc = _RTP.unpack_from(data)
    offset = _RTP.size + 4 * (first & 0x0F)
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if len(data) < offset + 4:
            return None
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data) - (data[-1] if first & 0x20 else 0)
    if end < offset:
        return None
    return Rtp(second & 0x7F, bool(second & 0x80), sequence, timestamp, ssrc, data[offset:end])


def build_rtp(packet: Rtp) -> bytes:
    header = _RTP.pack(
        0x80,
        (0x80 if packet.marker else 0) | packet.payload_type,
        packet.sequence & 0xFFFF,
        packet.timestamp & 0xFFFFFFFF,
        packet.ssrc,
    )
    return header + packet.payload


def event_payload(digit: str, end: bool, duration: int, volume: int = 10) -> bytes:
    """RFC 4733 section 2.3: event, E bit and volume, 16-bit duration in timestamp units."""
    return struct.pack("!BBH", EVENT_CODES[digit.upper()], (0x80 if end else 0) | volume, duration)


def event_packets(digit: str, duration_ms: int, frame_ms: int = 20) -> list[tuple[bool, bytes]]:
    """(marker, payload) of one RFC 4733 event, one per 20 ms slot: start, updates, 3 ends.

    All carry the timestamp of the event's start (the caller sets it); the first has the
    marker bit; the end packet is sent three times with the final duration.
    """
    if digit.upper() not in EVENT_CODES:
        raise ValueError(f"{digit!r} is not a DTMF event (0-9, *, #, A-D)")
    step = 8 * frame_ms
    slots = max(1, round(duration_ms / frame_ms))
    packets = [(k == 1, event_payload(digit, False, k * step)) for k in range(1, slots + 1)]
    final = event_payload(digit, True, slots * step)
    return packets + [(False, final)] * 3
