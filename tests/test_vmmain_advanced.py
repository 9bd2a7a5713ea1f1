"""VoiceMailMain's advanced options (key 3) without I/O: reply, envelope, compose, and the keys
that are vm-sorry without callback/dialout (fact sheet 5.2, AV@20 advanced_options)."""

from __future__ import annotations

import pytest

from voicemail.vmmain.advanced_menu import caller_number
from voicemail.vmmain.events import (
    CallerId,
    Collect,
    Envelope,
    FindMailbox,
    LeaveMessage,
    Play,
    PlayMessage,
    WaitDigit,
)
from voicemail.vmmain.options import MenuSettings

from .test_config_voicemail import error, settings
from .test_vmmain_core import messages
from .test_vmmain_forward import MenuSim

BOB = '"Bob" <1001>'
PROMPTS = ("vm-toreply", "vm-tohearenv", "vm-starmain")


def advanced(
    keys: str, callerid: str = BOB, entries: list[str] | None = None, **kw: object
) -> MenuSim:
    folders = kw.pop("folders", {0: messages(0, callerid=callerid)})
    return MenuSim(folders=folders, entries=["1000", "1234", *(entries or [])], keys=keys, **kw)  # type: ignore[arg-type]


def test_prompts_after_a_message_and_before_one() -> None:
    sim = advanced("13*#")
    sim.run()
    assert PROMPTS in sim.plays()
    starting = advanced("3*#")
    starting.run()
    assert ("vm-starmain",) in starting.plays()
    composing = advanced("3*#", settings=MenuSettings(sendvoicemail=True))
    composing.run()
    assert ("vm-leavemsg", "vm-starmain") in composing.plays()


def test_1_replies_to_a_caller_who_has_a_mailbox_in_the_same_context() -> None:
    sim = advanced("131#")
    sim.run()
    assert FindMailbox("1001", "default") in sim.log
    assert sim.of(LeaveMessage) == [LeaveMessage((("1001", "default"),))]
    # back in the message menu afterwards
    after = sim.log[sim.log.index(sim.of(LeaveMessage)[0]) + 1]
    assert isinstance(after, Play) and "vm-repeat" in after.items


def test_1_without_a_number_is_nonumber_and_without_a_mailbox_nobox() -> None:
    for callerid in ("Unknown", '"Only A Name"', ""):
        sim = advanced("131#", callerid=callerid)
        sim.run()
        assert ("vm-nonumber",) in sim.plays(), callerid
        assert sim.of(LeaveMessage) == []
    sim = advanced("131#", callerid='"Eve" <5550123>')
    sim.run()
    assert FindMailbox("5550123", "default") in sim.log
    assert ("vm-nobox",) in sim.plays()
    assert sim.of(LeaveMessage) == []


def test_1_3_before_a_message_is_played_are_sorry() -> None:
    for key in "13":
        sim = advanced("3" + key + "#")
        sim.run()
        assert ("vm-sorry",) in sim.plays()
        assert sim.of(LeaveMessage) == []


def test_3_says_the_envelope_and_does_not_replay_the_message() -> None:
    sim = advanced("133#")
    sim.run()
    assert Play((Envelope(1_700_000_000), CallerId(BOB))) in sim.log
    assert len(sim.of(PlayMessage)) == 1  # only the first play (Asterisk 20 returns 't')


def test_2_and_4_without_callback_and_dialout_are_sorry() -> None:
    for key in "24":
        sim = advanced("13" + key + "#")
        sim.run()
        assert ("vm-sorry",) in sim.plays(), key


def test_5_composes_for_several_mailboxes_yourself_included() -> None:
    sim = advanced("135#", entries=["1001*1000"], settings=MenuSettings(sendvoicemail=True))
    sim.run()
    assert Collect(("vm-extension",), first=10.0, between=2.0, terminator="#") in sim.log
    assert sim.of(LeaveMessage) == [LeaveMessage((("1001", "default"), ("1000", "default")))]


def test_5_without_sendvoicemail_is_sorry() -> None:
    sim = advanced("135#", entries=["1001"])
    sim.run()
    assert ("vm-sorry",) in sim.plays()
    assert sim.of(LeaveMessage) == []


def test_star_goes_back_pound_leaves_and_silence_goes_back_after_four_rounds() -> None:
    back = advanced("13*#")
    back.run()
    assert back.plays().count(PROMPTS) == 1
    leave = advanced("13#")
    log = leave.run()
    assert log[-3] == Play(("vm-goodbye",), interrupt="")
    silent = advanced("13")
    silent.run()
    assert silent.plays().count(PROMPTS) == 4
    assert silent.log.count(WaitDigit(6.0)) >= 4


def test_other_keys_play_the_prompts_again() -> None:
    sim = advanced("137*#")
    sim.run()
    assert sim.plays().count(PROMPTS) == 2


def test_hang_up_while_leaving_a_reply_still_closes() -> None:
    sim = advanced("131", hang_up_when=lambda action, _s: isinstance(action, LeaveMessage))
    sim.run()
    assert sim.closes()  # the heard message still goes to Old


@pytest.mark.parametrize(
    ("callerid", "number"),
    [
        ('"Bob" <1001>', "1001"),
        ("<+15551234>", "+15551234"),
        ("1001", "1001"),
        ("Unknown", ""),
        ('"Alice"', ""),
        ("", ""),
    ],
)
def test_caller_number(callerid: str, number: str) -> None:
    assert caller_number(callerid) == number


def test_callback_and_dialout_are_refused_at_load_with_their_line() -> None:
    assert error("[general]\ncallback=fromvm\n").startswith(
        'voicemail.conf:2: "callback" (VoiceMailMain dialling out) is not implemented'
    )
    assert error("[general]\n\ndialout=fromvm\n").startswith('voicemail.conf:3: "dialout"')
    assert error("[default]\n1000 => 1234,A,,,dialout=out\n").startswith(
        'voicemail.conf:2: "dialout"'
    )
    assert settings("[general]\ncallback=\n").warnings == []
