"""AMI's wire format, without I/O: bytes in, actions out; responses and events to bytes.

A message is `Key: Value` lines ended by CRLF and closed by an empty line. Clients send
actions; keys are case-insensitive (Asterisk's astman_get_header), a key may repeat
(Variable:), and the ActionID of an action is echoed in every message answering it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

# Asterisk 20 announces AMI version 9.0.0 in its first line.
AMI_VERSION = "9.0.0"
BANNER = f"Asterisk Call Manager/{AMI_VERSION}\r\n".encode()
MAX_MESSAGE_BYTES = 64 * 1024  # a client sending more without an empty line is cut off


class ProtocolError(Exception):
    """The peer sends something that is not AMI; the session ends."""


class Message:
    """Ordered `Key: Value` pairs with case-insensitive lookup."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.pairs: list[tuple[str, str]] = list(pairs)

    def get(self, key: str, default: str = "") -> str:
        """The first value of `key` (astman_get_header takes the first), else `default`."""
        wanted = key.lower()
        for name, value in self.pairs:
            if name.lower() == wanted:
                return value
        return default

    def getall(self, key: str) -> list[str]:
        wanted = key.lower()
        return [value for name, value in self.pairs if name.lower() == wanted]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and any(n.lower() == key.lower() for n, _ in self.pairs)

    def __getitem__(self, key: str) -> str:
        if key not in self:
            raise KeyError(key)
        return self.get(key)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.pairs)

    def __repr__(self) -> str:
        return f"Message({self.pairs!r})"

    @property
    def action(self) -> str:
        return self.get("Action").strip()

    @property
    def action_id(self) -> str:
        return self.get("ActionID")


class Parser:
    """Feed it bytes as they arrive; it returns each complete action."""

    def __init__(self) -> None:
        self._buffer = b""
        self._pairs: list[tuple[str, str]] = []
        self._size = 0

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            raw, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            self._size += len(raw) + 1
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line.strip():
                if self._pairs:
                    messages.append(Message(self._pairs))
                self._pairs, self._size = [], 0
                continue
            name, colon, value = line.partition(":")
            if colon:  # Asterisk drops lines without a colon
                self._pairs.append((name.strip(), value.lstrip(" ")))
            if self._size > MAX_MESSAGE_BYTES:
                raise ProtocolError("message too long")
        if len(self._buffer) + self._size > MAX_MESSAGE_BYTES:
            raise ProtocolError("message too long")
        return messages


def _clean(value: object) -> str:
    # A value may not break the framing: CR/LF inside one would start a new header.
    return str(value).replace("\r", " ").replace("\n", " ")


def encode(pairs: Iterable[tuple[str, object]]) -> bytes:
    """One message: each pair a line, then the empty line."""
    return ("".join(f"{name}: {_clean(value)}\r\n" for name, value in pairs) + "\r\n").encode(
        "utf-8"
    )


def response(
    action: Message,
    status: str = "Success",
    message: str | None = None,
    fields: Iterable[tuple[str, object]] = (),
) -> bytes:
    """`Response:` first, then ActionID (when the action had one), then Message and fields,
    in Asterisk's order (astman_start_ack / astman_send_response_full)."""
    pairs: list[tuple[str, object]] = [("Response", status)]
    if action.action_id:
        pairs.append(("ActionID", action.action_id))
    if message is not None:
        pairs.append(("Message", message))
    pairs.extend(fields)
    return encode(pairs)


def error(action: Message, message: str) -> bytes:
    return response(action, "Error", message)


def command_output(action: Message, ok: bool, output: str) -> bytes:
    """Action: Command as Asterisk 14+ answers it: one `Output:` header per line."""
    lines = output.split("\n") if output else []
    if lines and lines[-1] == "":
        lines.pop()
    return response(
        action,
        "Success" if ok else "Error",
        "Command output follows",
        [("Output", line.rstrip("\r")) for line in lines],
    )


def event(
    name: str,
    privilege: frozenset[str] | Iterable[str],
    fields: Iterable[tuple[str, object]] = (),
    action_id: str = "",
) -> bytes:
    """`Event:`, its `Privilege:` classes and ",all" (as Asterisk lists them), fields."""
    pairs: list[tuple[str, object]] = [("Event", name)]
    classes = sorted(privilege)
    if classes:
        pairs.append(("Privilege", ",".join([*classes, "all"])))
    if action_id:
        pairs.append(("ActionID", action_id))
    pairs.extend(fields)
    return encode(pairs)


def list_event(name: str, action: Message, fields: Iterable[tuple[str, object]] = ()) -> bytes:
    """An entry answering a list action: Event, ActionID, fields (no Privilege)."""
    return event(name, (), fields, action.action_id)


def list_complete(name: str, action: Message, items: int) -> bytes:
    return list_event(name, action, [("EventList", "Complete"), ("ListItems", items)])


def list_start(action: Message, what: str) -> bytes:
    """The first answer to a list action: EventList before Message, as Asterisk 20 sends it."""
    pairs: list[tuple[str, object]] = [("Response", "Success")]
    if action.action_id:
        pairs.append(("ActionID", action.action_id))
    pairs += [("EventList", "start"), ("Message", f"{what} will follow")]
    return encode(pairs)
