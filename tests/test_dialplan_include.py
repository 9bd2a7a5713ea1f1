"""extensions.conf include =>, [globals], [general], applications() and refused lines."""

from __future__ import annotations

import pytest

from storage.conffile import ConfigError, parse_config_text
from voicemail.dialplan import Dialplan


def dialplan(text: str) -> Dialplan:
    return Dialplan.from_config(parse_config_text(text, "extensions.conf"))


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        dialplan(text)
    return str(info.value)


def test_include_is_searched_after_the_own_extensions_in_order_and_recursively() -> None:
    plan = dialplan(
        "[default]\n"
        "include => first\n"
        "include => second\n"
        "exten => 500,1,VoiceMailMain()\n"
        "[first]\n"
        "exten => _5XX,1,Playback(first)\n"
        "include => deeper\n"
        "[second]\n"
        "exten => _X.,1,VoiceMail(${EXTEN}@default,u)\n"
        "exten => 600,1,Playback(second)\n"
        "[deeper]\n"
        "exten => 600,1,Playback(deeper)\n"
    )
    assert plan.match("default", "500").steps[0].app == "VoiceMailMain"  # own first
    assert plan.match("default", "501").steps[0].args == "first"
    # first's include (deeper) is searched before second: depth first, as Asterisk does.
    assert plan.match("default", "600").steps[0].args == "deeper"
    assert plan.match("default", "1000").steps[0].app == "VoiceMail"
    assert plan.match("second", "600").steps[0].args == "second"
    assert plan.match("deeper", "1000") is None
    assert plan.search_order("default") == ["default", "first", "deeper", "second"]


def test_include_loops_end() -> None:
    plan = dialplan(
        "[a]\ninclude => b\nexten => 1,1,NoOp(a)\n[b]\ninclude => a\nexten => 2,1,NoOp(b)\n"
    )
    assert plan.match("a", "2").steps[0].args == "b"
    assert plan.match("b", "1").steps[0].args == "a"
    assert plan.match("a", "3") is None
    assert plan.search_order("b") == ["b", "a"]


def test_include_errors_name_file_and_line() -> None:
    assert error("[a]\nexten => 1,1,NoOp()\ninclude => nosuch\n") == (
        "extensions.conf:3: [a] includes context 'nosuch', which is not defined"
    )
    assert "time-restricted includes are not supported" in error(
        "[a]\ninclude => b,09:00-17:00,mon-fri,*,*\n[b]\n"
    )


def test_globals_are_variables_and_may_use_earlier_globals() -> None:
    plan = dialplan(
        "[globals]\nVMCONTEXT=default\nBOX => 1000@${VMCONTEXT}\n"
        "[default]\nexten => 1,1,VoiceMail(${BOX},u)\n"
    )
    assert plan.globals == {"VMCONTEXT": "default", "BOX": "1000@default"}
    assert "globals" not in plan.contexts


def test_applications_lists_every_step_with_its_line() -> None:
    plan = dialplan(
        "[default]\nexten => 1,1,Answer()\nsame => n,Set(X=1)\n[other]\nexten => 2,1,Dial(SIP/a)\n"
    )
    assert list(plan.applications()) == [
        ("Answer", "extensions.conf", 2),
        ("Set", "extensions.conf", 3),
        ("Dial", "extensions.conf", 5),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ignorepat => 9", "'ignorepat =>' is not supported"),
        ("switch => IAX2/box/ctx", "only Realtime switches are supported"),
        ("lswitch => Loopback/foo", "'lswitch =>' is not supported"),
        ("exten => 1000/5551234,1,NoOp()", "caller ID matching is not supported"),
        ("frobnicate => 1", "unknown line 'frobnicate =>' in a context"),
    ],
)
def test_lines_we_do_not_run_are_refused(line: str, message: str) -> None:
    assert error(f"[default]\n{line}\n").startswith(f"extensions.conf:2: {message}")


def test_general_section_of_an_asterisk_sample_loads() -> None:
    plan = dialplan(
        "[general]\nstatic=yes\nwriteprotect=no\nclearglobalvars=no\nautofallthrough=yes\n"
        "[default]\nexten => 1000,hint,SIP/1000\nexten => 1000,1,VoiceMail(1000@default)\n"
    )
    assert plan.warnings == [
        "extensions.conf:4: clearglobalvars=no: not implemented yet (reload clears them)",
        "extensions.conf:7: hint for 1000: not implemented yet",
    ]
    assert plan.match("default", "1000").steps[0].app == "VoiceMail"
    assert "autofallthrough=no is not supported" in error("[general]\nautofallthrough=no\n")
    assert dialplan("[general]\nfoo=bar\n").warnings == ['extensions.conf:2: "foo": unknown option']
