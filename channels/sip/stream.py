"""SIP over a byte stream (TCP, TLS): cutting the stream into messages, RFC 3261 18.3.

On a stream the only end of a message is its Content-Length, which is therefore mandatory;
a message without one cannot be framed and the connection must be closed. Between messages
a client may send CRLF keep-alives (RFC 5626 4.4.1): a double CRLF is a "ping" that the server
answers with a single CRLF "pong".

`StreamFramer` is sans-I/O: the adapter feeds it whatever the socket read and gets a
`FeedResult`: the complete messages, for the parser (`messages.parse_message`), and whether a
pong is due, which it writes back (`PONG`, once per ping if it likes: `pongs` counts them). A
`FramingError` means the stream can no longer be trusted: the adapter closes the connection
(after handling the messages the error carries, which arrived complete before the fault).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024

PING = b"\r\n\r\n"
PONG = b"\r\n"

# The blank line that ends the headers. Bare LF line ends are accepted, as for datagrams.
_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_CONTENT_LENGTH_NAMES = (b"content-length", b"l")


class FramingError(ValueError):
    """The stream cannot be cut into messages any more: close the connection.

    `messages` holds the messages that were complete before the fault in the same `feed`.
    """

    def __init__(self, reason: str, messages: list[bytes] | None = None) -> None:
        super().__init__(reason)
        self.messages = messages or []


@dataclass
class FeedResult:
    """What one `feed` produced."""

    messages: list[bytes] = field(default_factory=list)  # complete messages, in order
    pongs: int = 0  # double-CRLF pings received: answer each with PONG

    @property
    def pong(self) -> bool:
        """A pong is due (RFC 5626 4.4.1)."""
        return self.pongs > 0


def _content_length(head: bytes) -> int:
    """The Content-Length of a header block (request or status line included)."""
    found: int | None = None
    for line in _LINE_END.split(head)[1:]:
        if line[:1] in (b" ", b"\t"):
            continue  # continuation of a folded header
        name, colon, value = line.partition(b":")
        if not colon or name.strip().lower() not in _CONTENT_LENGTH_NAMES:
            continue
        value = value.strip()
        if not (value.isdigit() and len(value) <= 10):
            raise FramingError(f"bad Content-Length {value[:20]!r}")
        length = int(value)
        if found is not None and found != length:
            raise FramingError("conflicting Content-Length headers")
        found = length
    if found is None:
        raise FramingError("missing Content-Length on a stream transport")
    return found


class StreamFramer:
    """Cuts one connection's byte stream into SIP messages; any split of the input works."""

    def __init__(
        self, *, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buffer = bytearray()
        self._blank_run = b""  # CR/LF bytes seen between messages, to spot a ping
        self._head_length: int | None = None  # header block size once its end was found
        self._body_length = 0
        self._scanned = 0  # bytes of the current head already searched for its end
        self._pongs = 0  # pings seen during the current feed
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message held back (non-zero at close means it was cut)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> FeedResult:
        """Add bytes read from the connection: the messages they complete and pongs due."""
        if self._failed is not None:
            raise FramingError(self._failed)
        messages: list[bytes] = []
        self._pongs = 0
        try:
            self._feed(data, messages)
        except FramingError as exc:
            self._failed = str(exc)
            self._buffer.clear()
            exc.messages = messages
            raise
        return FeedResult(messages, self._pongs)

    def _feed(self, data: bytes, messages: list[bytes]) -> None:
        position = 0
        if not self._buffer:
            position = self._skip_keepalives(data, 0)
        self._buffer += data[position:]
        while self._buffer:
            if self._head_length is None and not self._find_end_of_headers():
                return
            assert self._head_length is not None
            total = self._head_length + self._body_length
            if len(self._buffer) < total:
                return
            messages.append(bytes(self._buffer[:total]))
            rest = bytes(self._buffer[total:])
            self._buffer.clear()
            self._head_length = None
            self._body_length = 0
            self._scanned = 0
            self._buffer += rest[self._skip_keepalives(rest, 0) :]

    def _skip_keepalives(self, data: bytes, position: int) -> int:
        """Step over CR/LF between messages, counting each double CRLF as a ping."""
        while position < len(data) and data[position] in b"\r\n":
            self._blank_run = (self._blank_run + data[position : position + 1])[-4:]
            if self._blank_run == PING:
                self._pongs += 1
                self._blank_run = b""
            position += 1
        if position < len(data):
            self._blank_run = b""  # a message starts: CRLFs before it were no ping
        return position

    def _find_end_of_headers(self) -> bool:
        start = max(0, self._scanned - 3)  # the blank line may straddle two reads
        match = _END_OF_HEADERS.search(self._buffer, start)
        if match is None:
            self._scanned = len(self._buffer)
            if len(self._buffer) > self.max_header_bytes:
                raise FramingError(f"headers longer than {self.max_header_bytes} bytes")
            return False
        if match.end() > self.max_header_bytes:
            raise FramingError(f"headers longer than {self.max_header_bytes} bytes")
        length = _content_length(bytes(self._buffer[: match.start()]))
        if length > self.max_body_bytes:
            raise FramingError(f"body of {length} bytes exceeds {self.max_body_bytes}")
        self._head_length = match.end()
        self._body_length = length
        return True
