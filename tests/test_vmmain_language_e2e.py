"""End to end in other languages: what a caller of the real server hears, matched against the
prompt files of that language (Debian's asterisk-core-sounds-es-wav under
/usr/share/asterisk/sounds/es), on SQLite and PostgreSQL.

A mailbox with `language=es` hears its intro, numbers, folder names and envelope in Spanish
after login; the envelope is said in the mailbox's [zonemessages] zone (the server runs in
UTC); a `vm-login=` override is heard instead of vm-login; and a SIP peer with `language=es`
hears VoiceMail()'s greeting in Spanish.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from storage.audioformats import encode
from storage.messages import MessageStore, new_msg_id
from storage.odbc import OdbcPool

from .audio import test_signal
from .dbbackends import Backend
from .heard import PromptMatch, find_prompts
from .server import SOUNDS, RunningServer, start_server, write_config
from .softphone import Call, Softphone
from .test_vmmain_e2e import EXTENSIONS, SPOOL, tone

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True),
]

PIN = "8642"
ZONES = (
    "[zonemessages]\n"
    "european=Europe/Copenhagen|'vm-received' a d b 'digits/at' HM\n"
    "eastern=America/New_York|'vm-received' Q 'digits/at' IMp\n"
)
# Tuesday 14 November 2023: 22:13 UTC, 23:13 in Copenhagen, 17:13 in New York.
ORIGTIME = 1_700_000_000


def deposit(backend: Backend, mailbox: str, count: int) -> None:
    """`count` 1.5 s messages in mailbox@default's INBOX, left at ORIGTIME."""

    async def work() -> None:
        pool = OdbcPool(backend.connection_class(), retry_timeout=10)
        await pool.start()
        try:
            store = MessageStore(pool, "voicemessages", SPOOL)
            for i in range(count):
                await store.store(
                    context="default",
                    mailbox=mailbox,
                    folder="INBOX",
                    recording=encode(tone(1.5, 400 + 100 * i), "wav"),
                    callerid=f'"Caller {i}" <555000{i}>',
                    origtime=ORIGTIME,
                    duration=2,
                    caller_context="default",
                    msg_id=new_msg_id(),
                )
        finally:
            await pool.close()

    asyncio.run(work())


def hear(
    call: Call,
    expected: Sequence[str],
    language: str,
    *,
    candidates: Sequence[str] = (),
    after: float = 0.0,
    timeout: float = 60.0,
) -> list[PromptMatch]:
    """Wait until `expected` is heard in a row (prompt files of `language`) since `after`;
    returns the matches up to its end, in call time."""
    names = [*dict.fromkeys([*expected, *candidates])]
    deadline = time.monotonic() + timeout
    while True:
        found = find_prompts(call.heard(after), names, language=language)
        heard = [m.name for m in found]
        for index in range(len(heard) - len(expected) + 1):
            if heard[index : index + len(expected)] == list(expected):
                return [
                    PromptMatch(m.name, m.start + after, m.end + after, m.score)
                    for m in found[: index + len(expected)]
                ]
        if time.monotonic() > deadline or call.ended.is_set():
            raise AssertionError(f"expected {list(expected)} ({language}), heard {heard}")
        time.sleep(0.4)


def server_with(
    backend: Backend, tmp_path: Path, mailboxes: str, general: str = ""
) -> RunningServer:
    config = write_config(
        tmp_path / "etc",
        backend,
        mailboxes=ZONES + mailboxes,
        extensions=EXTENSIONS,  # VoiceMailMain(@default) at 8500
        general=general,
    )
    return start_server(config)


SPANISH_INTRO = ["vm-youhave", "digits/2", "vm-messages", "vm-INBOX"]
SPANISH_MENU = ["vm-onefor", "vm-messages", "vm-INBOX", "vm-opts"]  # "mensajes nuevos"
# 'vm-received' a d b 'digits/at' HM in Copenhagen, with Spanish numbers (23, not UTC's 22).
SPANISH_ENVELOPE = [
    "vm-first",
    "vm-message",
    "vm-received",
    "digits/day-2",
    "digits/14",
    "digits/mon-10",
    "digits/at",
    "digits/23",
    "digits/13",
]


def test_spanish_mailbox_hears_spanish_after_login(backend: Backend, tmp_path: Path) -> None:
    assert SOUNDS.find("vm-youhave", "es").parent.name == "es", (
        "the Spanish prompts are missing: make apt (asterisk-core-sounds-es-wav)"
    )
    server = server_with(
        backend, tmp_path, "[default]\n1000 => 8642,Ana,,,language=es|tz=european\n"
    )
    try:
        deposit(backend, "1000", 2)
        with Softphone(server) as phone:
            call = phone.call("8500")
            hear(call, ["vm-login"], "en")  # the channel's language until the mailbox is known
            call.dtmf("1000#")
            asked = hear(call, ["vm-password"], "en")[-1].end
            call.dtmf(f"{PIN}#")
            others = ["digits/22", "vm-INBOXs", "digits/1M"]
            intro = hear(call, SPANISH_INTRO + SPANISH_MENU, "es", candidates=others, after=asked)
            assert [m.name for m in intro] == SPANISH_INTRO + SPANISH_MENU, intro
            call.dtmf("1")
            envelope = hear(
                call, SPANISH_ENVELOPE, "es", candidates=others, after=intro[-1].end, timeout=40
            )
            assert [m.name for m in envelope] == SPANISH_ENVELOPE, envelope
            spanish = call.heard(asked, envelope[-1].end)
            assert call.hangup() == 200
        # The English files were not what was played after login.
        assert not find_prompts(spanish, ["vm-youhave", "vm-received", "vm-opts"], language="en")
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    assert "1000@default logged in" in log and "Traceback" not in log


ENGLISH_ENVELOPE = [
    "vm-first",
    "vm-message",
    "vm-received",  # 'vm-received' Q 'digits/at' IMp in New York: November 14th 2023 at 5 13 pm
    "digits/mon-10",
    "digits/h-14",
    "digits/2",
    "digits/thousand",
    "digits/20",
    "digits/3",
    "digits/at",
    "digits/5",
    "digits/13",
    "digits/p-m",
]


def test_vm_login_override_and_envelope_in_the_mailbox_zone(
    backend: Backend, tmp_path: Path
) -> None:
    # A prompt path must fit Asterisk's 79 characters; pytest's tmp_path may not.
    short = Path(tempfile.mkdtemp(prefix="vmw", dir="/tmp"))
    welcome = short / "welcome.wav"
    welcome.write_bytes(encode(test_signal(1.2, seed=7), "wav"))
    prompt = str(welcome.with_suffix(""))
    server = server_with(
        backend,
        tmp_path,
        "[default]\n1001 => 8642,Bob,,,tz=eastern\n",
        general=f"vm-login={prompt}\n",
    )
    try:
        deposit(backend, "1001", 1)
        with Softphone(server) as phone:
            call = phone.call("8500")
            greeted = hear(call, [prompt], "en", candidates=["vm-login"])
            assert [m.name for m in greeted] == [prompt], greeted
            call.dtmf("1001#")
            # the login prompt was the operator's, and vm-login never played
            assert not find_prompts(call.heard(0, greeted[0].end + 1), ["vm-login"])
            asked = hear(call, ["vm-password"], "en", after=greeted[0].end)[-1].end
            call.dtmf(f"{PIN}#")
            intro = hear(
                call,
                ["vm-youhave", "digits/1", "vm-INBOX", "vm-message", "vm-onefor"],
                "en",
                after=asked,
            )
            call.dtmf("1")
            envelope = hear(
                call,
                ENGLISH_ENVELOPE,
                "en",
                candidates=["digits/10"],  # the hour in UTC
                after=intro[-1].end,
                timeout=40,
            )
            assert [m.name for m in envelope] == ENGLISH_ENVELOPE, envelope
            assert call.hangup() == 200
    finally:
        shutil.rmtree(short, ignore_errors=True)
        assert server.stop() == 0, server.log()
    log = server.log()
    assert "1001@default logged in" in log and "Traceback" not in log
    assert '"vm-login": not implemented' not in log and '"tz": not implemented' not in log


PEER = "[5551234]\ntype=friend\nhost=dynamic\nsecret=s3cret\ncontext=default\nlanguage=es\n"
GREETING = ["vm-theperson", "digits/1", "digits/0", "digits/0", "digits/0", "vm-isunavail"]


def test_voicemail_greeting_in_the_caller_language(backend: Backend, tmp_path: Path) -> None:
    """VoiceMail() speaks the channel's language (Asterisk's leave_voicemail does not take the
    mailbox's): a peer with language=es hears the Spanish greeting and instructions."""
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write(PEER)
    server = start_server(config)
    try:
        with Softphone(server, password="s3cret") as phone:
            call = phone.call("1000")
            greeting = hear(call, [*GREETING, "vm-intro", "beep"], "es")
            assert [m.name for m in greeting] == [*GREETING, "vm-intro", "beep"], greeting
            assert not find_prompts(call.heard(0, greeting[-1].end), ["vm-intro"], language="en")
            assert call.hangup() == 200
    finally:
        assert server.stop() == 0, server.log()
