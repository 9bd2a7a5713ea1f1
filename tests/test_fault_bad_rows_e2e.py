"""Malformed rows in the realtime tables: refused one by one, the rest keeps working.

The voicemail, sippeers and extensions tables are edited by hand, by web panels and by other
servers. A row that cannot be right (a mailbox in context `../x`, an absurd maxmsg, a mail
address with a CR LF in it, a peer whose host or port is garbage, a dial plan row with
priority 0 or an application name that is no name) is logged with its table and key and
refused where it is read (storage/realtime_rows.py): a lookup of it finds nothing. The
server does not crash or hang, answers OPTIONS, and deposits to good rows (one with NULL
columns among them) are stored.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .audio import test_signal
from .dbbackends import Backend
from .server import RunningServer, free_port, run_cli, start_server, write_config
from .softphone import Softphone, SoftphoneError
from .test_deposit_e2e import rows
from .test_fault_sigkill_e2e import greeting_of
from .test_harness_deposit_e2e import CANDIDATES
from .test_hostile_e2e import assert_options_answered
from .test_register_e2e import add_peer, authenticated_register, create_sippeers
from .test_register_e2e import run_sipp as register_sipp

pytestmark = pytest.mark.timeout(300)

EXTENSIONS = """[default]
exten => _1XXX,1,VoiceMail(${EXTEN}@default,u)
same => n,Hangup()
exten => _200X,1,VoiceMail(${EXTEN}@default,u)
same => n,Hangup()
exten => 2004,1,VoiceMail(2004@../x,u)
same => n,Hangup()
switch => Realtime/default@extensions
"""

# (context, mailbox, extra columns, what the log must say about it)
BAD_MAILBOXES = [
    ("default", "2001", {"maxmsg": 99999999}, "column maxmsg 99999999 is outside 0..9999"),
    ("default", "2002", {"maxmsg": -7}, "column maxmsg -7 is outside 0..9999"),
    (
        "default",
        "2003",
        {"email": "x@example.com\r\nBcc: evil@example.com"},
        "column email holds control characters",
    ),
]
# A row whose context is no name: a call to it names `../x` itself, which is refused before
# any query; the row is read (and refused) when every mailbox is listed.
BAD_CONTEXT_MAILBOX = ("../x", "2004", {}, "column context '../x' is not a valid name")
BAD_PEERS = [
    ("7002", {"host": "not a host!"}, "column host 'not a host!' is not a host name"),
    ("7003", {"port": 99999}, "column port 99999 is outside 1..65535"),
    ("7004", {"context": "../x"}, "column context '../x' is not a valid name"),
]
# (exten, priority, app, appdata, what the log says)
BAD_EXTENSIONS = [
    ("8100", 0, "Hangup", "", "column priority 0 is outside 1..100000"),
    ("8200", 1, "Voice Mail;x", "1000", "column app 'Voice Mail;x' is not an application name"),
]


def insert_mailbox(backend: Backend, context: str, mailbox: str, **columns: object) -> None:
    values = {"context": context, "mailbox": mailbox, "password": "1234", **columns}
    names = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    backend.sql(f"INSERT INTO voicemail ({names}) VALUES ({marks})", *values.values())


def insert_extension(
    backend: Backend, exten: str, priority: int, app: str, appdata: str = ""
) -> None:
    backend.sql(
        "INSERT INTO extensions (context, exten, priority, app, appdata) VALUES (?, ?, ?, ?, ?)",
        "default",
        exten,
        priority,
        app,
        appdata,
    )


def deposit(server: RunningServer, number: str, box: str, seconds: float, seed: int) -> None:
    """A caller to `number` hears `box`'s greeting, speaks and hangs up (200 once stored)."""
    with Softphone(server) as phone:
        call = phone.call(number)
        call.wait_prompts(greeting_of(box), candidates=CANDIDATES, timeout=60)
        call.send_pcm(test_signal(seconds, seed=seed))
        assert call.hangup() == 200


def logged_line(server: RunningServer, *parts: str, timeout: float = 10.0) -> str:
    """The first log line holding every one of `parts` (waited for)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in server.log().splitlines():
            if all(part in line for part in parts):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line with {parts}:\n{server.log()[-4000:]}")
        time.sleep(0.05)


def call_gets_no_greeting(server: RunningServer, number: str) -> str:
    """Call `number`: refused with a final response, or answered and hung up by the server
    without a beep; returns what happened."""
    with Softphone(server) as phone:
        try:
            call = phone.call(number, timeout=20)
        except SoftphoneError:
            refused = list(phone.calls.values())[-1]
            assert refused.status is not None and refused.status >= 300, refused.final
            return f"refused {refused.status}"
        call.wait_hangup(timeout=30)
        heard = [m.name for m in call.wait_prompts([], candidates=["beep", "vm-intro"])]
        assert "beep" not in heard, heard
        return "answered, hung up"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_malformed_realtime_rows_are_refused_and_the_rest_keeps_serving(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "etc",
        backend,
        mailboxes="",
        extensions=EXTENSIONS,
        realtime=("sippeers", "extensions"),
    )
    init = run_cli("db", "init", "-C", str(config))
    assert init.returncode == 0, init.stdout + init.stderr
    create_sippeers(backend)
    insert_mailbox(backend, "default", "1000", fullname="Alice Example")
    # NULL columns are no fault: a row with nothing but its key and PIN is a good mailbox.
    insert_mailbox(backend, "default", "2005", fullname=None, email=None, maxmsg=None)
    for context, mailbox, columns, _why in [*BAD_MAILBOXES, BAD_CONTEXT_MAILBOX]:
        insert_mailbox(backend, context, mailbox, **columns)
    add_peer(backend, "7001", secret="pw")
    for name, columns, _why in BAD_PEERS:
        add_peer(backend, name, secret="pw", **columns)
    insert_extension(backend, "8000", 1, "VoiceMail", "1000@default,u")
    insert_extension(backend, "8000", 2, "Hangup")
    for exten, priority, app, appdata, _why in BAD_EXTENSIONS:
        insert_extension(backend, exten, priority, app, appdata)
    insert_extension(backend, "8300", 1, "Frobnicate", "x")  # a name, of no application

    server = start_server(config)
    try:
        # Mailboxes: the bad rows are not found, each logged with its table and key.
        outcomes = {}
        for context, mailbox, _columns, why in BAD_MAILBOXES:
            outcomes[mailbox] = call_gets_no_greeting(server, mailbox)
            logged_line(
                server, "table voicemail", f"context='{context}'", f"mailbox='{mailbox}'", why
            )
        context, mailbox, _columns, why = BAD_CONTEXT_MAILBOX
        outcomes[mailbox] = call_gets_no_greeting(server, mailbox)
        logged_line(server, f"mailbox '{mailbox}'@'{context}' refused: not a valid")
        listing = run_cli("-C", str(config), "-rx", "voicemail show users", timeout=60)
        assert listing.returncode == 0, listing.stdout + listing.stderr
        assert "Alice Example" in listing.stdout and "../x" not in listing.stdout, listing.stdout
        logged_line(server, "table voicemail", f"context='{context}'", f"mailbox='{mailbox}'", why)
        # Peers: the good one registers, the bad ones are refused like unknown names.
        register_sipp(
            tmp_path / "reg-good",
            "register",
            authenticated_register("7001", "pw", 1),
            server,
            free_port(),
        )
        for name, _columns, why in BAD_PEERS:
            register_sipp(
                tmp_path / f"reg-{name}",
                "register",
                authenticated_register(name, "pw", 1, code=403),
                server,
                free_port(),
            )
            logged_line(server, "table sippeers", f"name='{name}'", why)
        # Dial plan rows: refused rows leave their extension missing; an unknown
        # application ends its call with a log line; the good row routes a deposit.
        for exten, _priority, _app, _appdata, why in BAD_EXTENSIONS:
            outcomes[exten] = call_gets_no_greeting(server, exten)
            logged_line(server, "table extensions", f"exten='{exten}'", why)
        outcomes["8300"] = call_gets_no_greeting(server, "8300")
        server.wait_for_log("application Frobnicate is not implemented")
        assert_options_answered(server, "after-bad-rows")
        deposit(server, "8000", "1000", 2.0, seed=21)
        deposit(server, "1000", "1000", 2.0, seed=22)
        deposit(server, "2005", "2005", 2.0, seed=23)
        assert server.process.poll() is None
    finally:
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(), server.log()
    stored = rows(backend)
    assert sorted(row["mailboxuser"] for row in stored) == ["1000", "1000", "2005"], (
        outcomes,
        server.log()[-3000:],
    )
