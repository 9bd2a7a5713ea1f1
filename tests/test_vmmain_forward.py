"""VoiceMailMain's forward (key 8) without I/O: digits in, actions out (fact sheet 5.2,
AV@20 forward_message / vm_forwardoptions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from voicemail.vmmain.events import (
    Action,
    Collect,
    Event,
    FindMailbox,
    Forwarded,
    ForwardMessage,
    LeaveMessage,
    MailboxFound,
    MailboxInfo,
    MessageLeft,
    Play,
    PlayName,
    PrefixRecorded,
    PromptDone,
    RecordPrefix,
    StoreFailed,
)
from voicemail.vmmain.options import MenuSettings

from .test_config_voicemail import error, settings
from .test_vmmain_core import Sim, messages

OTHERS = {
    n: MailboxInfo(n, "default", "0000", settings=MenuSettings()) for n in ("1001", "1002", "1003")
}
OPTIONS = ("vm-forwardoptions", "vm-starmain")


@dataclass
class MenuSim(Sim):
    """Sim that also knows other mailboxes and answers the forward/advanced actions."""

    boxes: dict[str, MailboxInfo] = field(default_factory=lambda: dict(OTHERS))
    prefix_by_key: list[bool] = field(default_factory=list)  # one per RecordPrefix; True if empty
    full_boxes: set[str] = field(default_factory=set)
    fail_find: bool = False
    left_status: str = "SUCCESS"

    def respond(self, action: Action) -> Event:
        if isinstance(action, FindMailbox) and action.mailbox != "1000":
            if self.fail_find:
                return StoreFailed("db away")
            return MailboxFound(self.boxes.get(action.mailbox))
        if isinstance(action, PlayName):
            return PromptDone()
        if isinstance(action, RecordPrefix):
            return PrefixRecorded(1.5, self.prefix_by_key.pop(0) if self.prefix_by_key else True)
        if isinstance(action, ForwardMessage):
            names = [r.mailbox for r in action.recipients]
            return Forwarded(
                tuple(n for n in names if n not in self.full_boxes),
                tuple(n for n in names if n in self.full_boxes),
            )
        if isinstance(action, LeaveMessage):
            return MessageLeft(self.left_status)
        return super().respond(action)

    def of(self, kind: type) -> list[Action]:
        return [a for a in self.log if isinstance(a, kind)]


def forward_sim(entries: list[str], keys: str, **kw: object) -> MenuSim:
    """Logged in as 1000 with one message; '1' plays it, then the keys."""
    folders = kw.pop("folders", {0: messages(0, callerid='"Bob" <1001>')})
    return MenuSim(folders=folders, entries=["1000", "1234", *entries], keys=keys, **kw)  # type: ignore[arg-type]


def test_8_forwards_to_two_mailboxes_without_prepending() -> None:
    sim = forward_sim(["1001*1002"], "182#")
    sim.run()
    assert Collect(("vm-extension",), first=10.0, between=2.0, terminator="#") in sim.log
    assert [a.mailbox for a in sim.of(FindMailbox)][1:] == ["1001", "1002"]
    assert sim.of(PlayName) == [PlayName("1001", "default"), PlayName("1002", "default")]
    assert OPTIONS in sim.plays()
    (forward,) = sim.of(ForwardMessage)
    assert forward == ForwardMessage(0, 0, (OTHERS["1001"], OTHERS["1002"]), False, 0)
    assert ("vm-msgforwarded",) in sim.plays()
    assert sim.of(RecordPrefix) == []


def test_8_then_1_records_an_introduction_ended_by_a_key() -> None:
    sim = forward_sim(["1001"], "181#")
    sim.run()
    at = sim.log.index(sim.of(RecordPrefix)[0])
    assert sim.log[at - 1] == Play(("beep",), interrupt="")
    assert sim.of(RecordPrefix) == [RecordPrefix(0, 128)]
    (forward,) = sim.of(ForwardMessage)
    assert forward.prepend and forward.recipients == (OTHERS["1001"],)
    assert ("vm-msgforwarded",) in sim.plays()


def test_introduction_that_times_out_is_dropped_and_the_options_come_again() -> None:
    sim = forward_sim(["1001"], "1812#", prefix_by_key=[False], settings=MenuSettings(maxsilence=3))
    sim.run()
    assert sim.of(RecordPrefix) == [RecordPrefix(3, 128)]
    timeout = Play(("vm-pls-try-again", "vm-prepend-timeout"), interrupt="")
    after = sim.log[sim.log.index(timeout) + 1]
    assert after == Play(OPTIONS)
    (forward,) = sim.of(ForwardMessage)
    assert not forward.prepend  # sent as is with 2


def test_unknown_extension_is_pbx_invalid_and_asked_again() -> None:
    sim = forward_sim(["4711", "1001"], "182#")
    sim.run()
    collects = [a for a in sim.of(Collect) if a.prompts == ("vm-extension",)]
    assert len(collects) == 2
    assert Play(("pbx-invalid",), interrupt="") in sim.log
    (forward,) = sim.of(ForwardMessage)
    assert forward.recipients == (OTHERS["1001"],)


def test_one_unknown_among_several_asks_for_all_again() -> None:
    sim = forward_sim(["1001*4711*1002", "1003"], "182#")
    sim.run()
    assert sim.of(PlayName)[0] == PlayName("1001", "default")  # confirmed before 4711 failed
    (forward,) = sim.of(ForwardMessage)
    assert forward.recipients == (OTHERS["1003"],)


def test_forwarding_to_yourself_is_refused() -> None:
    sim = forward_sim(["1000", "1001"], "182#")
    sim.run()
    assert FindMailbox("1000", "default") not in sim.log[4:]  # not even looked up
    assert Play(("pbx-invalid",), interrupt="") in sim.log
    assert sim.of(ForwardMessage)[0].recipients == (OTHERS["1001"],)


def test_repeated_recipient_gets_one_copy_and_empty_parts_are_skipped() -> None:
    sim = forward_sim(["1001**1001*"], "182#")
    sim.run()
    assert sim.of(ForwardMessage)[0].recipients == (OTHERS["1001"],)


def test_five_empty_entries_give_up_back_to_the_menu() -> None:
    sim = forward_sim(["", "", "", "", ""], "18#")
    sim.run()
    assert len([a for a in sim.of(Collect) if a.prompts == ("vm-extension",)]) == 5
    assert sim.of(ForwardMessage) == []
    assert sim.log[-3] == Play(("vm-goodbye",), interrupt="")


def test_star_cancels_and_four_silent_rounds_cancel() -> None:
    sim = forward_sim(["1001"], "18*#")
    sim.run()
    assert sim.of(ForwardMessage) == []
    silent = forward_sim(["1001"], "18")
    silent.run()
    assert silent.plays().count(OPTIONS) == 4
    assert silent.of(ForwardMessage) == []


def test_other_keys_play_the_options_again() -> None:
    sim = forward_sim(["1001"], "1852#")
    sim.run()
    assert sim.plays().count(OPTIONS) == 2
    assert len(sim.of(ForwardMessage)) == 1


def test_a_full_recipient_hears_mailboxfull_the_others_still_get_it() -> None:
    sim = forward_sim(["1001*1002"], "182#", full_boxes={"1002"})
    sim.run()
    assert Play(("vm-mailboxfull", "vm-msgforwarded")) in sim.log
    only_full = forward_sim(["1002"], "182#", full_boxes={"1002"})
    only_full.run()
    assert Play(("vm-mailboxfull",)) in only_full.log


def test_forward_in_an_empty_folder_is_no_more_messages() -> None:
    sim = forward_sim([], "8#", folders={})
    sim.run()
    assert ("vm-nomore",) in sim.plays()
    assert sim.of(Collect)[2:] == []


def test_forward_before_playing_forwards_the_first_message() -> None:
    sim = forward_sim(["1001"], "82#", folders={0: messages(0, 1)})
    sim.run()
    assert sim.of(ForwardMessage)[0].msgnum == 0


def test_urgent_stays_urgent_only_with_forward_urgent_auto() -> None:
    folders = {11: messages(0, flag="Urgent")}
    plain = forward_sim(["1001"], "182#", folders=folders)
    plain.run()
    assert plain.of(ForwardMessage)[0] == ForwardMessage(11, 0, (OTHERS["1001"],), False, 0)
    auto = forward_sim(
        ["1001"], "182#", folders=folders, settings=MenuSettings(forward_urgent_auto=True)
    )
    auto.run()
    assert auto.of(ForwardMessage)[0].to_folder == 11


def test_a_key_during_the_confirmation_prompt_is_the_next_command() -> None:
    sim = forward_sim(["1001"], "1826#")  # 6 after vm-msgforwarded: next message (none)
    sim.run()
    assert ("vm-nomore",) in sim.plays()


def test_database_failure_in_the_lookup_ends_the_session() -> None:
    sim = forward_sim(["1001"], "18", fail_find=True)
    log = sim.run()
    assert sim.session.finished and log[-1].keep_going is False  # type: ignore[attr-defined]
    assert sim.of(ForwardMessage) == []


def test_hang_up_while_recording_the_introduction_forwards_nothing() -> None:
    sim = forward_sim(
        ["1001"], "181", hang_up_when=lambda action, _s: isinstance(action, RecordPrefix)
    )
    sim.run()
    assert sim.of(ForwardMessage) == []


def test_states_while_forwarding() -> None:
    seen: list[str] = []

    def watch(action: Action, session: object) -> bool:
        seen.append(session.state)  # type: ignore[attr-defined]
        return False

    sim = forward_sim(["1001"], "181#", hang_up_when=watch)
    sim.run()
    for state in ("FORWARD_EXTENSION", "FORWARD_OPTIONS", "FORWARD_PREPEND"):
        assert state in seen


def test_usedirectory_yes_is_refused_at_its_line_no_is_fine() -> None:
    assert error("[general]\nformat=wav\nusedirectory=yes\n").startswith(
        'voicemail.conf:3: "usedirectory" (forward by the Directory) is not implemented'
    )
    assert settings("[general]\nusedirectory=no\n").warnings == []
    assert error("[general]\nusedirectory=perhaps\n").startswith(
        'voicemail.conf:2: "usedirectory" must be yes or no'
    )


def test_forward_settings_come_from_general_and_the_mailbox() -> None:
    merged = MenuSettings.from_options(
        {"forward_urgent_auto": "yes", "maxsilence": "5"}, {"sendvoicemail": "yes"}
    )
    assert (merged.forward_urgent_auto, merged.sendvoicemail, merged.maxsilence) == (True, True, 5)
    assert MenuSettings.from_options({}) == MenuSettings()
    assert settings("[general]\nsendvoicemail=yes\nforward_urgent_auto=yes\n").warnings == []
