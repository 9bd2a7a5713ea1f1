"""Input from the network never forms a path or a `dir` value unchecked (issue 11).

Mailbox and context names reach the server from the SIP Request-URI (through the dial
plan's ${EXTEN}), from DTMF (VoiceMailMain's login: digits only), from the dial plan's
arguments and from database rows; they become the components of the `dir` key of every
message (`/var/spool/asterisk/voicemail/<context>/<mailbox>/INBOX`, the path an Asterisk
sharing the table creates). storage/identifiers.py's `check_box_name` guards each place
such a name forms one: MailboxDirectory.find (before any query), the message table's dir
helpers, the local spool's writer and a peer's `mailbox=` list.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyodbc
import pytest

from channels.sip.peers import parse_mailboxes
from storage.identifiers import MAX_BOX_NAME, box_name_problem, check_box_name

from . import sipua
from .dbbackends import Backend
from .server import DEFAULT_EXTENSIONS, RunningServer, start_server, write_config
from .test_deposit_e2e import rows
from .test_sipguard_e2e import Phone

HOSTILE = [
    "../../etc",
    "..",
    ".",
    "a/b",
    "..\\..\\windows",
    "1000\x00",
    "10\r\n00",
    "x" * (MAX_BOX_NAME + 1),
    "",
]
FINE = ["1000", "12_4%'; 日本", 'O\'Brien "x" 1%;_ Zoë', "%2e%2e", "1000;drop", "x" * MAX_BOX_NAME]

# -- the check itself ----------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
def test_names_that_would_leave_the_spool_or_break_a_file_name_are_refused(name: str) -> None:
    assert box_name_problem(name) is not None
    with pytest.raises(ValueError, match="invalid context"):
        check_box_name(name, "context")


@pytest.mark.parametrize("name", FINE)
def test_names_in_any_script_with_quotes_and_percent_are_names(name: str) -> None:
    """Asterisk allows them, and none climbs out of its folder (`%2e%2e` is not decoded)."""
    assert check_box_name(name) == name


def test_every_dtmf_login_is_a_valid_name() -> None:
    """VoiceMailMain's login is DTMF: 0-9 * # A-D, which can never spell a path."""
    for key in "0123456789*#ABCD":
        assert box_name_problem(key * 10) is None


def test_peer_mailbox_list_drops_hostile_entries(caplog: pytest.LogCaptureFixture) -> None:
    assert parse_mailboxes("1000@default,../../etc@default,2000@../x,3000") == [
        ("1000", "default"),
        ("3000", "default"),
    ]
    assert "peer mailbox '../../etc@default' ignored" in caplog.text


# -- against the running server --------------------------------------------------------------


EXTENSIONS = (
    DEFAULT_EXTENSIONS
    + """exten => 2000,1,VoiceMail(../../etc@default,u)
same => n,Hangup()
exten => 2001,1,VoiceMail(2001@../../tmp,u)
same => n,Hangup()
"""
)

PEERS = """
[phone]
type=friend
host=dynamic
secret=phone-secret
mailbox=1000@default,../../etc@default
"""

HOSTILE_USERS = [
    "../../etc",
    "1000;drop",
    "%2e%2e",
    "..",
    "1000%00",
    "x" * 3000,
    "日本",
    "1000'--",
]


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    config = write_config(tmp_path / "etc", backend, extensions=EXTENSIONS)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write(PEERS)
    running = start_server(config)  # `db init` makes the tables
    connection = pyodbc.connect(backend.connection_string, autocommit=True)
    try:
        for context, mailbox in (("default", "../../etc"), ("../../tmp", "2001")):
            connection.execute(
                "INSERT INTO voicemail (context, mailbox, password, fullname) VALUES (?, ?, ?, ?)",
                context,
                mailbox,
                "4321",
                "Hostile Row",
            )
    finally:
        connection.close()
    yield running
    assert running.stop() == 0, running.log()
    assert "Traceback" not in running.log(), running.log()


def directories(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_dir()}


def invite(phone: Phone, user: str, call_id: str) -> bytes:
    host, port = phone.local.split(":")
    offer = sipua.sdp_offer(host, int(port) + 1, ("PCMU",), 1)
    data = phone.request("INVITE", user, call_id, **{"Content-Type": "application/sdp"})
    head = data[: -len(b"Content-Length: 0\r\n\r\n")]
    return head + f"Content-Length: {len(offer)}\r\n\r\n".encode() + offer


def ack(answer: sipua.SipMessage, phone: Phone, user: str) -> bytes:
    """The ACK for a non-2xx final answer to an INVITE (same branch, the answer's To)."""
    return sipua.build(
        f"ACK sip:{user}@{phone.server.target} SIP/2.0",
        [
            ("Via", answer.header("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", answer.header("From") or ""),
            ("To", answer.header("To") or ""),
            ("Call-ID", answer.header("Call-ID") or ""),
            ("CSeq", f"{answer.cseq[0]} ACK"),
        ],
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_hostile_users_over_sip_get_an_answer_and_form_no_path(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    before = directories(tmp_path)
    with Phone(server, "127.0.0.1") as phone:
        for index, user in enumerate(HOSTILE_USERS):
            answer = phone.final(invite(phone, user, f"inv-{index}"))
            assert 400 <= answer.status < 500, (user[:40], answer)
            phone.send(ack(answer, phone, user))
            for method in ("SUBSCRIBE", "REGISTER"):
                extra = {"Event": "message-summary"} if method == "SUBSCRIBE" else {}
                answer = phone.final(phone.request(method, user, f"{method}-{index}", **extra))
                assert answer.status in (400, 401, 403, 404, 489), (method, user[:40], answer)
        # Raw bytes the URI cannot carry: NUL and a bare CR inside the user part.
        for index, user in enumerate(("10\x0000", "10\r00")):
            data = phone.request("REGISTER", user, f"raw-{index}")
            phone.send(data)
        phone.answers(0.5)
        assert phone.options_ok()
    after = directories(tmp_path)
    spool = tmp_path / "etc" / "spool"
    created = {d for d in after - before if spool not in d.parents and d != spool}
    assert created == set(), created
    assert not Path("/var/spool/asterisk/etc").exists()
    assert rows(backend) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_hostile_mailbox_rows_are_refused_with_a_log_line(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    """A row whose mailbox or context is `../..` exists in the table, and the dial plan
    names it: the call is refused (480, as for a missing mailbox), nothing is stored."""
    with Phone(server, "127.0.0.1") as phone:
        for index, exten in enumerate(("2000", "2001")):
            answer = phone.final(invite(phone, exten, f"row-{index}"), wait=10)
            assert answer.status == 480, answer
            phone.send(ack(answer, phone, exten))
        assert phone.options_ok()
    log = server.wait_for_log("No entry in voicemail config file for '2001@../../tmp'")
    # The first refusal is logged; the next within 10 s is counted in the next such line.
    assert "mailbox '../../etc'@'default' refused: not a valid mailbox@context name" in log
    assert "No entry in voicemail config file for '../../etc@default'" in log
    assert "peer mailbox '../../etc@default' ignored" in log
    assert rows(backend) == []
    stored = backend.sql("SELECT dir FROM voicemessages")
    assert not [r for r in stored if ".." in str(r["dir"])]
    assert not (tmp_path / "tmp").exists()
