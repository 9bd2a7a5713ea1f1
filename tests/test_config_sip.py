"""sip.conf and rtp.conf: bad values are `file:line` errors, addresses parse as chan_sip's."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.conffile import ConfigError, parse_config_text
from voicemail.config import SipSettings, default_maxcalls, load_server_config, sip_settings
from voicemail.config_checks import parse_host_port


def sip(text: str, rtp: str = "") -> SipSettings:
    return sip_settings(
        parse_config_text(text, "sip.conf"), parse_config_text(rtp, "rtp.conf"), Path("/etc/x")
    )


def error(text: str, rtp: str = "") -> str:
    with pytest.raises(ConfigError) as info:
        sip(text, rtp)
    return str(info.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("bindport=abc", '"bindport" must be an integer, got "abc"'),
        ("bindport=70000", '"bindport" must be at most 65535'),
        ("rtptimeout=x", '"rtptimeout" must be an integer, got "x"'),
        ("tlsbindaddr=[::1", "\"tlsbindaddr\" has a '[' without ']'"),
        ("tcpbindaddr=127.0.0.1:http", '"tcpbindaddr" has a port that is not a number'),
        ("bindaddr=localhost", '"bindaddr" is not a numeric IPv4 or IPv6 address'),
        ("tcpenable=maybe", '"tcpenable" must be yes or no'),
        ("nat=force_rport,comedai", '"nat" must be yes, no or a list of'),
        ("rtautoclear=soon", '"rtautoclear" must be an integer'),
        ("maxcalls=0", '"maxcalls" must be at least 1'),
        ("maxcallsperip=-1", '"maxcallsperip" must be at least 0'),
        ("dtmfmode=rfc4733", '"dtmfmode" must be one of rfc2833, info'),
    ],
)
def test_bad_general_values_are_errors_at_their_line(line: str, message: str) -> None:
    assert error(f"[general]\ncontext=default\n{line}\n").startswith(f"sip.conf:3: {message}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", None)),
        ("127.0.0.1:5070", ("127.0.0.1", 5070)),
        ("::", ("::", None)),
        ("::1", ("::1", None)),
        ("fe80::1:5060", ("fe80::1:5060", None)),  # bare IPv6: all host, as in Asterisk
        ("[::]", ("::", None)),
        ("[::1]:5061", ("::1", 5061)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_addresses_parse_like_asterisk(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_host_port(text) == expected


def test_tls_on_ipv6_any_and_tcp_address_parts() -> None:
    settings = sip(
        "[general]\nbindaddr=127.0.0.1\nbindport=5070\ntcpenable=yes\ntcpbindaddr=[::1]:5080\n"
        "tlsenable=yes\ntlsbindaddr=::\n"
    )
    assert (settings.bindaddr, settings.bindport) == ("127.0.0.1", 5070)
    assert (settings.tcpbindaddr, settings.tcpport, settings.tcp_host) == ("::1", 5080, "::1")
    assert (settings.tlsbindaddr, settings.tlsport, settings.tls_host) == ("::", 5061, "::")


def test_port_defaults_follow_chan_sip() -> None:
    plain = sip("[general]\nbindaddr=10.0.0.1:5062\ntcpenable=yes\n")
    assert (plain.bindaddr, plain.bindport) == ("10.0.0.1", 5062)
    assert (plain.tcp_host, plain.tcpport) == ("10.0.0.1", None)  # TCP shares UDP's port
    assert (plain.tls_host, plain.tlsport) == ("10.0.0.1", 5061)
    assert sip("[general]\nbindaddr=10.0.0.1:5062\nbindport=5064\n").bindport == 5064
    assert sip("[general]\ntcpbindaddr=0.0.0.0\n").tcpport == 5060


def test_rtp_conf_values_are_checked() -> None:
    assert error("", "[general]\nrtpstart=ten\n").startswith('rtp.conf:2: "rtpstart" must be')
    assert error("", "[general]\nrtpstart=20000\nrtpend=10000\n").startswith(
        "rtp.conf:3: rtpstart (20000) must be below rtpend (10000)"
    )


def test_maxcalls_default_is_sized_to_the_machine() -> None:
    assert default_maxcalls(10000, 20000, cpus=2) == 800
    assert default_maxcalls(10000, 10999, cpus=8) == 500  # half the RTP port range
    settings = sip("[general]\n", "[general]\nrtpstart=10000\nrtpend=10199\n")
    assert settings.maxcalls == 100 and settings.maxcallsperip == 0
    assert sip("[general]\nmaxcalls=50\nmaxcallsperip=5\n").maxcalls == 50


def test_unknown_general_options_are_warnings_with_file_and_line() -> None:
    settings = sip("[general]\nbindaddr=127.0.0.1\nbindprot=5060\nsrvlookup=yes\n[generl]\n")
    assert settings.warnings == [
        'sip.conf:3: "bindprot": unknown option',
        'sip.conf:4: "srvlookup": not implemented yet',
        "sip.conf:5: section [generl] is read as a peer; did you mean [general]?",
    ]


def test_peer_options_keep_their_file_and_line() -> None:
    settings = sip(
        "[general]\n[tmpl](!)\nqualify=yes\n[6001](tmpl)\ntype=friend\nhost=dynamic\n"
        "qualify=sometimes\n"
    )
    assert settings.peers == [
        (
            "6001",
            [("qualify", "yes"), ("type", "friend"), ("host", "dynamic"), ("qualify", "sometimes")],
        )
    ]
    assert settings.peer_lines[("6001", "host")] == ("sip.conf", 6)
    assert settings.peer_lines[("6001", "qualify")] == ("sip.conf", 7)  # the last one counts
    err = settings.peer_error("6001", "Qualify", "bad qualify 'sometimes'")
    assert str(err) == "sip.conf:7: peer [6001]: bad qualify 'sometimes'"


def test_bad_sip_conf_is_a_config_error_from_the_loader(tmp_path: Path) -> None:
    (tmp_path / "sip.conf").write_text("[general]\ntlsbindaddr=::\nbindport=abc\n")
    with pytest.raises(ConfigError, match=r"sip\.conf:3: \"bindport\""):
        load_server_config(tmp_path)


def test_the_command_reports_a_bad_sip_value_without_a_traceback(tmp_path: Path) -> None:
    from .server import run_cli

    (tmp_path / "sip.conf").write_text("[general]\nbindaddr=127.0.0.1\nrtptimeout=x\n")
    result = run_cli("reload", "-C", str(tmp_path), timeout=30)
    assert result.returncode == 1
    assert f'{tmp_path / "sip.conf"}:3: "rtptimeout" must be an integer' in result.stderr
    assert "Traceback" not in result.stderr


# -- abuse limits (channels/sip/limits.py) ---------------------------------------------------


def test_abuse_limits_default_and_parse() -> None:
    guard = sip("[general]\n").guard
    assert guard.register_rate == 50 and guard.tcp_auth_timeout == 30
    assert guard.tcp_auth_limit == 100 and guard.flood_exempt == ()
    guard = sip(
        "[general]\nregisterrate=5\nregisterburst=20\nrequestrate=0\nfloodblock=30\n"
        "floodexempt=192.0.2.1, 10.0.0.0/8\nfloodexempt=2001:db8::/32\n"
        "authfailuresperip=3\nauthfailuresperuser=7\nauthfailurewindow=120\nauthlockout=300\n"
        "tcpmaxconnections=50\ntcpmaxconnectionsperip=5\ntcpauthlimit=10\ntcpauthtimeout=5\n"
        "tcpidletimeout=90\n"
    ).guard
    assert (guard.register_rate, guard.register_burst, guard.request_rate) == (5, 20, 0)
    assert guard.flood_block == 30
    assert guard.flood_exempt == ("192.0.2.1", "10.0.0.0/8", "2001:db8::/32")
    assert (guard.auth_failures_per_ip, guard.auth_failures_per_user) == (3, 7)
    assert (guard.auth_window, guard.auth_lockout) == (120, 300)
    assert (guard.tcp_max_connections, guard.tcp_max_per_ip) == (50, 5)
    assert (guard.tcp_auth_limit, guard.tcp_auth_timeout, guard.tcp_idle_timeout) == (10, 5, 90)
    assert sip("[general]\ntcpauthtimeout=5\n").warnings == []  # implemented, no warning


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("floodexempt=192.0.2.1, pbx.example.com", "'pbx.example.com' is not an IP address"),
        ("registerburst=0", '"registerburst" must be at least 1'),
        ("tcpauthtimeout=soon", '"tcpauthtimeout" must be an integer'),
        ("authfailuresperuser=0", '"authfailuresperuser" must be at least 1'),
    ],
)
def test_bad_abuse_limits_are_errors_at_their_line(line: str, message: str) -> None:
    assert message in error(f"[general]\ncontext=default\n{line}\n")
    assert error(f"[general]\ncontext=default\n{line}\n").startswith("sip.conf:3: ")
