"""The dial plan runner: priorities, labels, jumps, `i`, `h`, the loop guard, caller ID."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from channels.channel import CallerInfo, Channel
from channels.media import MediaClock, RtpSession
from storage.conffile import parse_config_text
from storage.realtime import Realtime
from storage.realtime_tables import extensions_table
from voicemail.callpath import CallPathDatabase
from voicemail.dialplan import Dialplan
from voicemail.dialplan_runner import DialplanRunner
from voicemail.goto import Goto

from .dbbackends import Backend
from .media_peer import NoSignalling
from .test_realtime import realtime_on

pytestmark = pytest.mark.timeout(30)


class Trace:
    """Applications for the tests: each records what it saw; none touches the network."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.goto: Goto | None = None

    def table(self) -> dict[str, object]:
        return {
            "noop": self.noop,
            "trace": self.trace,
            "callerhangsup": self.caller_hangs_up,
            "jump": self.jump,
            "answer": self.answer,
            "hangup": self.hangup,
        }

    async def noop(self, channel: Channel, args: list[str], variables: dict[str, str]) -> bool:
        return True

    async def trace(self, channel: Channel, args: list[str], variables: dict[str, str]) -> bool:
        self.seen.append(",".join(args))
        return True

    async def caller_hangs_up(
        self, channel: Channel, args: list[str], variables: dict[str, str]
    ) -> bool:
        variables["VMSTATUS"] = "SUCCESS"
        channel.remote_hangup("BYE")
        return True  # as VoiceMail() does when the caller hangs up after the message

    async def jump(
        self, channel: Channel, args: list[str], variables: dict[str, str]
    ) -> bool | Goto:
        return Goto(args[0]) if args else True  # VoiceMail()'s `*` -> a, `0` -> o

    async def answer(self, channel: Channel, args: list[str], variables: dict[str, str]) -> bool:
        await channel.answer()
        self.seen.append("answered")
        return True

    async def hangup(self, channel: Channel, args: list[str], variables: dict[str, str]) -> bool:
        channel.hangup(None, "Hangup()")
        return False


def runner_for(text: str, trace: Trace, realtime: Realtime | None = None) -> DialplanRunner:
    plan = Dialplan.from_config(parse_config_text(text, "extensions.conf"))
    return DialplanRunner(
        plan, realtime or Realtime([], {}), CallPathDatabase(), trace.table(), max_steps=50
    )


async def call(runner: DialplanRunner, exten: str, **info: str) -> Channel | None:
    caller = CallerInfo(exten=exten, context="default", call_id="t1", **info)
    handler = await runner.route(caller)
    if handler is None:
        return None
    channel = Channel(caller, NoSignalling(), RtpSession(MediaClock()))
    await asyncio.wait_for(handler(channel), 10)
    return channel


def run(runner: DialplanRunner, exten: str, **info: str) -> Channel | None:
    return asyncio.run(call(runner, exten, **info))


VOICEMAIL_PLAN = """[default]
exten => _X.,1,Trace(start ${EXTEN})
same => n,Set(VMSTATUS=${STATUS})
same => n,GotoIf($["${VMSTATUS}" = "SUCCESS"]?ok:failed)
same => n(ok),Trace(stored)
same => n,Goto(done)
same => n(failed),Trace(not stored)
same => n(done),Trace(end)
"""


@pytest.mark.parametrize(
    ("status", "seen"),
    [
        ("SUCCESS", ["start 1000", "stored", "end"]),
        ("FAILED", ["start 1000", "not stored", "end"]),
    ],
)
def test_gotoif_and_goto_follow_labels(status: str, seen: list[str]) -> None:
    trace = Trace()
    runner = runner_for(VOICEMAIL_PLAN.replace("${STATUS}", status), trace)
    run(runner, "1000")
    assert trace.seen == seen


def test_steps_are_logged_with_exten_context_and_priority(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    trace = Trace()
    run(runner_for(VOICEMAIL_PLAN.replace("${STATUS}", "FAILED"), trace), "1000")
    assert "call t1: executing [1000@default:3] GotoIf(0?ok:failed)" in caplog.text
    assert "call t1: executing [1000@default:6] Trace(not stored)" in caplog.text
    assert "[1000@default:4]" not in caplog.text


def test_goto_to_other_extension_and_context_sets_exten_and_context() -> None:
    trace = Trace()
    runner = runner_for(
        "[default]\n"
        "exten => 1000,1,Goto(other,s,begin)\n"
        "[other]\n"
        "exten => s,1,Trace(no)\n"
        "same => n(begin),Trace(${EXTEN}@${CONTEXT})\n"
        "same => n,Goto(2000,1)\n"
        "exten => 2000,1,Trace(${EXTEN}@${CONTEXT})\n",
        trace,
    )
    channel = run(runner, "1000")
    assert trace.seen == ["s@other", "2000@other"]
    assert channel is not None and channel.info.context == "other"
    assert channel.info.exten == "1000"  # the dialled number (the SIP dialog's) stays


def test_a_missing_priority_ends_the_extension_as_asterisk_does() -> None:
    trace = Trace()
    run(
        runner_for("[default]\nexten => 1000,1,Trace(1)\nexten => 1000,3,Trace(3)\n", trace), "1000"
    )
    assert trace.seen == ["1"]


def test_application_returning_goto_jumps_to_a_in_the_same_context() -> None:
    trace = Trace()
    runner = runner_for(
        "[default]\n"
        "exten => 1000,1,Jump(a)\n"
        "same => n,Trace(not here)\n"
        "exten => a,1,Trace(operator ${EXTEN})\n",
        trace,
    )
    run(runner, "1000")
    assert trace.seen == ["operator a"]


def test_goto_to_a_missing_extension_runs_i_with_invalid_exten() -> None:
    trace = Trace()
    runner = runner_for(
        "[default]\n"
        "exten => 1000,1,Goto(nosuch,1)\n"
        "exten => i,1,Trace(invalid ${INVALID_EXTEN} in ${EXTEN})\n",
        trace,
    )
    run(runner, "1000")
    assert trace.seen == ["invalid nosuch in i"]


def test_without_i_a_missing_extension_ends_the_call(caplog: pytest.LogCaptureFixture) -> None:
    trace = Trace()
    runner = runner_for(
        "[default]\nexten => 1000,1,Goto(nosuch,1)\nsame => n,Trace(no)\n"
        "exten => h,1,Trace(h ran)\n",
        trace,
    )
    run(runner, "1000")
    assert trace.seen == ["h ran"]
    assert "sent to invalid extension nosuch@default but there is no invalid handler" in (
        caplog.text
    )


def test_a_missing_label_ends_the_call_with_file_and_line(caplog: pytest.LogCaptureFixture) -> None:
    trace = Trace()
    run(
        runner_for("[default]\nexten => 1000,1,Goto(nolabel)\nsame => n,Trace(no)\n", trace), "1000"
    )
    assert trace.seen == []
    assert "extensions.conf:2: Goto: extension 1000@default has no label 'nolabel'" in caplog.text


def test_h_runs_after_the_caller_hangs_up_with_the_variables_and_no_audio() -> None:
    """The main dial plan stops at the hang-up; `h` sees VMSTATUS; audio in `h` ends it."""
    trace = Trace()
    runner = runner_for(
        "[default]\n"
        "exten => 1000,1,CallerHangsUp()\n"
        "same => n,Trace(after the hang-up)\n"
        "exten => h,1,Trace(h: ${VMSTATUS} ${EXTEN})\n"
        "same => n,Answer()\n"
        "same => n,Trace(not reached)\n",
        trace,
    )
    run(runner, "1000")
    assert trace.seen == ["h: SUCCESS h"]


def test_h_runs_when_the_dial_plan_ends_and_the_call_is_hung_up_first() -> None:
    trace = Trace()
    runner = runner_for(
        "[default]\nexten => 1000,1,Set(X=1)\nexten => h,1,Trace(h: X=${X})\n", trace
    )
    channel = run(runner, "1000")
    assert trace.seen == ["h: X=1"]
    assert channel is not None and channel.hung_up


def test_a_goto_loop_is_ended_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    trace = Trace()
    runner = runner_for(
        "[default]\nexten => 1000,1(top),Trace(x)\nsame => n,Goto(top)\nexten => h,1,Trace(h)\n",
        trace,
    )
    run(runner, "1000")
    assert trace.seen == ["x"] * 25 + ["h"]  # max_steps=50: 25 rounds of two steps
    assert "call t1: more than 50 dial plan steps, ending the call" in caplog.text


def test_set_callerid_is_what_applications_see() -> None:
    trace = Trace()
    runner = runner_for(
        "[default]\n"
        "exten => 1000,1,Set(CALLERID(num)=${CALLERID(num):1})\n"
        "same => n,Set(CALLERID(name)=Front Desk)\n"
        "same => n,Trace(${CALLERID(num)} ${CALLERID(name)})\n"
        'same => n,Set(CALLERID(all)="Carol" <3000>)\n'
        "same => n,Trace(${CALLERID(number)} ${CALLERID(name)})\n"
        "same => n,Set(CHANNEL(language)=fr)\n"
        "same => n,Trace(${CHANNEL(language)}.)\n",
        trace,
    )
    channel = run(runner, "1000", caller_id_num="9555", caller_id_name="x")
    assert trace.seen == ["555 Front Desk", "3000 Carol", "."]
    assert channel is not None
    assert (channel.info.caller_id_num, channel.info.caller_id_name) == ("3000", "Carol")


def test_bad_goto_arguments_end_the_call_with_file_and_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trace = Trace()
    run(runner_for("[default]\nexten => 1000,1,GotoIf(1)\nsame => n,Trace(no)\n", trace), "1000")
    assert trace.seen == []
    assert "extensions.conf:2: GotoIf(1): '1': GotoIf needs condition?" in caplog.text


def test_builtins_are_supported_applications() -> None:
    runner = runner_for(
        "[default]\nexten => 1,1,Goto(2,1)\nexten => 2,1,GotoIf(1?1,1)\n"
        "same => n,Set(A=1)\nsame => n,VoiceMailMain(@default)\n",
        Trace(),
    )
    assert runner.unsupported_applications() == [
        "extensions.conf:5: application VoiceMailMain is not implemented"
    ]


def test_extension_exists_in_static_and_included_contexts() -> None:
    runner = runner_for(
        "[default]\ninclude => more\nexten => a,1,NoOp()\n[more]\nexten => _0,1,NoOp()\n",
        Trace(),
    )

    async def check() -> list[bool]:
        return [
            await runner.extension_exists("default", "a"),
            await runner.extension_exists("default", "0"),  # through the include
            await runner.extension_exists("default", "o"),
            await runner.extension_exists("more", "a"),
            await runner.extension_exists("nosuch", "a"),
        ]

    assert asyncio.run(check()) == [True, True, False, False, False]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_extension_exists_and_goto_through_a_realtime_switch(
    backend: Backend, tmp_path: Path
) -> None:
    trace = Trace()

    async def scenario() -> tuple[list[bool], list[str]]:
        async with realtime_on(backend, [extensions_table()]) as (realtime, _pool):
            for exten, priority, app, data in (
                ("o", 1, "Trace", "operator ${EXTEN}"),
                ("_9XX", 1, "Trace", "pattern ${EXTEN}"),
            ):
                await realtime.store(
                    "extensions",
                    {"context": "db", "exten": exten, "priority": priority, "app": app,
                     "appdata": data},
                )  # fmt: skip
            runner = runner_for(
                "[default]\nswitch => Realtime/db@extensions\n"
                "exten => 1000,1,Jump(o)\nexten => 1001,1,Goto(901,1)\n",
                trace,
                realtime,
            )
            exists = [
                await runner.extension_exists("default", "o"),
                await runner.extension_exists("default", "a"),
                await runner.extension_exists("default", "901"),
            ]
            await call(runner, "1000")
            await call(runner, "1001")
            return exists, trace.seen

    exists, seen = asyncio.run(scenario())
    assert exists == [True, False, True]
    assert seen == ["operator o", "pattern 901"]


def test_a_bad_condition_is_logged_once_and_takes_the_false_branch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trace = Trace()
    runner = runner_for(
        "[default]\nexten => 1000,1,GotoIf($[1 +]?yes:no)\n"
        "same => n(yes),Trace(yes)\nsame => n(no),Trace(no)\n",
        trace,
    )
    run(runner, "1000")
    assert trace.seen == ["no"]
    assert caplog.text.count("$[1 +]: syntax error") == 1


def test_a_call_reaching_dial_ends_there_and_goes_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    """Toll fraud: there is no Dial; a dial plan step using it ends the call at that line."""
    trace = Trace()
    runner = runner_for(
        "[default]\nexten => 1000,1,Trace(before)\nsame => n,Dial(SIP/trunk/0900123456)\n"
        "same => n,Trace(after)\nexten => h,1,Trace(h)\n",
        trace,
    )
    channel = run(runner, "1000")
    assert trace.seen == ["before", "h"]
    assert channel is not None and channel.hung_up
    assert "extensions.conf:3: application Dial is not implemented; ending the call" in caplog.text
