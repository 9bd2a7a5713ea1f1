"""SDP offer/answer for one audio stream (RFC 4566, RFC 3264).

We accept G.711 (PCMU, PCMA) and RFC 4733 telephone-event; the answer keeps the offer's
payload type numbers, as RFC 3264 asks of an answerer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Static payload types (RFC 3551) we can speak, by encoding name.
STATIC_PAYLOAD_TYPES = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
SUPPORTED_CODECS = ("PCMU", "PCMA")


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
    direction: str = "sendrecv"


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
    direction: str


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
            try:
                port = int(parts[1].split("/")[0])
                formats = [int(p) for p in parts[3:] if p.isdigit()]
            except ValueError as exc:
                raise SdpError(f"bad media line: {value!r}") from exc
            current = MediaDescription(parts[0], port, parts[2], formats)
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
        pt_text, _, encoding = rest.partition(" ")
        bits = encoding.split("/")
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
    """Pick the first offered G.711 codec; raise SdpError when there is none (-> 488)."""
    audio = offer.audio()
    if audio is None:
        raise SdpError("no audio stream offered")
    address = audio.connection or offer.connection
    if not address:
        raise SdpError("no connection address")
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
    if chosen is None:
        raise SdpError("no common codec (we speak PCMU and PCMA)")
    direction = audio.direction if audio.direction != "sendrecv" else offer.direction
    return NegotiatedAudio(
        remote_address=address,
        remote_port=audio.port,
        payload_type=chosen[0],
        codec=chosen[1],
        telephone_event=telephone_event,
        ptime=audio.ptime or 20,
        direction=direction,
    )


def build_answer(
    negotiated: NegotiatedAudio,
    local_address: str,
    local_port: int,
    session_id: int,
    version: int = 1,
) -> bytes:
    formats = [negotiated.payload_type]
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN IP4 {local_address}",
        "s=ARA Voicemail",
        f"c=IN IP4 {local_address}",
        "t=0 0",
    ]
    if negotiated.telephone_event is not None:
        formats.append(negotiated.telephone_event)
    lines.append(f"m=audio {local_port} RTP/AVP {' '.join(str(f) for f in formats)}")
    lines.append(f"a=rtpmap:{negotiated.payload_type} {negotiated.codec}/8000")
    if negotiated.telephone_event is not None:
        lines.append(f"a=rtpmap:{negotiated.telephone_event} telephone-event/8000")
        lines.append(f"a=fmtp:{negotiated.telephone_event} 0-16")
    lines.append("a=ptime:20")
    lines.append("a=sendrecv")
    return ("\r\n".join(lines) + "\r\n").encode()
