"""Peer options that act on calls and registrations: parsed into typed fields, and a value we
cannot honour is a PeerOptionError that names the option (the loader adds file:line)."""

from __future__ import annotations

import pytest

from channels.sip.peers import Peer, PeerOptionError


def peer(**options: str) -> Peer:
    return Peer.from_options("6001", list(options.items()), realtime=False)


def test_defaults_are_chan_sips() -> None:
    p = peer()
    assert p.transport == ("udp",) and p.default_transport == "udp"
    assert p.dtmfmode == "rfc2833"
    assert (p.callerid, p.callerid_name, p.callerid_num) == ("", "", "")
    assert (p.language, p.rtptimeout) == ("", 0)


@pytest.mark.parametrize(
    ("value", "allowed", "default"),
    [
        ("tls", ("tls",), "tls"),
        ("TCP, udp", ("tcp", "udp"), "tcp"),
        ("udp,tcp,tls,udp", ("udp", "tcp", "tls"), "udp"),
        ("", ("udp",), "udp"),  # an empty realtime column is no value
    ],
)
def test_transport_list_first_is_the_default(
    value: str, allowed: tuple[str, ...], default: str
) -> None:
    p = peer(transport=value)
    assert (p.transport, p.default_transport) == (allowed, default)
    assert all(p.allows_transport(name.upper()) for name in allowed)
    assert not any(p.allows_transport(name) for name in {"udp", "tcp", "tls"} - set(allowed))


@pytest.mark.parametrize("value", ["ws", "udp,wss", "sctp", "udp,,tcp", "udp tcp"])
def test_bad_transport_names_the_option(value: str) -> None:
    with pytest.raises(PeerOptionError) as error:
        peer(transport=value)
    assert error.value.option == "transport"
    assert str(error.value).startswith("transport: ")
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize(
    ("value", "mode"),
    [("rfc2833", "rfc2833"), ("INFO", "info"), ("inband", "inband"), (" auto ", "auto")],
)
def test_dtmfmode_words(value: str, mode: str) -> None:
    assert peer(dtmfmode=value).dtmfmode == mode


@pytest.mark.parametrize("value", ["rfc4733", "shortinfo", "yes"])
def test_bad_dtmfmode_names_the_option(value: str) -> None:
    with pytest.raises(PeerOptionError) as error:
        peer(dtmfmode=value)
    assert error.value.option == "dtmfmode"


@pytest.mark.parametrize(
    ("value", "name", "number"),
    [
        ('"Alice Example" <1001>', "Alice Example", "1001"),
        ("Alice <1001>", "Alice", "1001"),
        ("<1001>", "", "1001"),
        ("+1 555 0100", "", "+1 555 0100"),
        ("Front desk", "Front desk", ""),
        ('"Bob \\"B\\" Jones" <2002>', 'Bob "B" Jones', "2002"),
    ],
)
def test_callerid_is_split_into_name_and_number(value: str, name: str, number: str) -> None:
    p = peer(callerid=value)
    assert (p.callerid, p.callerid_name, p.callerid_num) == (value, name, number)


@pytest.mark.parametrize(
    "value", ['"Alice <1001>', "Alice <1001", "Alice 1001>", "Alice <1001> x", 'Al"ice <1>']
)
def test_bad_callerid_names_the_option(value: str) -> None:
    with pytest.raises(PeerOptionError) as error:
        peer(callerid=value)
    assert error.value.option == "callerid"


@pytest.mark.parametrize("value", ["en", "fr", "pt_BR", "en-gb"])
def test_language(value: str) -> None:
    assert peer(language=value).language == value


@pytest.mark.parametrize("value", ["../../etc", "en/fr", "e n", "x" * 41])
def test_language_that_is_not_a_directory_name_is_refused(value: str) -> None:
    with pytest.raises(PeerOptionError) as error:
        peer(language=value)
    assert error.value.option == "language"


def test_rtptimeout_seconds() -> None:
    assert peer(rtptimeout="60").rtptimeout == 60
    assert peer(rtptimeout="0").rtptimeout == 0


@pytest.mark.parametrize("value", ["-1", "ten", "1.5"])
def test_bad_rtptimeout_names_the_option(value: str) -> None:
    with pytest.raises(PeerOptionError) as error:
        peer(rtptimeout=value)
    assert error.value.option == "rtptimeout"


def test_general_defaults_apply_and_the_peer_overrides_them() -> None:
    general = [("dtmfmode", "info"), ("language", "fr"), ("rtptimeout", "30")]
    p = Peer.from_options("6001", [("language", "de")], realtime=False, defaults=general)
    assert (p.dtmfmode, p.language, p.rtptimeout) == ("info", "de", 30)


def test_realtime_row_with_a_bad_value_is_refused_too() -> None:
    with pytest.raises(PeerOptionError) as error:
        Peer.from_options("7001", {"name": "7001", "dtmfmode": "bogus"}, realtime=True)
    assert error.value.option == "dtmfmode"
