"""SDP offer/answer for one audio stream (RFC 4566, RFC 3264).

We accept G.711 (PCMU, PCMA) and RFC 4733 telephone-event; the answer keeps the offer's
payload type numbers, as RFC 3264 asks of an answerer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

# Static payload types (RFC 3551) we can speak, by encoding name.
STATIC_PAYLOAD_TYPES = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
SUPPORTED_CODECS = ("PCMU", "PCMA")
# Plain RTP only: answering RTP/AVP to an SRTP (RTP/SAVP) offer would be a wrong answer.
SUPPORTED_PROTOCOLS = ("RTP/AVP",)
# RFC 3264 6.1: the answer's direction mirrors the offer's.
ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


class SdpError(ValueError):
    """An SDP body we cannot use."""


@dataclass
class MediaDescription:
    media: str
    port: int
    protocol: str
    formats: list[int]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    connection: str | None = None
    ptime: int | None = None
    direction: str | None = None  # None: inherit the session-level direction
    format_tokens: list[str] = field(default_factory=list)  # as written, for a rejecting answer


@dataclass
class SessionDescription:
    connection: str | None
    media: list[MediaDescription]
    direction: str = "sendrecv"

    def audio(self) -> MediaDescription | None:
        for media in self.media:
            if media.media == "audio" and media.port != 0:
                return media
        return None


@dataclass(frozen=True)
class NegotiatedAudio:
    """What both sides agreed for the call's audio."""

    remote_address: str
    remote_port: int
    payload_type: int
    codec: str  # "PCMU" or "PCMA"
    telephone_event: int | None
    ptime: int
    direction: str  # the offer's direction for the chosen stream
    # RFC 3264 6: the answer has one m= line per offered one, unused ones with port 0.
    stream_index: int = 0
    offered_streams: tuple[tuple[str, str, str], ...] = ()  # (media, protocol, first format)


def parse_sdp(body: bytes) -> SessionDescription:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError("SDP is not UTF-8") from exc
    session = SessionDescription(connection=None, media=[])
    current: MediaDescription | None = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"bad media line: {value!r}")
            port_text = parts[1].split("/")[0]
            if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
                raise SdpError(f"bad media line: {value!r}")
            formats = [int(p) for p in parts[3:] if p.isascii() and p.isdigit()]
            current = MediaDescription(
                parts[0], int(port_text), parts[2], formats, format_tokens=parts[3:]
            )
            session.media.append(current)
        elif kind == "c":
            parts = value.split()
            if len(parts) != 3 or parts[0] != "IN":
                raise SdpError(f"bad connection line: {value!r}")
            address = parts[2].split("/")[0]
            if current is None:
                session.connection = address
            else:
                current.connection = address
        elif kind == "a":
            _parse_attribute(value, session, current)
    return session


def _parse_attribute(
    value: str, session: SessionDescription, current: MediaDescription | None
) -> None:
    name, _, rest = value.partition(":")
    if name in ("sendrecv", "sendonly", "recvonly", "inactive"):
        if current is None:
            session.direction = name
        else:
            current.direction = name
        return
    if current is None:
        return
    if name == "rtpmap":
        pt_text, _, encoding = rest.strip().partition(" ")
        bits = encoding.strip().split("/")
        if pt_text.isdigit() and len(bits) >= 2 and bits[1].isdigit():
            current.rtpmap[int(pt_text)] = (bits[0], int(bits[1]))
    elif name == "fmtp":
        pt_text, _, params = rest.partition(" ")
        if pt_text.isdigit():
            current.fmtp[int(pt_text)] = params
    elif name == "ptime" and rest.strip().isdigit():
        current.ptime = int(rest.strip())


def encoding_of(media: MediaDescription, payload_type: int) -> tuple[str, int] | None:
    if payload_type in media.rtpmap:
        name, rate = media.rtpmap[payload_type]
        return name.upper(), rate
    return STATIC_PAYLOAD_TYPES.get(payload_type)


def negotiate(offer: SessionDescription) -> NegotiatedAudio:
    """Take the first usable audio stream and its first G.711 codec; SdpError (-> 488) if none.

    A stream is usable when its port is not 0, it is plain RTP/AVP and offers PCMU or PCMA.
    """
    if offer.audio() is None:
        raise SdpError("no audio stream offered")
    for index, audio in enumerate(offer.media):
        if audio.media != "audio" or audio.port == 0:
            continue
        if audio.protocol.upper() not in SUPPORTED_PROTOCOLS:
            continue
        chosen, telephone_event = _choose_formats(audio)
        if chosen is None:
            continue
        address = audio.connection or offer.connection
        if not address:
            raise SdpError("no connection address")
        return NegotiatedAudio(
            remote_address=address,
            remote_port=audio.port,
            payload_type=chosen[0],
            codec=chosen[1],
            telephone_event=telephone_event,
            ptime=audio.ptime or 20,
            direction=audio.direction or offer.direction,
            stream_index=index,
            offered_streams=tuple(
                (m.media, m.protocol, m.format_tokens[0] if m.format_tokens else "0")
                for m in offer.media
            ),
        )
    raise SdpError("no common codec (we speak PCMU and PCMA over RTP/AVP)")


def _choose_formats(audio: MediaDescription) -> tuple[tuple[int, str] | None, int | None]:
    """The first offered G.711 payload type and the telephone-event one, in offer order."""
    chosen: tuple[int, str] | None = None
    telephone_event: int | None = None
    for pt in audio.formats:
        encoding = encoding_of(audio, pt)
        if encoding is None:
            continue
        name, rate = encoding
        if chosen is None and name in SUPPORTED_CODECS and rate == 8000:
            chosen = (pt, name)
        elif name == "TELEPHONE-EVENT" and rate == 8000 and telephone_event is None:
            telephone_event = pt
    return chosen, telephone_event


def reachable(remote_address: str, local_host: str) -> bool:
    """Whether a socket bound to `local_host` can send to the offer's `remote_address`.

    An IPv4 socket cannot send to an IPv6 address (`c=IN IP6`) nor an IPv6 one to an IPv4
    address; a name (not an address literal) is left to the resolver and counts as reachable.
    """
    try:
        remote = ipaddress.ip_address(remote_address.strip("[]"))
        local = ipaddress.ip_address(local_host.strip("[]"))
    except ValueError:
        return True
    return remote.version == local.version


def build_answer(
    negotiated: NegotiatedAudio,
    local_address: str,
    local_port: int,
    session_id: int,
    version: int = 1,
) -> bytes:
    """The SDP answer: our audio stream in the chosen stream's place, the others refused."""
    family = "IP6" if ":" in local_address else "IP4"
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN {family} {local_address}",
        "s=ARA Voicemail",
        f"c=IN {family} {local_address}",
        "t=0 0",
    ]
    streams = negotiated.offered_streams or (("audio", "RTP/AVP", "0"),)
    for index, (media, protocol, first_format) in enumerate(streams):
        if index == negotiated.stream_index:
            lines.extend(_audio_answer(negotiated, local_port))
        else:
            lines.append(f"m={media} 0 {protocol} {first_format}")
    return ("\r\n".join(lines) + "\r\n").encode()


def _audio_answer(negotiated: NegotiatedAudio, local_port: int) -> list[str]:
    formats = [negotiated.payload_type]
    if negotiated.telephone_event is not None:
        formats.append(negotiated.telephone_event)
    lines = [
        f"m=audio {local_port} RTP/AVP {' '.join(str(f) for f in formats)}",
        f"a=rtpmap:{negotiated.payload_type} {negotiated.codec}/8000",
    ]
    if negotiated.telephone_event is not None:
        lines.append(f"a=rtpmap:{negotiated.telephone_event} telephone-event/8000")
        lines.append(f"a=fmtp:{negotiated.telephone_event} 0-16")
    lines.append("a=ptime:20")
    lines.append(f"a={ANSWER_DIRECTION.get(negotiated.direction, 'sendrecv')}")
    return lines
