"""Asterisk .conf parsing as an operator copying files from an Asterisk box would see it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from storage.conffile import (
    ConfigError,
    ConfigFile,
    Section,
    Variable,
    load_config,
    parse_config_text,
)


def parse(text: str, filename: str = "test.conf", base_dir: Path | None = None) -> ConfigFile:
    return parse_config_text(text, filename, base_dir)


def error_of(text: str, filename: str = "test.conf", base_dir: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, filename, base_dir)
    return info.value


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- sections and variables -------------------------------------------------------------------


def test_sections_keep_file_order_and_repeated_names_stay_separate() -> None:
    cfg = parse("[general]\na=1\n[ctx]\nb=2\n[other]\n[ctx]\nc=3\n")
    assert [s.name for s in cfg.sections] == ["general", "ctx", "other", "ctx"]
    assert cfg.names() == ["general", "ctx", "other"]
    assert [s.items() for s in cfg.sections_named("ctx")] == [[("b", "2")], [("c", "3")]]
    first = cfg.section("CTX")  # category names compare case-insensitively
    assert first is not None and first.get("b") == "2" and first.line == 3
    assert cfg.section("missing") is None and cfg.sections_named("missing") == []


def test_equals_and_object_arrow_are_told_apart_and_whitespace_is_stripped() -> None:
    cfg = parse("[s]\n  name   =   some value  \n1000=>1234\nurl = a=b\nempty =\nx => y => z\n")
    s = cfg.sections[0]
    assert s.variables == [
        Variable("name", "some value", False, "test.conf", 2),
        Variable("1000", "1234", True, "test.conf", 3),
        Variable("url", "a=b", False, "test.conf", 4),
        Variable("empty", "", False, "test.conf", 5),
        Variable("x", "y => z", True, "test.conf", 6),
    ]


def test_get_is_case_insensitive_and_returns_the_last_value() -> None:
    s = parse("[peer]\nallow = ulaw\nAllow = alaw\ndisallow=all\n").sections[0]
    assert s.get("ALLOW") == "alaw"
    assert s.getall("allow") == ["ulaw", "alaw"]
    assert s.get("missing") is None and s.get("missing", "dflt") == "dflt"
    assert s.getall("missing") == []
    assert s.items() == [("allow", "ulaw"), ("Allow", "alaw"), ("disallow", "all")]


def test_plus_equals_appends_to_the_last_value_of_that_name() -> None:
    # As in Asterisk, the raw text after "+=" is glued on, so spacing is the writer's choice.
    s = parse("[s]\nopts = a\nopts = b\nopts +=,c\nopts += d\nnew += x\n").sections[0]
    assert s.getall("opts") == ["a", "b,c d"]
    assert s.variable("opts").line == 5
    assert s.get("new") == "x"


def test_backslash_lets_a_name_start_with_a_bracket_or_hash() -> None:
    s = parse("[s]\n\\[odd] = 1\n\\#hash => 2\n").sections[0]
    assert s.items() == [("[odd]", "1"), ("#hash", "2")]


# --- comments -------------------------------------------------------------------------------


def test_semicolon_comments_and_escaped_semicolons() -> None:
    text = "; header comment\n[s] ; trailing\nsecret = ab\\;cd ; real comment\nx = 1;\n"
    s = parse(text).sections[0]
    assert s.items() == [("secret", "ab;cd"), ("x", "1")]


def test_block_comments_span_lines_and_keep_text_around_them() -> None:
    text = (
        "[s]\n"
        "a = 1 ;-- hidden\n"
        "b = 2\n"
        "still hidden --; c = 3\n"
        "d = 4 ;-- inline --; ; line comment\n"
        ";--- a normal comment, not a block\n"
        "e = 5\n"
    )
    s = parse(text).sections[0]
    assert s.items() == [("a", "1"), ("c", "3"), ("d", "4"), ("e", "5")]
    assert s.variable("c") is not None and s.variable("c").line == 4


def test_block_comments_nest() -> None:
    text = "[s]\n;-- outer ;-- inner --; still outer\nhidden = 1\n--;\nshown = 2\n"
    assert parse(text).sections[0].items() == [("shown", "2")]


def test_unterminated_block_comment_hides_the_rest_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="storage.conffile"):
        cfg = parse("[s]\na = 1\n;-- never closed\nb = 2\n")
    assert cfg.sections[0].items() == [("a", "1")]
    assert "test.conf:3:" in caplog.text


# --- templates ------------------------------------------------------------------------------


def test_templates_are_hidden_and_children_inherit_in_order_then_override() -> None:
    text = (
        "[codecs](!)\ndisallow = all\nallow = ulaw\n"
        "[nat](!)\nnat = force_rport,comedia\nallow = alaw\n"
        "[1000](codecs,nat)\nsecret = x\nallow = g722\n"
    )
    cfg = parse(text)
    assert cfg.names() == ["1000"]
    peer = cfg.sections[0]
    assert not peer.is_template
    assert peer.items() == [
        ("disallow", "all"),
        ("allow", "ulaw"),
        ("nat", "force_rport,comedia"),
        ("allow", "alaw"),
        ("secret", "x"),
        ("allow", "g722"),
    ]
    assert peer.get("allow") == "g722"
    # An inherited variable still says where it was written.
    assert peer.variable("disallow") == Variable("disallow", "all", False, "test.conf", 2)


def test_template_inheriting_a_template_and_inheriting_a_plain_section() -> None:
    text = "[base](!)\na = 1\n[mid](!,base)\nb = 2\n[leaf](mid)\nc = 3\n[copy](leaf)\n"
    cfg = parse(text)
    assert cfg.names() == ["leaf", "copy"]
    assert cfg.section("copy").items() == [("a", "1"), ("b", "2"), ("c", "3")]


def test_plus_appends_to_the_earlier_section() -> None:
    text = "[general]\nformat = wav\n[other]\nx = 1\n[general](+)\nmaxmsg = 50\n"
    cfg = parse(text)
    assert cfg.names() == ["general", "other"]
    general = cfg.section("general")
    assert general.items() == [("format", "wav"), ("maxmsg", "50")]
    assert general.line == 1 and general.variable("maxmsg").line == 6


def test_template_errors_name_the_line() -> None:
    err = error_of("[a]\nx=1\n[b](nosuch)\n")
    assert str(err) == 'test.conf:3: unknown template "nosuch"'
    err = error_of("[a]\n[b](+)\n")
    assert (err.line, err.message) == (2, '"[b](+)" adds to a section not defined before')
    # A template only exists from its definition on.
    assert error_of("[b](later)\n[later](!)\n").line == 1


# --- errors ---------------------------------------------------------------------------------


def test_line_without_equals_is_an_error_with_file_and_line() -> None:
    err = error_of("; comment\n\n[general]\nformat = wav\n\n  bogus  \n", filename="sip.conf")
    assert isinstance(err, ConfigError)
    assert (err.filename, err.line) == ("sip.conf", 6)
    assert err.message == 'expected "name = value" or "name => value", got "bogus"'
    assert str(err) == 'sip.conf:6: expected "name = value" or "name => value", got "bogus"'


def test_variable_before_any_section_is_an_error() -> None:
    err = error_of(";comment\nformat = wav\n[general]\n")
    assert err.line == 2 and "before the first [section]" in err.message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[general\n", 1),
        ("[a]\n[general] junk\n", 2),
        ("[a]\nx=1\n[]\n", 3),
        ("[general](!\n", 1),
        ("[a]\n = value\n", 2),
        ("[a]\n\\ x = 1\n", 2),
    ],
)
def test_malformed_lines_are_errors_at_their_line(text: str, line: int) -> None:
    assert error_of(text).line == line


def test_exec_and_unknown_directives_are_refused() -> None:
    err = error_of("[a]\n#exec /bin/date\n")
    assert err.line == 2 and "#exec is not supported" in err.message
    err = error_of("[a]\n#inlcude foo.conf\n")
    assert str(err) == 'test.conf:2: unknown directive "#inlcude"'


def test_config_error_is_an_exception_with_readable_text() -> None:
    err = ConfigError("voicemail.conf", 7, "bad")
    assert str(err) == "voicemail.conf:7: bad"
    assert (err.filename, err.line, err.message) == ("voicemail.conf", 7, "bad")


# --- typed getters --------------------------------------------------------------------------


def test_getbool_accepts_asterisk_words_and_rejects_others_at_their_line() -> None:
    words = ["yes", "TRUE", "y", "t", "1", "On", "no", "false", "N", "f", "0", "off"]
    text = "[s]\n" + "".join(f"v{i} = {w}\n" for i, w in enumerate(words)) + "attach = maybe\n"
    s = parse(text).sections[0]
    assert [s.getbool(f"v{i}", False) for i in range(6)] == [True] * 6
    assert [s.getbool(f"v{i}", True) for i in range(6, 12)] == [False] * 6
    assert s.getbool("missing", True) is True
    with pytest.raises(ConfigError) as info:
        s.getbool("ATTACH", False)
    assert str(info.value) == 'test.conf:14: "attach" must be yes or no, got "maybe"'


def test_getint_parses_decimal_and_rejects_others_at_their_line() -> None:
    s = parse("[s]\nmaxmsg = 100\nminsecs = -3\nmaxsecs = 12s\n").sections[0]
    assert s.getint("maxmsg", 0) == 100 and s.getint("minsecs", 0) == -3
    assert s.getint("missing", 42) == 42
    with pytest.raises(ConfigError) as info:
        s.getint("maxsecs", 0)
    assert (info.value.line, info.value.message) == (4, '"maxsecs" must be an integer, got "12s"')


# --- includes -------------------------------------------------------------------------------


def test_include_forms_and_relative_paths(tmp_path: Path) -> None:
    write(tmp_path / "plain.conf", "[plain]\na = 1\n")
    write(tmp_path / "quoted.conf", "[quoted]\nb = 2\n")
    write(tmp_path / "angle.conf", "[angle]\nc = 3\n")
    # Nested include resolves against the directory of the file that includes it.
    write(tmp_path / "sub" / "outer.conf", "[outer]\n#include inner.conf\n")
    write(tmp_path / "sub" / "inner.conf", "d = 4\n")
    top = write(
        tmp_path / "top.conf",
        '[top]\n#include plain.conf\n#include "quoted.conf"\n#include <angle.conf>\n'
        "#include sub/outer.conf\n#tryinclude missing.conf\n[last]\n",
    )
    cfg = load_config(top)
    assert cfg.names() == ["top", "plain", "quoted", "angle", "outer", "last"]
    d = cfg.section("outer").variable("d")
    assert d == Variable("d", "4", False, str(Path("sub") / "inner.conf"), 1)
    assert cfg.section("plain").filename == "plain.conf"
    assert cfg.section("top").filename == str(top)


def test_included_lines_before_a_header_join_the_current_section(tmp_path: Path) -> None:
    write(tmp_path / "more.conf", "exten => 2,1,Hangup()\n[other]\nx = 1\n")
    top = write(tmp_path / "extensions.conf", "[ctx]\nexten => 1,1,Answer()\n#include more.conf\n")
    write(tmp_path / "extensions.conf", top.read_text() + "exten => 3,1,Wait(1)\n")
    cfg = load_config(top)
    # After the include, the including file carries on in its own section (as Asterisk does).
    assert cfg.section("ctx").getall("exten") == ["1,1,Answer()", "2,1,Hangup()", "3,1,Wait(1)"]
    assert cfg.section("other").items() == [("x", "1")]


def test_glob_include_reads_matches_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "20-b.conf", "[b]\n")
    write(tmp_path / "conf.d" / "10-a.conf", "[a]\n")
    write(tmp_path / "conf.d" / "ignored.txt", "[nope]\n")
    top = write(tmp_path / "sip.conf", "#include conf.d/*.conf\n#tryinclude none.d/*.conf\n")
    assert load_config(top).names() == ["a", "b"]
    write(top, "[x]\n#include none.d/*.conf\n")
    with pytest.raises(ConfigError) as info:
        load_config(top)
    assert info.value.line == 2 and "not found" in info.value.message


def test_missing_include_is_an_error_at_the_include_line(tmp_path: Path) -> None:
    top = write(tmp_path / "voicemail.conf", "[general]\n\n#include nothere.conf\n")
    with pytest.raises(ConfigError) as info:
        load_config(top)
    assert str(info.value) == f'{top}:3: #include file "nothere.conf" not found'


def test_errors_inside_an_included_file_name_that_file(tmp_path: Path) -> None:
    write(tmp_path / "users.d" / "bad.conf", "[users]\n1000 => 1234\noops\n")
    top = write(tmp_path / "voicemail.conf", "#include users.d/bad.conf\n")
    with pytest.raises(ConfigError) as info:
        load_config(top)
    assert (info.value.filename, info.value.line) == (str(Path("users.d") / "bad.conf"), 3)


def test_include_loop_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "b.conf", "[b]\n#include a.conf\n")
    top = write(tmp_path / "a.conf", "[a]\n#include b.conf\n")
    with pytest.raises(ConfigError) as info:
        load_config(top)
    assert (info.value.filename, info.value.line) == ("b.conf", 2)
    assert "a.conf -> b.conf -> a.conf" in info.value.message


def test_same_file_included_twice_is_not_a_loop(tmp_path: Path) -> None:
    write(tmp_path / "common.conf", "x = 1\n")
    top = write(tmp_path / "a.conf", "[one]\n#include common.conf\n[two]\n#include common.conf\n")
    assert [s.items() for s in load_config(top).sections] == [[("x", "1")], [("x", "1")]]


def test_text_with_base_dir_can_include_and_without_it_cannot(tmp_path: Path) -> None:
    write(tmp_path / "inc.conf", "[inc]\n")
    assert parse("#include inc.conf\n", base_dir=tmp_path).names() == ["inc"]
    assert "base directory" in error_of("#include inc.conf\n").message
    assert parse(f"#include {tmp_path / 'inc.conf'}\n").names() == ["inc"]


# --- files ----------------------------------------------------------------------------------


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "res_odbc.conf"
    assert load_config(path, required=False) == ConfigFile(str(path), [])
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:0: file not found"


def test_utf8_latin1_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "voicemail.conf"
    path.write_bytes(
        b"\xef\xbb\xbf[default]\r\n"
        b"1000 => 1234,Ren\xc3\xa9e\r\n"  # UTF-8
        b"1001 => 1234,Jos\xe9\r\n"  # latin-1 from an old box
    )
    cfg = load_config(path)
    assert cfg.section("default").items() == [("1000", "1234,Renée"), ("1001", "1234,José")]


# --- realistic files ------------------------------------------------------------------------

VOICEMAIL_CONF = """\
; Voicemail configuration copied from an Asterisk box
[general]
format=wav49|gsm|wav
serveremail=asterisk
attach=yes
maxmsg=100
odbcstorage=asterisk
odbctable=voicemessages
emailsubject=New message ${VM_MSGNUM} in mailbox ${VM_MAILBOX}

[zonemessages]
eastern=America/New_York|'vm-received' Q 'digits/at' IMp
military=Zulu|'vm-received' q 'digits/at' H N 'hours' 'phonetic/z_p'

[default]
1000 => 1234,Alice,alice@example.com,,attach=yes|tz=eastern
1001 => -4242,Bob ; unchangeable password
"""


def test_realistic_voicemail_conf() -> None:
    cfg = parse(VOICEMAIL_CONF, "voicemail.conf")
    assert cfg.names() == ["general", "zonemessages", "default"]
    general = cfg.section("general")
    assert general.get("format") == "wav49|gsm|wav"
    assert general.getbool("attach", False) is True
    assert general.getint("maxmsg", 0) == 100
    assert general.get("emailsubject") == "New message ${VM_MSGNUM} in mailbox ${VM_MAILBOX}"
    zones = cfg.section("zonemessages")
    assert zones.get("eastern") == "America/New_York|'vm-received' Q 'digits/at' IMp"
    mailboxes = cfg.section("default")
    assert mailboxes.variables[0] == Variable(
        "1000", "1234,Alice,alice@example.com,,attach=yes|tz=eastern", True, "voicemail.conf", 16
    )
    assert mailboxes.get("1001") == "-4242,Bob"


EXTENSIONS_CONF = """\
[globals]
VMCONTEXT=default

[voicemail]
exten => _X.,1,VoiceMail(${EXTEN}@default,u)
same => n,Hangup()
exten => *98,1,VoiceMailMain(@default)

[voicemail]
exten => 500,1,Playback(vm-intro)
"""


def test_realistic_extensions_conf_is_kept_as_object_variables() -> None:
    cfg = parse(EXTENSIONS_CONF, "extensions.conf")
    first, second = cfg.sections_named("voicemail")
    assert [(v.name, v.value, v.is_object) for v in first.variables] == [
        ("exten", "_X.,1,VoiceMail(${EXTEN}@default,u)", True),
        ("same", "n,Hangup()", True),
        ("exten", "*98,1,VoiceMailMain(@default)", True),
    ]
    assert second.getall("exten") == ["500,1,Playback(vm-intro)"]
    assert cfg.section("globals").variables[0].is_object is False
    assert isinstance(first, Section) and first.line == 4
