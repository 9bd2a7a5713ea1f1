"""Parsing and building SIP messages on top of `sipmessage`.

`sipmessage` parses and serialises; it does not frame a stream, check Content-Length or
build responses. Those rules (RFC 3261 sections 8.2.6, 18.3 and 20) live here.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import sys

from sipmessage import CSeq, Message, Request, Response, Via

SERVER_NAME = "ARA Voicemail"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REGISTER, SUBSCRIBE"
MAX_MESSAGE_SIZE = 65535

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}

# Headers without which no transaction can be matched or answered (RFC 3261 8.1.1).
MANDATORY_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")

# Requests whose 1xx/2xx responses create a dialog, so they carry the Record-Route set.
DIALOG_METHODS = ("INVITE", "SUBSCRIBE", "REFER")


def _shared_parser_exceptions() -> tuple[BaseException, ...]:
    """The exception instances sipmessage keeps at module level and raises again and again
    (ADDRESS_EXCEPTION, VIA_EXCEPTION, MEDIATYPE_EXCEPTION in 0.7).

    Raising one object again adds the new frames to its `__traceback__`, so every bad header
    ever parsed would keep its frames, and the strings they hold, alive for good: a flood of
    malformed requests grew the server without bound (bench/RESULTS.md, the datagram fuzz).
    """
    found: list[BaseException] = []
    for name, module in list(sys.modules.items()):
        if name == "sipmessage" or name.startswith("sipmessage."):
            found += [value for value in vars(module).values() if isinstance(value, BaseException)]
    return tuple(found)


_SHARED_PARSER_EXCEPTIONS = _shared_parser_exceptions()


def release_parser_tracebacks() -> None:
    """Drop what sipmessage's shared exceptions hold since the last call; the transaction
    layer calls it after each message, so what they hold is bounded by one message."""
    for exc in _SHARED_PARSER_EXCEPTIONS:
        exc.__traceback__ = None
        exc.__context__ = None


class MessageError(ValueError):
    """A datagram that is not a usable SIP message.

    `message` is what could be parsed before a rule failed (None if nothing could), so a
    request with a bad Content-Length or CSeq can still be answered 400.
    """

    def __init__(self, reason: str, message: Request | Response | None = None) -> None:
        super().__init__(reason)
        self.message = message


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")


def _normalise_head(data: bytes) -> bytes:
    """Rewrite the header section into the CRLF form `sipmessage` expects.

    RFC 3261 7.3.1 allows folded header lines and white space before the colon; broken
    peers send bare LF line ends. Only the header section is touched: the body stays
    byte for byte, as Content-Length counts it.
    """
    data = data.lstrip(b"\r\n")
    blank = _BLANK_LINE.search(data)
    if blank is None:
        return data  # no end of headers: the parser reports it
    lines: list[bytes] = []
    for line in _LINE_END.split(data[: blank.start()]):
        if line[:1] in (b" ", b"\t") and len(lines) > 1:
            lines[-1] = lines[-1].rstrip() + b" " + line.strip()
            continue
        name, colon, value = line.partition(b":")
        if colon and lines:
            line = name.rstrip(b" \t") + b": " + value.strip(b" \t")
        lines.append(line)
    return b"\r\n".join(lines) + b"\r\n\r\n" + data[blank.end() :]


def parse_message(data: bytes) -> Request | Response:
    """Parse one SIP message and apply the Content-Length rules of RFC 3261 18.3.

    A body longer than Content-Length is truncated; a shorter one is an error. Any parser
    failure becomes `MessageError`, so callers have one exception to handle.
    """
    try:
        message = Message.parse(_normalise_head(data))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(str(exc) or "unparseable message", _with_placeholder_uri(data)) from exc
    except Exception as exc:  # noqa: BLE001 - the parser may raise anything on hostile input
        raise MessageError(f"unparseable message ({type(exc).__name__})") from exc
    if len(data) > MAX_MESSAGE_SIZE:
        raise MessageError("message too large", message)
    if isinstance(message, Response) and not 100 <= message.code <= 699:
        raise MessageError("bad status code", message)
    for name in MANDATORY_HEADERS:
        if not message.headers.get(name):
            raise MessageError(f"missing {name} header", message)
    if len(set(message.headers.getlist("Content-Length"))) > 1:
        raise MessageError("conflicting Content-Length headers", message)  # RFC 4475 3.1.2.8
    length_text = message.headers.get("Content-Length")
    if length_text is not None:
        if not (length_text.isascii() and length_text.isdigit()):
            raise MessageError("bad Content-Length", message)
        length = int(length_text)
        if length > len(message.body):
            raise MessageError("body shorter than Content-Length", message)
        message.body = message.body[:length]
    try:
        cseq = CSeq.parse(message.headers["CSeq"])
        top_via(message)
    except ValueError as exc:
        raise MessageError(str(exc), message) from exc
    if cseq.sequence > 2**32 - 1:
        raise MessageError("CSeq number out of range", message)  # RFC 3261 8.1.1.5
    if isinstance(message, Request) and cseq.method != message.method:
        raise MessageError("CSeq method does not match the request method", message)
    return message


# A request line whose URI the parser refused: the method, the URI, the version.
_REQUEST_LINE = re.compile(rb"([A-Za-z]{1,32}) [^ \r\n]{1,8192} (SIP/2\.0\r?\n)")


def _with_placeholder_uri(data: bytes) -> Request | None:
    """The request with its Request-URI replaced, when only the URI kept it from parsing
    (raw UTF-8, NUL, a bad escape): enough to answer it 400 instead of dropping it."""
    match = _REQUEST_LINE.match(data)
    if match is None:
        return None
    line = match.group(1) + b" sip:invalid.invalid " + match.group(2)
    try:
        message = Message.parse(_normalise_head(line + data[match.end() :]))
    except Exception:  # noqa: BLE001 - any other fault: nothing to answer
        return None
    return message if isinstance(message, Request) else None


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


def host_reference(host: str) -> str:
    """A host as a URI or Via writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def _header_parameters(value: str) -> str:
    """The header parameters of a From/To/Contact-style value (RFC 3261 20.10), as text.

    In name-addr form they follow the closing `>`; in addr-spec form (no angle brackets)
    every `;` starts one, since such a URI cannot carry parameters of its own. Quoted
    strings (the display name) are skipped, so a `;` or `>` in them means nothing.
    """
    quoted = escaped = False
    start = None
    for index, char in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            end = value.find(">", index)
            return "" if end < 0 else value[end + 1 :]
        elif char == ";" and start is None:
            start = index
    return "" if start is None else value[start:]


def _split_parameters(text: str) -> list[tuple[str, str]]:
    """`;name=value;flag` as (lower-case name, value) pairs, quoted values kept whole."""
    pairs: list[tuple[str, str]] = []
    current, quoted = "", False
    for char in text + ";":
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            name, _, val = current.partition("=")
            if name.strip():
                pairs.append((name.strip().lower(), val.strip()))
            current = ""
        else:
            current += char
    return pairs


def tag_of(header_value: str) -> str | None:
    """The tag parameter of a From or To header value (its first one), else None."""
    for name, value in _split_parameters(_header_parameters(header_value)):
        if name == "tag":
            return value or None
    return None


def header_tokens(message: Message, name: str) -> list[str]:
    """A comma-separated token header (Require, Supported...) over every line, lower-cased."""
    joined = ",".join(message.headers.getlist(name))
    return [token.strip().lower() for token in joined.split(",") if token.strip()]


def media_type(message: Message) -> str:
    """The Content-Type without parameters, lower-cased ("" when absent)."""
    return (message.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def _content_type_parameter(value: str, name: str) -> str | None:
    _kind, _, parameters = value.partition(";")
    for key, val in _split_parameters(parameters):
        if key == name:
            return val.strip('"')
    return None


def sdp_body(message: Message) -> bytes | None:
    """The SDP of a message's body: the body itself when it is application/sdp (or has no
    Content-Type, as broken peers send), or the application/sdp part of a multipart body
    (RFC 5621, SIP-I gateways); None when the body holds no SDP (415)."""
    kind = media_type(message)
    if kind in ("", "application/sdp"):
        return message.body
    if not kind.startswith("multipart/"):
        return None
    boundary = _content_type_parameter(message.headers.get("Content-Type") or "", "boundary")
    if not boundary:
        return None
    for part in message.body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        blank = _BLANK_LINE.search(part)
        if blank is None:
            continue
        for line in _LINE_END.split(part[: blank.start()]):
            name, _, value = line.decode("latin-1").partition(":")
            part_kind = value.split(";")[0].strip().lower()
            if name.strip().lower() in ("content-type", "c") and part_kind == "application/sdp":
                content = part[blank.end() :]
                # The line end before the next delimiter belongs to the delimiter.
                return content[:-2] if content.endswith(b"\r\n") else content.removesuffix(b"\n")
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
    if 100 < code < 300 and request.method in DIALOG_METHODS:
        # RFC 3261 12.1.1: the caller builds its route set from these (proxies in the path).
        for value in request.headers.getlist("Record-Route"):
            response.headers.add("Record-Route", value)
    if code == 100 and request.headers.get("Timestamp") is not None:
        response.headers.add("Timestamp", request.headers["Timestamp"])  # RFC 3261 8.2.6.1
    response.headers.add("Server", SERVER_NAME)
    for name, value in headers or []:
        response.headers.add(name, value)
    if body and content_type:
        response.headers.add("Content-Type", content_type)
    return response


def _unbracket(host: str) -> str:
    """An IPv6 reference `[::1]` as the socket address `::1`."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def response_address(request: Request, source: tuple[str, int]) -> tuple[str, int]:
    """Where responses go: RFC 3581 rport/received, else the Via sent-by.

    For unreliable transports we answer the packet's source when the client asked for rport,
    and the Via's host and port otherwise, with `received` taking precedence over the host.
    """
    via = top_via(request)
    if "rport" in via.parameters:
        return source
    host = _unbracket(via.parameters.get("received") or via.host)
    port = via.port or 5060
    if not 0 < port < 65536 or not _is_ip_literal(host):
        # A port no socket has (a fuzzed Via: 559199999999999999999) or a name we would have
        # to resolve: the packet's source is the only address we can answer.
        return source
    return (host, port)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_RPORT_PARAM = re.compile(r";[ \t]*rport(?:[ \t]*=[ \t]*[0-9]*)?(?=[ \t]*(?:;|$))", re.IGNORECASE)
_RECEIVED_PARAM = re.compile(r";[ \t]*received[ \t]*=[ \t]*[^;]*", re.IGNORECASE)


def _end_of_first_via(value: str) -> int:
    """Index of the comma that ends the first via-parm of a header value (or its length)."""
    quoted = False
    for index, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            return index
    return len(value)


def stamp_received(request: Request, source: tuple[str, int]) -> None:
    """Add `received` and fill `rport` in the top Via (RFC 3261 18.2.1, RFC 3581).

    The Via text is edited in place rather than re-serialised, so the branch and every other
    parameter reach the client byte for byte as it sent them (it matches responses on them).
    """
    vias = request.headers.getlist("Via")
    via = Via.parse_many(vias[0])[0]
    host, port = source
    has_rport = "rport" in via.parameters
    if _unbracket(via.host) == host and not has_rport:
        return
    end = _end_of_first_via(vias[0])
    text, rest = vias[0][:end].rstrip(), vias[0][end:]
    if has_rport:
        text = _RPORT_PARAM.sub(f";rport={port}", text, count=1)
    # RFC 3581 asks for `received` with rport even when it equals the sent-by host.
    text = _RECEIVED_PARAM.sub("", text)
    text += f";received={f'[{host}]' if ':' in host else host}"
    vias[0] = text + rest
    request.headers.setlist("Via", vias)
