"""End to end: a sipp phone registers with a password against a realtime `sippeers` row.

The real server runs with `sippeers => odbc,asterisk,sippeers`; sipp sends REGISTER, answers
the digest challenge itself (its `[authentication]` keyword), and we check what a user of
chan_sip would check: the codes and headers sipp got, and the columns of the peer's row.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from channels.sip.registration import NEGATIVE_TTL
from storage.odbc import OdbcPool
from storage.realtime_tables import sippeers_table
from storage.schema import create_tables

from . import sipp
from .dbbackends import Backend
from .server import RunningServer, free_port, start_server, write_config

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True),
]

# start(general="...", sections="...") starts the server; see the `start` fixture.
Starter = Callable[..., RunningServer]

USER_AGENT = "sipp-register-e2e"
EXPIRES = 120


# -- the server and its sippeers table ---------------------------------------------------


def create_sippeers(backend: Backend) -> None:
    """chan_sip's sippeers table, as `voicemail db init` does not create it."""

    async def create() -> None:
        pool = OdbcPool(backend.connection_class())
        await pool.start()
        try:
            await create_tables(pool, [sippeers_table()])
        finally:
            await pool.close()

    asyncio.run(create())


def add_peer(backend: Backend, name: str, **columns: str) -> None:
    values = {"name": name, "type": "friend", "host": "dynamic", "context": "default", **columns}
    names = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    backend.sql(f"INSERT INTO sippeers ({names}) VALUES ({marks})", *values.values())


def peer_row(backend: Backend, name: str) -> dict[str, object]:
    rows = backend.sql(
        "SELECT ipaddr, port, regseconds, defaultuser, fullcontact, regserver, useragent, "
        "lastms FROM sippeers WHERE name = ?",
        name,
    )
    assert len(rows) == 1
    return rows[0]


@pytest.fixture
def start(backend: Backend, tmp_path: Path) -> Iterator[Starter]:
    """Start the server with extra sip.conf [general] lines and static peer sections."""
    running: list[RunningServer] = []

    def starter(general: str = "", sections: str = "") -> RunningServer:
        directory = write_config(tmp_path / "etc", backend, realtime=("sippeers",))
        with (directory / "sip.conf").open("a") as sip_conf:
            sip_conf.write(general + "\n" + sections)
        create_sippeers(backend)
        server = start_server(directory)
        running.append(server)
        return server

    yield starter
    for server in running:
        assert server.stop() == 0, server.log()
        assert "Traceback" not in server.log(), server.log()


# -- sipp --------------------------------------------------------------------------------


def register(user: str, cseq: int, expires: int = EXPIRES, auth: str = "") -> str:
    """One REGISTER from sipp's address; `auth` is an `[authentication ...]` line."""
    lines = [
        "REGISTER sip:[remote_ip]:[remote_port] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        f"From: <sip:{user}@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]",
        f"To: <sip:{user}@[remote_ip]:[remote_port]>",
        "Call-ID: [call_id]",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@[local_ip]:[local_port]>",
        f"Expires: {expires}",
        f"User-Agent: {USER_AGENT}",
        "Max-Forwards: 70",
    ]
    if auth:
        lines.append(auth)
    lines.append("Content-Length: 0")
    return '<send retrans="500"><![CDATA[\n' + "\n".join(lines) + "\n\n]]></send>\n"


def authenticated_register(
    user: str, password: str, cseq: int, expires: int = EXPIRES, code: int = 200
) -> str:
    """REGISTER, its 401 challenge, and the REGISTER with sipp's digest answer."""
    return (
        register(user, cseq, expires)
        + '<recv response="401" auth="true"/>\n'
        + register(user, cseq + 1, expires, f"[authentication username={user} password={password}]")
        + f'<recv response="{code}"/>\n'
    )


OPTIONS_ANSWER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="options answer">
<recv request="OPTIONS"/>
<pause milliseconds="200"/>
<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port]>
Content-Length: 0

]]></send>
</scenario>
"""


@dataclass
class Exchange:
    """What sipp sent and received (its -trace_msg log), message by message."""

    messages: list[str]

    def received(self, start: str) -> list[str]:
        return [m for m in self.messages if m.startswith(start)]


def header(message: str, name: str) -> str | None:
    match = re.search(rf"^{re.escape(name)}\s*:\s*(.*?)\r?$", message, re.MULTILINE | re.IGNORECASE)
    return match.group(1) if match else None


def run_sipp(
    workdir: Path,
    name: str,
    steps: str,
    server: RunningServer,
    port: int,
    *,
    out_of_call: str = "",
    timeout: int = 15,
) -> Exchange:
    """Run one sipp UAC scenario from 127.0.0.1:`port` (the phone's registered address)."""
    result = sipp.run_sipp(
        workdir,
        sipp.scenario(name, steps),
        server.target,
        name=name,
        port=port,
        timeout=timeout,
        trace_msg=True,
        out_of_call=out_of_call or None,
    )
    assert result.returncode == 0, (
        f"sipp {name} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-2000:]}\n{result.messages[-4000:]}\n--- server ---\n"
        f"{server.log()[-4000:]}"
    )
    return Exchange(sipp.traced_messages(result.messages))


# -- tests -------------------------------------------------------------------------------


def only(messages: list[str]) -> str:
    assert len(messages) == 1, messages
    return messages[0]


def test_phone_registers_with_password_and_the_row_gets_its_address(
    start: Starter, backend: Backend, tmp_path: Path
) -> None:
    server = start()
    add_peer(backend, "6001", secret="secret")
    port = free_port()
    before = int(time.time())
    exchange = run_sipp(
        tmp_path / "sipp", "register", authenticated_register("6001", "secret", 1), server, port
    )
    after = int(time.time())

    challenge = only(exchange.received("SIP/2.0 401"))
    www = header(challenge, "WWW-Authenticate") or ""
    assert www.startswith("Digest ")
    assert 'realm="asterisk"' in www
    assert re.search(r'nonce="[^"]+"', www)
    ok = only(exchange.received("SIP/2.0 200"))
    assert header(ok, "Contact") == f"<sip:6001@127.0.0.1:{port}>;expires={EXPIRES}"
    assert header(ok, "Expires") == str(EXPIRES)

    row = peer_row(backend, "6001")
    assert row["ipaddr"] == "127.0.0.1"
    assert int(row["port"]) == port
    assert before + EXPIRES <= int(row["regseconds"]) <= after + EXPIRES
    assert row["fullcontact"] == f"sip:6001@127.0.0.1:{port}"
    assert row["useragent"] == USER_AGENT
    assert row["defaultuser"] == "6001"
    assert int(row["lastms"]) == 0
    assert (row["regserver"] or "") == ""
    server.wait_for_log("peer 6001 registered")


def test_wrong_password_is_forbidden_and_repeated_failures_block_the_address(
    start: Starter, backend: Backend, tmp_path: Path
) -> None:
    server = start()
    add_peer(backend, "6001", secret="secret")
    attempts = 10  # FailureLimiter's default max_failures (within its 60 s window)
    steps = "".join(
        authenticated_register("6001", "wrong", 2 * n + 1, code=403) for n in range(attempts)
    )
    # Now blocked: even the right password gets no challenge, only 403.
    steps += register("6001", 2 * attempts + 1) + '<recv response="403"/>\n'
    exchange = run_sipp(tmp_path / "sipp", "wrong", steps, server, free_port())

    refusals = exchange.received("SIP/2.0 403")
    assert len(refusals) == attempts + 1
    assert all(not r.startswith("SIP/2.0 403 Too many") for r in refusals[:attempts])
    assert refusals[-1].startswith("SIP/2.0 403 Too many failed attempts")
    assert len(exchange.received("SIP/2.0 401")) == attempts
    assert not exchange.received("SIP/2.0 200")
    assert (peer_row(backend, "6001")["ipaddr"] or "") == ""


def test_unregister_clears_the_row_as_chan_sip_does(
    start: Starter, backend: Backend, tmp_path: Path
) -> None:
    server = start()
    add_peer(backend, "6001", secret="secret")
    port = free_port()
    run_sipp(
        tmp_path / "sipp", "register", authenticated_register("6001", "secret", 1), server, port
    )
    assert peer_row(backend, "6001")["ipaddr"] == "127.0.0.1"

    exchange = run_sipp(
        tmp_path / "sipp",
        "unregister",
        authenticated_register("6001", "secret", 1, expires=0),
        server,
        port,
    )
    ok = only(exchange.received("SIP/2.0 200"))
    assert header(ok, "Expires") == "0"
    assert header(ok, "Contact") is None
    row = peer_row(backend, "6001")
    assert row["ipaddr"] == ""
    assert int(row["port"]) == 0
    assert int(row["regseconds"]) == 0
    assert row["fullcontact"] == ""
    assert row["useragent"] == ""
    assert int(row["lastms"]) == 0
    server.wait_for_log("peer 6001 unregistered")


def test_peer_added_while_the_server_runs_registers_at_once(
    start: Starter, backend: Backend, tmp_path: Path
) -> None:
    server = start()
    port = free_port()
    # Not there yet: challenged like any name (alwaysauthreject), then refused.
    run_sipp(
        tmp_path / "sipp",
        "unknown",
        authenticated_register("6002", "secret", 1, code=403),
        server,
        port,
    )
    add_peer(backend, "6002", secret="secret")
    # The failed lookup is remembered for NEGATIVE_TTL seconds (a scanner costs one query per
    # name per window); after that the new row is read.
    time.sleep(NEGATIVE_TTL + 0.2)
    exchange = run_sipp(
        tmp_path / "sipp", "register", authenticated_register("6002", "secret", 1), server, port
    )
    ok = only(exchange.received("SIP/2.0 200"))
    assert header(ok, "Contact") == f"<sip:6002@127.0.0.1:{port}>;expires={EXPIRES}"
    row = peer_row(backend, "6002")
    assert (row["ipaddr"], int(row["port"])) == ("127.0.0.1", port)


def test_md5secret_column_authenticates_in_the_configured_realm(
    start: Starter, backend: Backend, tmp_path: Path
) -> None:
    server = start(general="realm=voicemail.example\n")
    md5secret = hashlib.md5(b"6003:voicemail.example:secret").hexdigest()
    add_peer(backend, "6003", md5secret=md5secret)
    port = free_port()
    exchange = run_sipp(
        tmp_path / "sipp", "register", authenticated_register("6003", "secret", 1), server, port
    )
    assert 'realm="voicemail.example"' in (
        header(only(exchange.received("SIP/2.0 401")), "WWW-Authenticate") or ""
    )
    only(exchange.received("SIP/2.0 200"))
    assert int(peer_row(backend, "6003")["port"]) == port


def test_static_sip_conf_peer_registers(start: Starter, backend: Backend, tmp_path: Path) -> None:
    server = start(sections="[6100]\ntype=friend\nhost=dynamic\nsecret=x\n")
    port = free_port()
    exchange = run_sipp(
        tmp_path / "sipp", "register", authenticated_register("6100", "x", 1), server, port
    )
    ok = only(exchange.received("SIP/2.0 200"))
    assert header(ok, "Contact") == f"<sip:6100@127.0.0.1:{port}>;expires={EXPIRES}"
    assert backend.sql("SELECT name FROM sippeers") == []
    server.wait_for_log("peer 6100 registered")


def test_cached_realtime_peer_is_qualified_and_lastms_written(
    start: Starter, backend: Backend, tmp_path: Path
) -> None:
    server = start(general="rtcachefriends=yes\n")
    add_peer(backend, "6004", secret="secret", qualify="yes")
    port = free_port()
    # After its REGISTER the phone stays up 3 s; the server's OPTIONS (sent within a second,
    # new Call-ID) is answered by the out-of-call scenario, 200 ms late so the time shows.
    exchange = run_sipp(
        tmp_path / "sipp",
        "qualify",
        authenticated_register("6004", "secret", 1) + '<pause milliseconds="3000"/>\n',
        server,
        port,
        out_of_call=OPTIONS_ANSWER,
    )
    options = only(exchange.received("OPTIONS "))
    assert options.startswith(f"OPTIONS sip:6004@127.0.0.1:{port} SIP/2.0")
    deadline = time.monotonic() + 3
    while True:
        lastms = int(peer_row(backend, "6004")["lastms"])
        if lastms != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # sipp's pause counts whole milliseconds of its own clock and the server truncates to
    # whole milliseconds (as Asterisk does), so a 200 ms pause can read as 199 (seen in CI).
    assert 195 <= lastms < 2000, server.log()
