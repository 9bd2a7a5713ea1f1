"""End to end: a phone (sipp) gets message-waiting NOTIFYs from the real server.

A phone subscribes to `message-summary` (after a digest challenge) and must get the counts at
once and again when its mailbox changes; a registered phone without a subscription gets
chan_sip's out-of-dialog NOTIFYs, also for a message another server stored in the shared
database (noticed by the `pollfreq` poll). sipp checks each NOTIFY with `ereg check_it`, so a
wrong body or header fails the sipp run; bodies are matched exactly, CRLFs included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pyodbc
import pytest

from . import sipp
from .dbbackends import Backend
from .server import RunningServer, start_server, write_config
from .test_deposit_e2e import DATA, deposit_scenario, rows

pytestmark = pytest.mark.timeout(60)

PASSWORD = "pw"
INBOX = "/var/spool/asterisk/voicemail/default/1000/INBOX"

# 6001 subscribes; 6002 is a Cisco (buggymwi); 6003 registers without subscribing, and its
# NOTIFYs must go to its Contact (nat=no), where a separate sipp waits for them.
PEERS = f"""
[6001]
type=friend
host=dynamic
secret={PASSWORD}
mailbox=1000@default
context=default

[6002]
type=friend
host=dynamic
secret={PASSWORD}
mailbox=1000@default
context=default
buggymwi=yes

[6003]
type=friend
host=dynamic
secret={PASSWORD}
mailbox=1000@default
context=default
nat=no
"""


def start_mwi_server(tmp_path: Path, backend: Backend, general: str = "") -> RunningServer:
    config = write_config(tmp_path / "etc", backend, general=general)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write(PEERS)
    return start_server(config)


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_mwi_server(tmp_path, backend)
    yield running
    assert running.stop() == 0, running.log()
    assert "Traceback" not in running.log(), running.log()


# -- scenario pieces ------------------------------------------------------------------------


def summary_regexp(server: RunningServer, waiting: str, counts: str, urgent: bool = True) -> str:
    """The exact body chan_sip sends, as a POSIX regexp (sipp understands \\r\\n in it)."""
    account = re.escape(f"sip:asterisk@{server.host}:{server.port}")
    urgent_part = r" \(0/0\)" if urgent else ""
    return (
        rf"^Messages-Waiting: {waiting}\r\nMessage-Account: {account}\r\n"
        rf"Voice-Message: {re.escape(counts)}{urgent_part}\r\n$"
    )


def ereg(variable: str, regexp: str, *, header: str | None = None) -> str:
    where = f'search_in="hdr" header="{header}"' if header else 'search_in="body"'
    value = regexp.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return f'<ereg regexp="{value}" {where} check_it="true" assign_to="{variable}"/>'


def recv_with_checks(tag: str, checks: list[str]) -> str:
    return f"{tag}<action>{''.join(checks)}</action></recv>\n"


def references(*names: str) -> str:
    """sipp refuses a scenario whose assigned variables are never used."""
    return f'<Reference variables="{",".join(names)}"/>\n'


def subscribe(
    user: str,
    cseq: int,
    *,
    event: str = "message-summary",
    expires: int = 600,
    authenticate: bool = False,
    in_dialog: bool = False,
) -> str:
    lines = [
        f"SUBSCRIBE sip:{user}@[remote_ip]:[remote_port] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        f"From: <sip:{user}@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]",
        f"To: <sip:{user}@[remote_ip]:[remote_port]>" + ("[peer_tag_param]" if in_dialog else ""),
        "Call-ID: [call_id]",
        f"CSeq: {cseq} SUBSCRIBE",
        f"Contact: <sip:{user}@[local_ip]:[local_port]>",
        "Max-Forwards: 70",
        f"Event: {event}",
        "Accept: application/simple-message-summary",
        f"Expires: {expires}",
    ]
    if authenticate:
        lines.append(f"[authentication username={user} password={PASSWORD}]")
    return sipp.send("\n".join(lines) + "\nContent-Length: 0\n\n")


def authenticated_subscribe(user: str, expires_regexp: str = r"^ *600$") -> list[str]:
    """SUBSCRIBE, 401, SUBSCRIBE with credentials, 200 with the granted Expires."""
    return [
        subscribe(user, 1),
        '<recv response="401" auth="true"/>\n',
        subscribe(user, 2, authenticate=True),
        recv_with_checks(
            '<recv response="200">', [ereg("granted", expires_regexp, header="Expires:")]
        ),
    ]


def recv_notify(prefix: str, body_regexp: str, state_regexp: str) -> list[str]:
    """An in-dialog NOTIFY of the subscription, checked, and our 200 to it."""
    return [
        recv_with_checks(
            '<recv request="NOTIFY">',
            [
                ereg(f"{prefix}body", body_regexp),
                ereg(f"{prefix}event", r"^ *message-summary$", header="Event:"),
                ereg(f"{prefix}state", state_regexp, header="Subscription-State:"),
                ereg(
                    f"{prefix}type",
                    r"^ *application/simple-message-summary$",
                    header="Content-Type:",
                ),
            ],
        ),
        sipp.answer_request(),
    ]


def notify_variables(*prefixes: str) -> list[str]:
    return [f"{p}{n}" for p in prefixes for n in ("body", "event", "state", "type")]


ACTIVE = r"^ *active;expires=(5[0-9][0-9]|600)$"  # 600 granted, counting down


def in_subscription(message: str) -> bool:
    """An in-dialog NOTIFY says how long its subscription runs (or that it ended); an
    unsolicited one says only `active` (res_pjsip_mwi's form)."""
    state = re.search(r"^Subscription-State: *(\S+?)\r?$", message, re.M)
    return state is not None and state.group(1) != "active"


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_subscribe_after_challenge_gets_200_and_an_immediate_notify_with_the_counts(
    server: RunningServer, tmp_path: Path
) -> None:
    xml = sipp.scenario(
        "subscribe",
        *authenticated_subscribe("6001"),
        *recv_notify("n1", summary_regexp(server, "no", "0/0"), ACTIVE),
        references("granted", *notify_variables("n1")),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=20).check()
    server.wait_for_log("peer 6001 subscribed to MWI for [('1000', 'default')]")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_subscriber_gets_a_notify_when_a_message_is_left(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    phone = sipp.start_sipp(
        tmp_path / "phone",
        sipp.scenario(
            "phone",
            *authenticated_subscribe("6001"),
            *recv_notify("n1", summary_regexp(server, "no", "0/0"), ACTIVE),
            *recv_notify("n2", summary_regexp(server, "yes", "1/0"), ACTIVE),
            references("granted", *notify_variables("n1", "n2")),
        ),
        server.target,
        name="phone",
        timeout=60,
    )
    try:
        wait_for(lambda: len(phone.received()) >= 3, 10, "the first NOTIFY")  # 401, 200, NOTIFY
        deposit = deposit_scenario(
            "1000",
            DATA / "signal3s_pcmu.pcap",
            [0, 101],
            [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)],
        )
        sipp.run_sipp(tmp_path / "caller", deposit, server.target, timeout=40).check()
        stored_at = time.time()
        assert [r["dir"] for r in rows(backend)] == [INBOX]
        phone.wait(15).check()
    finally:
        phone.stop()
    notified_at = phone.received()[-1][0]
    print(f"NOTIFY {notified_at - stored_at:+.3f} s after the caller's BYE was answered")
    assert notified_at - stored_at < 2.0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_presence_is_refused_with_489_and_unsubscribe_ends_with_terminated_notify(
    server: RunningServer, tmp_path: Path
) -> None:
    presence = sipp.scenario(
        "presence",
        subscribe("6001", 1, event="presence"),
        '<recv response="401" auth="true"/>\n',
        subscribe("6001", 2, event="presence", authenticate=True),
        recv_with_checks(
            '<recv response="489">',
            [ereg("allowed", r"^ *message-summary$", header="Allow-Events:")],
        ),
        references("allowed"),
    )
    sipp.run_sipp(tmp_path / "presence", presence, server.target, timeout=20).check()

    unsubscribe = sipp.scenario(
        "unsubscribe",
        *authenticated_subscribe("6001"),
        *recv_notify("n1", summary_regexp(server, "no", "0/0"), ACTIVE),
        subscribe("6001", 3, expires=0, in_dialog=True),
        recv_with_checks('<recv response="200">', [ereg("ended", r"^ *0$", header="Expires:")]),
        *recv_notify("n2", summary_regexp(server, "no", "0/0"), r"^ *terminated;reason=timeout$"),
        references("granted", "ended", *notify_variables("n1", "n2")),
    )
    sipp.run_sipp(tmp_path / "unsubscribe", unsubscribe, server.target, timeout=20).check()


def register(user: str, contact: str, cseq: int = 1) -> list[str]:
    """REGISTER, 401, REGISTER with credentials, 200; `contact` is host:port."""

    def request(cseq: int, authenticate: bool) -> str:
        lines = [
            "REGISTER sip:[remote_ip]:[remote_port] SIP/2.0",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            f"From: <sip:{user}@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]",
            f"To: <sip:{user}@[remote_ip]:[remote_port]>",
            "Call-ID: [call_id]",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{user}@{contact}>",
            "Expires: 120",
            "Max-Forwards: 70",
        ]
        if authenticate:
            lines.append(f"[authentication username={user} password={PASSWORD}]")
        return sipp.send("\n".join(lines) + "\nContent-Length: 0\n\n")

    return [
        request(cseq, False),
        '<recv response="401" auth="true"/>\n',
        request(cseq + 1, True),
        sipp.recv(200),
    ]


def insert_message(backend: Backend, msgnum: int) -> None:
    """What another server sharing the database does when it stores a message."""
    connection = pyodbc.connect(backend.connection_string, autocommit=True)
    try:
        connection.execute(
            "INSERT INTO voicemessages (dir, msgnum, context, macrocontext, callerid, origtime, "
            "duration, flag, mailboxuser, mailboxcontext, msg_id) "
            "VALUES (?, ?, 'default', '', '\"Other\" <5550000>', ?, 3, '', '1000', 'default', ?)",
            INBOX,
            msgnum,
            int(time.time()),
            f"{int(time.time())}-{msgnum:016x}",
        )
    finally:
        connection.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_registered_phone_gets_unsolicited_notifies_and_the_poll_sees_other_servers_messages(
    backend: Backend, tmp_path: Path
) -> None:
    server = start_mwi_server(tmp_path, backend, general="pollfreq=1\n")
    try:
        # Every NOTIFY is out of dialog (a new Call-ID): one sipp "call" each.
        any_body = summary_regexp(server, "(yes|no)", "X").replace("X", "[0-9]+/[0-9]+")
        phone = sipp.start_sipp(
            tmp_path / "phone",
            sipp.scenario(
                "phone",
                recv_with_checks(
                    '<recv request="NOTIFY">',
                    [
                        ereg("body", any_body),
                        ereg("event", r"^ *message-summary$", header="Event:"),
                        ereg("to", r"^ *<sip:6003@127\.0\.0\.1:[0-9]+>$", header="To:"),
                    ],
                ),
                sipp.answer_request(),
                references("body", "event", "to"),
            ),
            server.target,
            name="phone",
            calls=2,
        )
        try:
            xml = sipp.scenario("register", *register("6003", f"127.0.0.1:{phone.port}"))
            sipp.run_sipp(tmp_path / "register", xml, server.target, timeout=20).check()
            wait_for(lambda: len(phone.received()) >= 1, 5, "the NOTIFY after REGISTER")
            time.sleep(1.5)  # a poll or two with unchanged counts: no NOTIFY
            assert len(phone.received()) == 1
            inserted_at = time.time()
            insert_message(backend, 0)
            phone.wait(10).check()
        finally:
            phone.stop()
        received = phone.received()
        assert len(received) == 2
        first, second = (text for _, text in received)
        assert first.startswith("NOTIFY sip:6003@127.0.0.1:")
        # res_pjsip_mwi's Subscription-State (chan_sip sends none; baresip refuses that).
        assert re.search(r"^Subscription-State: active\r$", first, re.M), first
        assert first.endswith(
            f"Messages-Waiting: no\r\nMessage-Account: sip:asterisk@{server.target}\r\n"
            "Voice-Message: 0/0 (0/0)\r\n"
        ), first
        assert second.endswith(
            f"Messages-Waiting: yes\r\nMessage-Account: sip:asterisk@{server.target}\r\n"
            "Voice-Message: 1/0 (0/0)\r\n"
        ), second
        delay = received[1][0] - inserted_at
        print(f"{backend.name}: poll noticed the new row and NOTIFYed after {delay:.3f} s")
        assert delay < 2.5
    finally:
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(), server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_buggymwi_peer_gets_counts_without_the_urgent_part(
    server: RunningServer, tmp_path: Path
) -> None:
    xml = sipp.scenario(
        "cisco",
        *authenticated_subscribe("6002"),
        *recv_notify("n1", summary_regexp(server, "no", "0/0", urgent=False), ACTIVE),
        references("granted", *notify_variables("n1")),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=20).check()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_phone_that_registers_and_subscribes_gets_changes_in_its_subscription_only(
    backend: Backend, tmp_path: Path
) -> None:
    """chan_sip sends a peer with an MWI subscription no out-of-dialog NOTIFYs any more."""
    server = start_mwi_server(tmp_path, backend, general="pollfreq=1\n")
    try:
        phone = sipp.start_sipp(
            tmp_path / "phone",
            sipp.scenario(
                "phone",
                *register("6001", "[local_ip]:[local_port]"),
                *authenticated_subscribe("6001"),
                *recv_notify("n1", summary_regexp(server, "no", "0/0"), ACTIVE),
                *recv_notify("n2", summary_regexp(server, "yes", "1/0"), ACTIVE),
                # A REGISTER refresh: chan_sip sends the counts again, in the subscription.
                *register("6001", "[local_ip]:[local_port]", cseq=3),
                *recv_notify("n3", summary_regexp(server, "yes", "1/0"), ACTIVE),
                sipp.pause(2500),  # a duplicate out-of-dialog NOTIFY would arrive by now
                references("granted", *notify_variables("n1", "n2", "n3")),
            ),
            server.target,
            name="phone",
            out_of_call=sipp.scenario(
                "out_of_call", sipp.recv_request("NOTIFY"), sipp.answer_request()
            ),
        )
        try:
            wait_for(
                lambda: any(in_subscription(t) for _, t in phone.received()),
                10,
                "the NOTIFY of the subscription",
            )
            insert_message(backend, 0)
            phone.wait(15).check()
        finally:
            phone.stop()
        notifies = [t for _, t in phone.received() if t.startswith("NOTIFY ")]
        unsolicited = [t for t in notifies if not in_subscription(t)]
        # One after the REGISTER (no subscription yet); then everything in the dialog.
        assert len(unsolicited) == 1, notifies
        assert unsolicited[0].endswith("Voice-Message: 0/0 (0/0)\r\n")
    finally:
        assert server.stop() == 0, server.log()
