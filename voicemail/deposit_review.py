"""After the beep: app_voicemail's play_record_review for a caller leaving a message.

`review=yes` gives the caller the review menu (fact sheet 5.1 step 9): 1 save, 2 listen, 3
record again (vm-intro and the beep first), 4 toggle urgent (leaveurgent=yes), 0 operator
(operator=yes); anything else is vm-sorry. Three rounds without an answer (6 s each) end the
menu with the message kept. A caller who hangs up during the menu keeps the message too.

The operator key: pressed while recording (the cancel key when operator=yes) or in the menu,
it plays vm-saveoper and waits 3 s: 1 keeps the message, 4 keeps it urgent, anything else
deletes it (vm-deleted); the caller then goes to the `o` extension.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.channel import Channel, ChannelHungUp, Recording, StopReason

ANY_DIGIT = "0123456789*#"
REVIEW_ROUNDS = 3  # unanswered menus before the menu gives up (keeping the message)
REVIEW_WAIT = 6.0  # seconds to wait for a key after each menu
OPERATOR_WAIT = 3.0  # seconds to wait for 1 or 4 after vm-saveoper

PlayPrompts = Callable[[list[str], str], Awaitable[str | None]]
RecordAgain = Callable[[], Awaitable[Recording]]


@dataclass
class Outcome:
    pcm: bytes
    keep: bool  # False: the caller deleted it (operator key, then not 1 or 4)
    flag: str  # "", "Urgent" or "PRIORITY"
    operator: bool = False  # the caller asked for the operator: go to `o`
    stop: StopReason | None = None  # how the last recording ended


@dataclass
class ReviewSettings:
    review: bool
    operator: bool
    leave_urgent: bool


async def operator_choice(play: PlayPrompts, channel: Channel, outcome: Outcome) -> Outcome:
    """vm-saveoper, then 1 keeps, 4 keeps urgent, anything else (or silence) deletes."""
    digit = await play(["vm-saveoper"], ANY_DIGIT)
    if digit is None:
        digit = await channel.wait(OPERATOR_WAIT, ANY_DIGIT)
    outcome.operator = True
    if digit in ("1", "4"):
        if digit == "4":
            outcome.flag = "Urgent"
        await play(["vm-msgsaved"], "")
        outcome.keep = True
    else:
        await play(["vm-deleted"], "")
        outcome.keep = False
    return outcome


async def review(
    play: PlayPrompts,
    channel: Channel,
    record_again: RecordAgain,
    settings: ReviewSettings,
    outcome: Outcome,
) -> Outcome:
    """The review loop; returns what to store. Never raises ChannelHungUp: a caller who hangs
    up keeps what was recorded (Asterisk stores it)."""
    try:
        return await _review(play, channel, record_again, settings, outcome)
    except ChannelHungUp:
        return outcome


async def _review(
    play: PlayPrompts,
    channel: Channel,
    record_again: RecordAgain,
    settings: ReviewSettings,
    outcome: Outcome,
) -> Outcome:
    unanswered = 0
    key: str | None = None
    while True:
        if key is None:
            menu = ["vm-review"]
            if settings.leave_urgent:
                menu.append(
                    "vm-review-nonurgent" if outcome.flag == "Urgent" else "vm-review-urgent"
                )
            if settings.operator:
                menu.append("vm-reachoper")
            key = await play(menu, ANY_DIGIT)
            if key is None:
                key = await channel.wait(REVIEW_WAIT, ANY_DIGIT)
            if key is None:
                unanswered += 1
                if unanswered >= REVIEW_ROUNDS:
                    return outcome  # kept, no goodbye (Asterisk's timeout path)
                continue
        if key == "1":
            await play(["vm-msgsaved"], "")
            return outcome
        if key == "2":
            key = await channel.play(outcome.pcm, ANY_DIGIT)
            continue
        if key == "3":
            await play(["vm-intro"], "")
            await play(["beep"], "")
            recording = await record_again()
            outcome.pcm = recording.pcm
            outcome.stop = recording.reason
            if recording.reason is StopReason.HANGUP:
                return outcome
            if recording.digit == "0" and settings.operator:
                return await operator_choice(play, channel, outcome)
            await play(["auth-thankyou"], "")
            key = None
            continue
        if key == "4" and settings.leave_urgent:
            urgent = outcome.flag == "Urgent"
            outcome.flag = "" if urgent else "Urgent"
            await play(["vm-marked-nonurgent" if urgent else "vm-marked-urgent"], "")
            key = None
            continue
        if key == "0" and settings.operator:
            return await operator_choice(play, channel, outcome)
        await play(["vm-sorry"], "")
        key = None
