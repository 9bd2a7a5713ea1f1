"""Parsing and building SIP messages on top of `sipmessage`.

`sipmessage` parses and serialises; it does not frame a stream, check Content-Length or
build responses. Those rules (RFC 3261 sections 8.2.6, 18.3 and 20) live here.
"""

from __future__ import annotations

import secrets

from sipmessage import CSeq, Message, Request, Response, Via

SERVER_NAME = "ARA Voicemail"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"
MAX_MESSAGE_SIZE = 65535

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}

# Headers without which no transaction can be matched or answered (RFC 3261 8.1.1).
MANDATORY_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")


class MessageError(ValueError):
    """A datagram that is not a usable SIP message."""


def parse_message(data: bytes) -> Request | Response:
    """Parse one SIP message and apply the Content-Length rules of RFC 3261 18.3.

    A body longer than Content-Length is truncated; a shorter one is an error. Any parser
    failure becomes `MessageError`, so callers have one exception to handle.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise MessageError("message too large")
    # Tolerate bare LF line ends (seen from broken peers) by normalising them first.
    if b"\r\n" not in data and b"\n" in data:
        data = data.replace(b"\n", b"\r\n")
    try:
        message = Message.parse(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(str(exc) or "unparseable message") from exc
    except Exception as exc:  # noqa: BLE001 - the parser may raise anything on hostile input
        raise MessageError(f"unparseable message ({type(exc).__name__})") from exc
    for name in MANDATORY_HEADERS:
        if message.headers.get(name) is None:
            raise MessageError(f"missing {name} header")
    length_text = message.headers.get("Content-Length")
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError as exc:
            raise MessageError("bad Content-Length") from exc
        if length < 0 or length > len(message.body):
            raise MessageError("body shorter than Content-Length")
        message.body = message.body[:length]
    try:
        cseq = CSeq.parse(message.headers["CSeq"])
        top_via(message)
    except ValueError as exc:
        raise MessageError(str(exc)) from exc
    if isinstance(message, Request) and cseq.method != message.method:
        raise MessageError("CSeq method does not match the request method")
    return message


def top_via(message: Message) -> Via:
    """The first Via header value, which identifies the transaction."""
    first = message.headers.getlist("Via")[0]
    return Via.parse_many(first)[0]


def cseq_of(message: Message) -> CSeq:
    return CSeq.parse(message.headers["CSeq"])


def serialize(message: Request | Response) -> bytes:
    """Serialise with a correct Content-Length, which sipmessage does not set itself."""
    message.headers.set("Content-Length", str(len(message.body)))
    return bytes(message)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def tag_of(header_value: str) -> str | None:
    """The tag parameter of a From or To header value, without a full address parse."""
    for part in header_value.split(">")[-1].split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "tag":
            return value.strip()
    return None


def make_response(
    request: Request,
    code: int,
    phrase: str | None = None,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """Build a response that copies the headers RFC 3261 8.2.6.2 requires."""
    response = Response(code, phrase or REASON_PHRASES.get(code, "Unknown"), body)
    for value in request.headers.getlist("Via"):
        response.headers.add("Via", value)
    response.headers.add("From", request.headers["From"])
    to_value = request.headers["To"]
    if to_tag is not None and code > 100 and tag_of(to_value) is None:
        to_value = f"{to_value};tag={to_tag}"
    response.headers.add("To", to_value)
    response.headers.add("Call-ID", request.headers["Call-ID"])
    response.headers.add("CSeq", request.headers["CSeq"])
    response.headers.add("Server", SERVER_NAME)
    for name, value in headers or []:
        response.headers.add(name, value)
    if body and content_type:
        response.headers.add("Content-Type", content_type)
    return response


def response_address(request: Request, source: tuple[str, int]) -> tuple[str, int]:
    """Where responses go: RFC 3581 rport/received, else the Via sent-by.

    For unreliable transports we answer the packet's source when the client asked for rport,
    and the Via's host and port otherwise, with `received` taking precedence over the host.
    """
    via = top_via(request)
    if "rport" in via.parameters:
        return source
    host = via.parameters.get("received") or via.host
    return (host, via.port or 5060)


def stamp_received(request: Request, source: tuple[str, int]) -> None:
    """Add `received` and fill `rport` in the top Via (RFC 3261 18.2.1, RFC 3581)."""
    vias = request.headers.getlist("Via")
    first_header = vias[0]
    parsed = Via.parse_many(first_header)
    via = parsed[0]
    changes: dict[str, str | None] = {}
    if via.host != source[0]:
        changes["received"] = source[0]
    if "rport" in via.parameters:
        changes["rport"] = str(source[1])
        changes["received"] = source[0]
    if not changes:
        return
    stamped = Via(via.transport, via.host, via.port, via.parameters.replace(**changes))
    rest = [str(v) for v in parsed[1:]]
    vias[0] = ", ".join([str(stamped), *rest])
    request.headers.setlist("Via", vias)
