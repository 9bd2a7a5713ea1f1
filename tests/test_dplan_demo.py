"""The demo's extensions.conf: deposit, and VoiceMailMain at 8500, *98 and *97."""

from __future__ import annotations

from pathlib import Path

from storage.realtime import Realtime
from voicemail.callpath import CallPathDatabase
from voicemail.config import load_server_config
from voicemail.dialplan import Dialplan
from voicemail.dialplan_runner import DialplanRunner

DEMO = Path(__file__).resolve().parent.parent / "voicemail" / "demo"


def test_demo_dial_plan_loads_with_deposit_and_message_retrieval() -> None:
    plan = Dialplan.from_config(load_server_config(DEMO).extensions)
    steps = {exten: plan.match("default", exten).steps[0] for exten in ("1000", "8500", "*98",
             "*97", "h")}  # fmt: skip
    first = {exten: (step.app, step.args) for exten, step in steps.items()}
    assert first == {
        "1000": ("VoiceMail", "${EXTEN}@default,u"),
        "8500": ("VoiceMailMain", "@default"),
        "*98": ("VoiceMailMain", "@default"),
        "*97": ("VoiceMailMain", "${CALLERID(num)}@default"),
        "h": ("NoOp", "voicemail status ${VMSTATUS}"),
    }
    runner = DialplanRunner(
        plan,
        Realtime([], {}),
        CallPathDatabase(),
        {"voicemail": None, "hangup": None, "noop": None},
    )
    # Until VoiceMailMain is in the server's table, it is the only application named.
    problems = runner.unsupported_applications()
    assert all("application VoiceMailMain is not implemented" in p for p in problems), problems


def test_demo_mailboxes_load_without_warnings() -> None:
    """The demo's second mailbox to forward to, and a Spanish one with its own zone."""
    settings = load_server_config(DEMO).voicemail
    assert settings.warnings == []
    assert set(settings.mailboxes) == {
        ("default", "1000"),
        ("default", "1001"),
        ("default", "1002"),
    }
    spanish = settings.mailboxes[("default", "1002")]
    assert spanish.options == {"language": "es", "tz": "european"}
    assert set(settings.zonemessages) == {"eastern", "european"}
