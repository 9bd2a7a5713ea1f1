"""VoiceMailMain's main and message menus, key by key (fact sheet 5.2), without I/O."""

from __future__ import annotations

from voicemail.vmmain.events import (
    CallerId,
    CopyMessage,
    DeleteGreeting,
    Duration,
    EmptyFolder,
    Envelope,
    FolderEdits,
    FolderName,
    Intro,
    OpenFolder,
    Play,
    PlayMessage,
    PlayRecording,
    Record,
    SaveGreeting,
    SayNumber,
)
from voicemail.vmmain.options import MainArgs, MenuSettings

from .test_vmmain_core import Sim, messages

ONE_FOR = ("vm-onefor", FolderName(0), "vm-opts", "vm-helpexit")


def header_and_audio(log: list, folder: int = 0) -> list:
    return [a for a in log if isinstance(a, PlayMessage)]


def test_1_plays_the_first_message_with_its_envelope() -> None:
    sim = Sim(folders={0: messages(0, 1)}, keys="1")
    log = sim.run()
    assert sim.plays()[2] == ("vm-first", "vm-message", Envelope(1_700_000_000))
    assert PlayMessage(0, 0, 3000) in log
    # after it, the message menu: no 'prev' on the first, 'next' since there is a second
    assert sim.plays()[3] == (
        "vm-advopts",
        "vm-repeat",
        "vm-next",
        "vm-delete",
        "vm-toforward",
        "vm-savemessage",
        "vm-helpexit",
    )


def test_message_n_and_last() -> None:
    sim = Sim(folders={0: messages(0, 1, 2)}, keys="166")
    sim.run()
    plays = sim.plays()
    assert ("vm-message", SayNumber(2), Envelope(1_700_000_001)) in plays
    assert ("vm-last", "vm-message", Envelope(1_700_000_002)) in plays
    last_menu = plays[-2]
    assert last_menu[0] == "vm-prev" and "vm-next" not in last_menu


def test_urgent_flag_category_callerid_and_duration() -> None:
    sim = Sim(
        folders={0: messages(0, flag="Urgent", category="sales", callerid="5551234", duration=150)},
        settings=MenuSettings(saycid=True),
        keys="1",
    )
    sim.run()
    assert sim.plays()[2] == (
        "vm-first",
        "vm-Urgent",
        "vm-message",
        "sales",
        Envelope(1_700_000_000),
        CallerId("5551234"),
        Duration(2),
    )


def test_short_messages_and_envelope_off() -> None:
    sim = Sim(
        folders={0: messages(0, duration=119)},
        settings=MenuSettings(envelope=False),
        keys="1",
    )
    sim.run()
    assert sim.plays()[2] == ("vm-first", "vm-message")


def test_1_during_the_envelope_skips_to_the_audio_other_keys_act() -> None:
    sim = Sim(folders={0: messages(0, 1)}, keys="11", patient=False)
    log = sim.run()
    assert PlayMessage(0, 0, 3000) in log
    sim = Sim(folders={0: messages(0, 1)}, keys="16", patient=False)
    log = sim.run()
    assert [a.msgnum for a in log if isinstance(a, PlayMessage)] == [1]


def test_1_in_an_empty_folder() -> None:
    sim = Sim(keys="1")
    sim.run()
    assert sim.plays()[2] == (EmptyFolder(11),)


def test_5_repeats_the_current_message() -> None:
    sim = Sim(folders={0: messages(0, 1)}, keys="165")
    log = sim.run()
    assert [a.msgnum for a in log if isinstance(a, PlayMessage)] == [0, 1, 1]


def test_4_and_6_previous_next_and_no_more() -> None:
    sim = Sim(folders={0: messages(0, 1)}, keys="16664")
    sim.run()
    log = sim.log
    assert [a.msgnum for a in log if isinstance(a, PlayMessage)] == [0, 1, 0]
    assert sim.plays().count(("vm-nomore",)) == 2


def test_messagewrap_wraps_both_ways() -> None:
    sim = Sim(folders={0: messages(0, 1)}, keys="1664", settings=MenuSettings(messagewrap=True))
    log = sim.run()
    assert [a.msgnum for a in log if isinstance(a, PlayMessage)] == [0, 1, 0, 1]


def test_next_after_the_last_urgent_goes_to_inbox() -> None:
    sim = Sim(folders={11: messages(0), 0: messages(0, 1)}, keys="164")
    log = sim.run()
    assert [a.folder for a in log if isinstance(a, OpenFolder)] == [11, 0]
    assert [(a.folder, a.msgnum) for a in log if isinstance(a, PlayMessage)] == [(11, 0), (0, 0)]
    # leaving Urgent closed it: the heard urgent message went to Old, so 4 has nowhere to go
    assert sim.closes()[0] == FolderEdits("Urgent", to_old=(0,))
    assert ("vm-nomore",) in sim.plays()
    assert sim.plays()[0] == (Intro(new=2, old=0, urgent=1),)


def test_previous_from_the_first_new_goes_back_into_urgent() -> None:
    sim = Sim(
        folders={11: messages(0), 0: messages(0, 1)},
        keys="164",
        settings=MenuSettings(moveheard=False),
    )
    log = sim.run()
    assert [a.folder for a in log if isinstance(a, OpenFolder)] == [11, 0, 11]
    assert [(a.folder, a.msgnum) for a in log if isinstance(a, PlayMessage)] == [
        (11, 0),
        (0, 0),
        (11, 0),
    ]


def test_7_deletes_and_undeletes() -> None:
    sim = Sim(folders={0: messages(0, 1)}, keys="177")
    sim.run()
    assert ("vm-deleted",) in sim.plays() and ("vm-undeleted",) in sim.plays()
    assert sim.closes() == [FolderEdits("INBOX", to_old=(0,))]
    sim = Sim(folders={0: messages(0, 1)}, keys="17")
    sim.run()
    assert sim.closes() == [FolderEdits("INBOX", delete=(0,))]
    menu_after = sim.plays()[5]
    assert "vm-undelete" in menu_after


def test_7_with_nextaftercmd_plays_the_next() -> None:
    sim = Sim(folders={0: messages(0, 1)}, keys="17", settings=MenuSettings(nextaftercmd=True))
    log = sim.run()
    assert [a.msgnum for a in log if isinstance(a, PlayMessage)] == [0, 1]
    assert sim.closes() == [FolderEdits("INBOX", delete=(0,), to_old=(1,))]


def test_7_is_ignored_read_only() -> None:
    sim = Sim(folders={0: messages(0)}, keys="17", args=MainArgs(read_only=True))
    sim.run()
    assert ("vm-deleted",) not in sim.plays()
    assert all("vm-delete" not in p for p in sim.plays())
    assert sim.closes() == [FolderEdits("INBOX", to_old=(0,))]


def test_heard_messages_stay_with_moveheard_off_and_in_old() -> None:
    sim = Sim(folders={0: messages(0)}, keys="1", settings=MenuSettings(moveheard=False))
    sim.run()
    assert sim.closes() == []
    sim = Sim(folders={1: messages(0)}, keys="1")
    sim.run()
    assert sim.closes() == []


def test_9_saves_to_a_folder_and_deletes_the_original_on_close() -> None:
    sim = Sim(folders={0: messages(0, 1)}, keys="192")
    log = sim.run()
    assert ("vm-savefolder",) in sim.plays()
    assert CopyMessage(0, 0, 2, 100) in log
    assert ("vm-message", SayNumber(1), "vm-savedto", FolderName(2)) in sim.plays()
    assert sim.closes() == [FolderEdits("INBOX", delete=(0,))]


def test_9_folder_menu_lists_folders_1_to_4_then_cancels() -> None:
    sim = Sim(folders={0: messages(0)}, keys="19")
    log = sim.run()
    plays = sim.plays()
    assert ("vm-press",) in plays
    assert (SayNumber(1), "vm-for", FolderName(1)) in plays
    assert (SayNumber(0), "vm-for", FolderName(0)) not in plays
    assert plays.count(("vm-tocancel",)) == 4  # four rounds, then as '#'
    assert not any(isinstance(a, CopyMessage) for a in log)
    assert sim.closes() == [FolderEdits("INBOX", to_old=(0,))]


def test_9_to_a_full_folder() -> None:
    sim = Sim(folders={0: messages(0)}, keys="193", full=True)
    sim.run()
    assert ("vm-mailboxfull",) in sim.plays()
    assert sim.closes() == [FolderEdits("INBOX", to_old=(0,))]


def test_2_changes_folder_closing_the_open_one() -> None:
    sim = Sim(folders={0: messages(0, 1), 1: messages(0)}, keys="1721")
    log = sim.run()
    assert ("vm-changeto",) in sim.plays()
    assert (SayNumber(0), "vm-for", FolderName(0)) in sim.plays()
    assert [a.folder for a in log if isinstance(a, OpenFolder)] == [0, 1]
    assert sim.closes()[0] == FolderEdits("INBOX", delete=(0,))
    assert (FolderName(1),) in sim.plays()
    # back in the main menu of Old
    after = sim.plays()[sim.plays().index((FolderName(1),)) + 1]
    assert after == ("vm-onefor", FolderName(1), "vm-opts", "vm-helpexit")


def test_2_then_pound_cancels() -> None:
    sim = Sim(folders={0: messages(0)}, keys="2#")
    log = sim.run()
    assert [a.folder for a in log if isinstance(a, OpenFolder)] == [0]
    assert (FolderName(0),) in sim.plays()


def test_star_is_help_in_the_message_menu() -> None:
    sim = Sim(folders={0: messages(0)}, keys="1*")
    sim.run()
    assert ("vm-onefor", FolderName(0), "vm-opts", "vm-repeat") == sim.plays()[4][:4]
    sim = Sim(folders={0: messages(0)}, keys="*")
    sim.run()
    assert sim.plays()[2] == ONE_FOR  # main menu: the instructions again


def test_pound_exits_with_goodbye() -> None:
    sim = Sim(folders={0: messages(0)}, keys="1#")
    log = sim.run()
    assert log[-3:-1] == [Play(("vm-goodbye",), interrupt=""), log[-2]]
    assert sim.closes() == [FolderEdits("INBOX", to_old=(0,))]
    assert log[-1].keep_going  # type: ignore[union-attr]


def test_autoplay_folder() -> None:
    sim = Sim(folders={1: messages(0, 1)}, args=MainArgs(autoplay=1), keys="#")
    log = sim.run()
    assert [a.folder for a in log if isinstance(a, OpenFolder)] == [1]
    assert not any(isinstance(i, Intro) for p in sim.plays() for i in p)
    assert PlayMessage(1, 0, 3000) in log
    sim = Sim(args=MainArgs(autoplay=2))
    sim.run()
    assert sim.plays() == [(EmptyFolder(2),), ("vm-goodbye",)]


def test_skipms_reaches_the_player() -> None:
    sim = Sim(folders={0: messages(0)}, keys="1", settings=MenuSettings(skipms=5000))
    assert PlayMessage(0, 0, 5000) in sim.run()


def test_0_options_record_the_unavailable_greeting_listen_and_accept() -> None:
    sim = Sim(folders={0: messages(0)}, keys="0121#", settings=MenuSettings(maxgreet=60))
    log = sim.run()
    plays = sim.plays()
    assert ("vm-options",) in plays
    assert ("vm-rec-unv", "beep") in plays
    assert Record(60, "#") in log
    assert ("auth-thankyou",) in plays and ("vm-review",) in plays
    assert PlayRecording() in log
    assert SaveGreeting("unavail") in log
    assert ("vm-msgsaved",) in plays
    # then the options menu again ('#' there only repeats it), four silent rounds, main menu
    after = plays[plays.index(("vm-msgsaved",)) + 1 :]
    assert after[:5] == [("vm-options",)] * 5
    assert after[5] == ONE_FOR


def test_0_options_greetings_busy_name_and_rerecord() -> None:
    for key, kind, prompt in (("2", "busy", "vm-rec-busy"), ("3", "greet", "vm-rec-name")):
        sim = Sim(keys="0" + key + "31")
        log = sim.run()
        assert [a for a in log if isinstance(a, Record)] == [Record(0, "#")] * 2
        assert sim.plays().count((prompt, "beep")) == 2
        assert SaveGreeting(kind) in log


def test_review_silence_discards_and_other_keys_are_sorry() -> None:
    sim = Sim(keys="015")
    log = sim.run()
    assert ("vm-sorry",) in sim.plays()
    assert sim.plays().count(("vm-review",)) == 4  # once before 5, three silent rounds
    assert not any(isinstance(a, SaveGreeting) for a in log)


def test_0_options_temporary_greeting() -> None:
    sim = Sim(keys="041")
    log = sim.run()
    assert ("vm-rec-temp", "beep") in sim.plays()
    assert SaveGreeting("temp") in log
    sim = Sim(keys="042", temp_greeting=True)
    log = sim.run()
    assert ("vm-tmpexists", "vm-options") in sim.plays()
    assert ("vm-tempgreeting2",) in sim.plays()
    assert DeleteGreeting("temp") in log
    assert ("vm-tempremoved",) in sim.plays()


def test_0_options_star_returns_and_silence_returns_after_four_rounds() -> None:
    sim = Sim(folders={0: messages(0)}, keys="0*")
    sim.run()
    assert sim.plays()[3] == ONE_FOR
    sim = Sim(keys="0")
    sim.run()
    assert sim.plays().count(("vm-options",)) == 4


def test_hang_up_while_recording_a_greeting_keeps_nothing_and_closes() -> None:
    sim = Sim(folders={0: messages(0, 1)}, keys="170")
    sim.hang_up_when = lambda a, s: isinstance(a, Record)
    log = sim.run()
    assert not any(isinstance(a, SaveGreeting) for a in log)
    assert sim.closes() == [FolderEdits("INBOX", delete=(0,))]
