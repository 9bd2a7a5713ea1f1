"""The `static` realtime driver: voicemail.conf, sip.conf and extensions.conf served as
realtime families, read-only, with SQL-like lookups (storage/realtime_static.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage.odbc import DatabaseError, DatabaseUnavailable
from storage.realtime import Realtime, RealtimeMapping

pytestmark = pytest.mark.timeout(60)

VOICEMAIL_CONF = """\
[general]
format = wav
[zonemessages]
eastern = America/New_York|'vm-received' Q 'digits/at' IMp
[default]
1234 => 4242,Example Mailbox,root@localhost,pager@example.com,attach=no|tz=eastern
1235 => -5555,Second
[sales]
200 => 1
"""

SIP_CONF = """\
[general]
context = public
[peer-template](!)
type = friend
host = dynamic
allow = ulaw
[alice](peer-template)
secret = s3cret\\;x
allow = alaw
regseconds = 100
[bob](peer-template)
regseconds = 30
"""

EXTENSIONS_CONF = """\
[globals]
X = 1
[default]
exten => 100,1,Answer()
 same => n(record),VoiceMail(100@default,u)
 same => n,Hangup
exten => 100,hint,SIP/100
exten => _1XX,1,Dial(SIP/${EXTEN},20)
exten => 200,1,Playback,hello
"""


def test_static_driver_serves_voicemail_sip_and_dialplan_files(tmp_path: Path) -> None:
    (tmp_path / "voicemail.conf").write_text(VOICEMAIL_CONF)
    (tmp_path / "sip.conf").write_text(SIP_CONF)
    (tmp_path / "extensions.conf").write_text(EXTENSIONS_CONF)
    realtime = Realtime(
        [
            RealtimeMapping("voicemail", "static", "voicemail.conf", "voicemail"),
            RealtimeMapping("sippeers", "static", "sip.conf", "sippeers"),
            RealtimeMapping("extensions", "static", str(tmp_path / "extensions.conf"), "x"),
            RealtimeMapping("iaxpeers", "static", "missing.conf", "iaxpeers"),
        ],
        {},
        config_dir=tmp_path,
    )

    async def scenario() -> None:
        row = await realtime.load("voicemail", mailbox="1234", context="default")
        assert row == {
            "context": "default",
            "mailbox": "1234",
            "password": "4242",
            "fullname": "Example Mailbox",
            "email": "root@localhost",
            "pager": "pager@example.com",
            "attach": "no",
            "tz": "eastern",
        }
        assert await realtime.load("voicemail", mailbox="eastern") is None
        everyone = await realtime.load_multi("voicemail", {"mailbox LIKE": "%"})
        assert [(r["context"], r["mailbox"]) for r in everyone] == [
            ("sales", "200"),  # numbers sort as numbers in a static file
            ("default", "1234"),
            ("default", "1235"),
        ]

        alice = await realtime.load("sippeers", name="alice")
        assert alice is not None
        assert (alice["type"], alice["host"], alice["secret"]) == ("friend", "dynamic", "s3cret;x")
        assert alice.getall("allow") == ["ulaw", "alaw"] and alice["allow"] == "alaw"
        assert await realtime.load("sippeers", name="general") is None
        assert await realtime.load("sippeers", name="peer-template") is None
        recent = await realtime.load_multi("sippeers", {"regseconds >": "50"})
        assert [r["name"] for r in recent] == ["alice"]
        by_expiry = await realtime.load_multi("sippeers", {"regseconds >=": "9", "host": "dynamic"})
        assert [r["name"] for r in by_expiry] == ["bob", "alice"]  # 30 < 100, as numbers

        steps = await realtime.load_multi("extensions", {"exten": "100", "context": "default"})
        assert [(r["priority"], r["app"], r.get("appdata", "")) for r in steps] == [
            ("1", "Answer", ""),
            ("2", "VoiceMail", "100@default,u"),
            ("3", "Hangup", ""),
        ]
        pattern = await realtime.load_where("extensions", {"exten LIKE": "\\_%"})
        assert pattern is not None and pattern["appdata"] == "SIP/${EXTEN},20"
        old_style = await realtime.load("extensions", exten="200", priority="1")
        assert old_style is not None and (old_style["app"], old_style["appdata"]) == (
            "Playback",
            "hello",
        )

        with pytest.raises(DatabaseError, match="no writable"):
            await realtime.update("sippeers", "name", "alice", {"ipaddr": "192.0.2.1"})
        with pytest.raises(DatabaseUnavailable, match="missing.conf"):
            await realtime.load("iaxpeers", name="x")

        # A reload (invalidate) rereads the file.
        (tmp_path / "sip.conf").write_text("[carol]\nhost = dynamic\n")
        assert await realtime.load("sippeers", name="carol") is None
        realtime.invalidate("sippeers")
        assert await realtime.load("sippeers", name="carol") is not None
        assert await realtime.load("sippeers", name="alice") is None

    asyncio.run(scenario())
