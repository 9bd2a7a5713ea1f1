"""SIP peers as chan_sip reads them from a sip.conf section or a realtime `sippeers` row.

`Peer.from_options` turns option text into typed fields with chan_sip's defaults and word
lists (ast_true/ast_false, `nat=`, `insecure=`, `qualify=`); `Acl` is Asterisk's permit/deny
list (ast_append_ha / ast_apply_ha). Nothing here looks anything up: the caller finds the
section or row and hands over its options.

The options that act on a call (`transport`, `dtmfmode`, `callerid`, `language`,
`rtptimeout`) are checked here: a value we cannot honour raises `PeerOptionError`, whose
`option` names the option, so the configuration loader can point at its file and line.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from storage.identifiers import box_name_problem

_log = logging.getLogger(__name__)

__all__ = [
    "Acl",
    "AclRule",
    "Peer",
    "PeerOptionError",
    "parse_callerid",
    "parse_dtmfmode",
    "parse_language",
    "parse_mailboxes",
    "parse_rtptimeout",
    "parse_transports",
]

TRUE_WORDS = frozenset({"yes", "true", "y", "t", "1", "on"})
FALSE_WORDS = frozenset({"no", "false", "n", "f", "0", "off"})

NAT_WORDS = frozenset({"force_rport", "comedia", "auto_force_rport", "auto_comedia"})
DEFAULT_NAT = frozenset({"force_rport"})  # Asterisk 11 and later
DEFAULT_MAXMS = 2000  # qualify=yes (chan_sip DEFAULT_MAXMS)
DEFAULT_QUALIFYFREQ = 60  # seconds (chan_sip DEFAULT_QUALIFYFREQ)
DEFAULT_VMEXTEN = "asterisk"  # sip.h DEFAULT_VMEXTEN
PEER_TYPES = ("friend", "peer", "user")
TRANSPORTS = ("udp", "tcp", "tls")  # the ones we listen on; chan_sip also knows ws, wss
DTMF_MODES = ("rfc2833", "info", "inband", "auto")
DEFAULT_DTMFMODE = "rfc2833"  # chan_sip's default
_LANGUAGE = re.compile(r"[A-Za-z0-9_-]{1,40}")  # a sounds directory name, never a path
_DIGITS = re.compile(r"[0-9]+")


class PeerOptionError(ValueError):
    """A peer option whose value we cannot honour; `option` is its name (for file:line)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


# -- ACL -------------------------------------------------------------------------------


def _parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as Asterisk compares it: IPv4-mapped IPv6 is taken as IPv4."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class AclRule:
    """One permit or deny entry: `address & mask == network` selects it."""

    permit: bool
    version: int
    network: int
    mask: int

    def matches(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return address.version == self.version and int(address) & self.mask == self.network

    @classmethod
    def parse(cls, sense: str, text: str) -> AclRule:
        """`addr[/mask]` where mask is a prefix length or a (possibly non-contiguous) dotted
        IPv4 mask; a leading `!` inverts the sense (ast_append_ha)."""
        sense = sense.strip().lower()
        if sense not in ("permit", "deny"):
            raise ValueError(f"unknown ACL sense {sense!r}")
        permit = sense == "permit"
        text = text.strip()
        if text.startswith("!"):
            permit = not permit
            text = text[1:].strip()
        address_text, slash, mask_text = text.partition("/")
        try:
            address = _parse_address(address_text)
        except ValueError:
            raise ValueError(f"bad ACL address {text!r}") from None
        bits = address.max_prefixlen
        full = (1 << bits) - 1
        if not slash:
            mask = full
        elif mask_text.strip().isdigit():
            prefix = int(mask_text)
            if prefix > bits:
                raise ValueError(f"bad ACL prefix length {text!r}")
            mask = full ^ (full >> prefix)
        elif address.version == 4:
            try:
                mask = int(ipaddress.IPv4Address(mask_text.strip()))
            except ValueError:
                raise ValueError(f"bad ACL netmask {text!r}") from None
        else:
            raise ValueError(f"bad ACL netmask {text!r}")
        return cls(permit, address.version, int(address) & mask, mask)


@dataclass(frozen=True)
class Acl:
    """An ordered permit/deny list with ast_apply_ha's meaning.

    Every rule is tried in order and the last one that matches decides; an address no rule
    matches, or any address when there are no rules, is allowed. Rules of the other address
    family never match.
    """

    rules: tuple[AclRule, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[tuple[str, str]]) -> Acl:
        """From `(sense, value)` pairs in configuration order; a value may hold a
        comma-separated list (`permit=10.0.0.0/8,192.168.0.0/16`)."""
        rules: list[AclRule] = []
        for sense, value in entries:
            for item in value.split(","):
                if item.strip():
                    rules.append(AclRule.parse(sense, item))
        return cls(tuple(rules))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def allows(self, address: str) -> bool:
        """Whether `address` (IPv4, IPv6, bracketed or mapped) passes the list.

        A string that is not an IP address (a host name) passes only an empty list.
        """
        if not self.rules:
            return True
        try:
            parsed = _parse_address(address)
        except ValueError:
            return False
        allowed = True
        for rule in self.rules:
            if rule.matches(parsed):
                allowed = rule.permit
        return allowed


# -- option words ------------------------------------------------------------------------


def _bool(value: str | None, default: bool) -> bool:
    """ast_true / ast_false; anything else keeps the default, as chan_sip's flag parsing."""
    if value is None:
        return default
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return default


def _int(value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value.strip())
    except ValueError:
        return default


def parse_mailboxes(value: str) -> list[tuple[str, str]]:
    """`1234@default,1233@other` (or `&`-separated, as 1.4 wrote it) as (mailbox, context)
    pairs; a mailbox without `@context` is in `default`."""
    boxes: list[tuple[str, str]] = []
    for item in value.replace("&", ",").split(","):
        item = item.strip()
        if not item:
            continue
        mailbox, _, context = item.partition("@")
        mailbox, context = mailbox.strip(), context.strip() or "default"
        if not mailbox:
            continue
        problem = box_name_problem(mailbox) or box_name_problem(context)
        if problem is not None:
            # From sip.conf or a sippeers row: such a name would form a `dir` out of the spool.
            _log.warning("peer mailbox %r ignored: not a valid mailbox@context (%s)", item, problem)
            continue
        boxes.append((mailbox, context))
    return boxes


def parse_nat(value: str) -> frozenset[str]:
    """sip.conf `nat=`: `yes` is force_rport,comedia; `no` is none; else a list of words."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return frozenset({"force_rport", "comedia"})
    if word in FALSE_WORDS or word == "never":
        return frozenset()
    if word == "route":  # chan_sip 1.4: use the source address, without rport
        return frozenset({"force_rport"})
    return frozenset(part.strip() for part in word.split(",") if part.strip() in NAT_WORDS)


def parse_insecure(value: str) -> frozenset[str]:
    """sip.conf `insecure=` as chan_sip's set_insecure_flags: `very` is port,invite, a true
    word is port (both deprecated), a false word is none, else `port`/`invite` words."""
    word = value.strip().lower()
    if not word:
        return frozenset()
    if word == "very":
        return frozenset({"port", "invite"})
    if word in TRUE_WORDS:
        return frozenset({"port"})
    if word in FALSE_WORDS:
        return frozenset()
    return frozenset(part.strip() for part in word.split(",") if part.strip() in ("port", "invite"))


def parse_qualify(value: str) -> int:
    """sip.conf `qualify=` as the maximum round trip in ms: yes is 2000, no (or junk) is 0."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return DEFAULT_MAXMS
    if word in FALSE_WORDS:
        return 0
    number = _int(word, 0)
    return number if number > 0 else 0


def parse_transports(value: str) -> tuple[str, ...]:
    """sip.conf `transport=udp,tcp,tls`: the allowed transports, the first the default.

    ws and wss are chan_sip words we do not serve, so they are refused like unknown ones.
    """
    words = [word.strip().lower() for word in value.split(",")]
    if not all(words):
        raise PeerOptionError("transport", f"empty item in {value!r}")
    for word in words:
        if word in ("ws", "wss"):
            raise PeerOptionError("transport", f"{word} is not supported (udp, tcp, tls)")
        if word not in TRANSPORTS:
            raise PeerOptionError("transport", f"unknown transport {word!r} (udp, tcp, tls)")
    return tuple(dict.fromkeys(words))


def parse_dtmfmode(value: str) -> str:
    """sip.conf `dtmfmode=`: rfc2833, info, inband or auto."""
    word = value.strip().lower()
    if word not in DTMF_MODES:
        raise PeerOptionError("dtmfmode", f"{value!r} is not one of {', '.join(DTMF_MODES)}")
    return word


def parse_callerid(value: str) -> tuple[str, str]:
    """sip.conf `callerid=` as (name, number), the forms ast_callerid_split accepts:
    `"Name" <number>`, `Name <number>`, `<number>`, a bare number or a bare name."""
    text = value.strip()
    if not text:
        return "", ""
    if "<" in text or ">" in text:
        start, end = text.rfind("<"), text.rfind(">")
        if start < 0 or end < start or text[end + 1 :].strip():
            raise PeerOptionError("callerid", f'{value!r} is not "Name" <number>')
        number = text[start + 1 : end].strip()
        name = text[:start].strip()
    elif re.fullmatch(r"[0-9+*#()\- ]+", text):
        return "", text
    else:
        name, number = text, ""
    if name.startswith('"'):
        if len(name) < 2 or not name.endswith('"'):
            raise PeerOptionError("callerid", f"unbalanced quotes in {value!r}")
        name = name[1:-1].replace('\\"', '"')
    elif '"' in name:
        raise PeerOptionError("callerid", f"stray quote in {value!r}")
    if "<" in number or ">" in number:
        raise PeerOptionError("callerid", f'{value!r} is not "Name" <number>')
    return name.strip(), number


def parse_language(value: str) -> str:
    """sip.conf `language=`: a sounds directory name such as en, fr or pt_BR."""
    text = value.strip()
    if not _LANGUAGE.fullmatch(text):
        raise PeerOptionError("language", f"{value!r} is not a language name like en or pt_BR")
    return text


def parse_rtptimeout(value: str) -> int:
    """sip.conf `rtptimeout=`: seconds without RTP before a call is hung up, 0 = never."""
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        raise PeerOptionError("rtptimeout", f"{value!r} is not a number of seconds")
    return int(text)


def _pairs(options: Mapping[str, str] | Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Options as (lower-case name, value) pairs in order, multi-values expanded.

    A realtime row (mapping) may hold several values in one column (`a;b`): a mapping with a
    `getall` method (storage's Row) gives them; file sections come as pairs with repeats.
    """
    if isinstance(options, Mapping):
        pairs: list[tuple[str, str]] = []
        getall = getattr(options, "getall", None)
        for name, value in options.items():
            values = getall(name) if callable(getall) else [value]
            pairs += [(name.lower(), str(item)) for item in values]
        return pairs
    return [(name.lower(), value) for name, value in options]


@dataclass
class Peer:
    """A SIP peer with chan_sip's defaults. `options` keeps every option (last value wins)."""

    name: str
    type: str = "friend"
    host: str = ""
    secret: str = ""
    md5secret: str = ""
    context: str = "default"
    mailbox: list[tuple[str, str]] = field(default_factory=list)
    vmexten: str = DEFAULT_VMEXTEN
    subscribemwi: bool = False
    buggymwi: bool = False
    insecure: frozenset[str] = frozenset()
    acl: Acl = field(default_factory=Acl)
    contactacl: Acl = field(default_factory=Acl)
    nat: frozenset[str] = DEFAULT_NAT
    qualify: int = 0  # max round trip in ms; 0 = off
    qualifyfreq: int = DEFAULT_QUALIFYFREQ  # seconds
    defaultuser: str = ""
    fromdomain: str = ""
    fromuser: str = ""
    # For calls (the integrator applies them): callerid is the option text, split into
    # callerid_name / callerid_num; language "" means the server's; rtptimeout 0 means never.
    callerid: str = ""
    callerid_name: str = ""
    callerid_num: str = ""
    language: str = ""
    rtptimeout: int = 0
    dtmfmode: str = DEFAULT_DTMFMODE
    transport: tuple[str, ...] = ("udp",)  # allowed transports; the first is the default
    supportpath: bool = False
    realtime: bool = False
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(
        cls,
        name: str,
        options: Mapping[str, str] | Sequence[tuple[str, str]],
        realtime: bool,
        defaults: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> Peer:
        """Build from a sip.conf section's items (pairs, repeats kept) or a sippeers row.

        `defaults` are [general] options chan_sip copies into every peer (context, nat,
        qualify, vmexten, language, ...); the peer's own options override them. ACL entries
        (permit/deny, contactpermit/contactdeny) apply in the order given. A bad ACL entry is
        a ValueError, as chan_sip refuses to build such a peer; a bad transport, dtmfmode,
        callerid, language or rtptimeout is a PeerOptionError naming the option (chan_sip
        would warn and carry on; we do not run a peer other than as configured). Other bad
        values keep the default, as chan_sip's flag parsing does.
        """
        own = _pairs(options)
        pairs = (_pairs(defaults) if defaults is not None else []) + own
        last: dict[str, str] = {}
        for key, value in pairs:
            last[key] = value.strip()
        if isinstance(options, Mapping):
            raw = {key.lower(): str(value) for key, value in options.items()}
        else:
            raw = {key.lower(): value for key, value in options}
        peer = cls(name=name, realtime=realtime, options=raw)

        def text(key: str, default: str = "") -> str:
            value = last.get(key)
            return default if value is None or value == "" else value

        peer_type = text("type", "friend").lower()
        peer.type = peer_type if peer_type in PEER_TYPES else "friend"
        peer.host = text("host")
        peer.secret = last.get("secret", "")
        peer.md5secret = last.get("md5secret", "")
        peer.context = text("context", "default")
        peer.mailbox = parse_mailboxes(last.get("mailbox", ""))
        peer.vmexten = text("vmexten", DEFAULT_VMEXTEN)
        peer.subscribemwi = _bool(last.get("subscribemwi"), False)
        peer.buggymwi = _bool(last.get("buggymwi"), False)
        peer.insecure = parse_insecure(last.get("insecure", ""))
        # [general] ACLs are not peer defaults in chan_sip, so only the peer's own count.
        peer.acl = Acl.parse((key, value) for key, value in own if key in ("permit", "deny"))
        peer.contactacl = Acl.parse(
            (key[len("contact") :], value)
            for key, value in own
            if key in ("contactpermit", "contactdeny")
        )
        if "nat" in last:
            peer.nat = parse_nat(last["nat"])
        peer.qualify = parse_qualify(last.get("qualify", "no"))
        peer.qualifyfreq = max(1, _int(last.get("qualifyfreq"), DEFAULT_QUALIFYFREQ))
        peer.defaultuser = text("defaultuser") or text("username")
        peer.fromdomain = text("fromdomain")
        peer.fromuser = text("fromuser")
        peer.callerid = text("callerid")
        peer.callerid_name, peer.callerid_num = parse_callerid(peer.callerid)
        peer.language = parse_language(text("language")) if text("language") else ""
        peer.rtptimeout = parse_rtptimeout(text("rtptimeout", "0"))
        peer.dtmfmode = parse_dtmfmode(text("dtmfmode", DEFAULT_DTMFMODE))
        peer.transport = parse_transports(text("transport", "udp"))
        peer.supportpath = _bool(last.get("supportpath"), False)
        return peer

    @property
    def default_transport(self) -> str:
        """The transport requests to this peer use unless it registered over another."""
        return self.transport[0]

    def allows_transport(self, name: str) -> bool:
        """Whether a request from this peer may arrive over `name` (udp, tcp, tls)."""
        return name.lower() in self.transport

    @property
    def dynamic(self) -> bool:
        """host=dynamic: the peer's address comes from REGISTER."""
        return self.host.strip().lower() == "dynamic"

    @property
    def can_register(self) -> bool:
        """chan_sip accepts REGISTER only for peers (or friends) with host=dynamic."""
        return self.dynamic and self.type in ("peer", "friend")

    @property
    def requires_auth(self) -> bool:
        """chan_sip challenges only peers that have a secret or md5secret."""
        return bool(self.secret or self.md5secret)

    def force_rport_for(self, via_host: str, source_ip: str) -> bool:
        """Whether requests to this peer go to the packet's source rather than its Contact:
        force_rport, or auto_force_rport when the Via host shows a NAT in between."""
        if "force_rport" in self.nat:
            return True
        if "auto_force_rport" in self.nat:
            return via_host.strip("[]").lower() != source_ip.strip("[]").lower()
        return False
