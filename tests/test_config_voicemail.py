"""voicemail.conf values are checked at load: typos are errors at their line, unknown
options are warnings (Asterisk files must keep loading)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from storage.conffile import ConfigError, parse_config_text
from voicemail.config import VoicemailSettings, load_server_config, voicemail_settings
from voicemail.config_checks import edit_distance
from voicemail.config_names import VOICEMAIL_GENERAL


def settings(text: str) -> VoicemailSettings:
    return voicemail_settings(parse_config_text(text, "voicemail.conf"))


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        settings(text)
    return str(info.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("maxsecs=18O", '"maxsecs" must be an integer, got "18O"'),
        ("pollfreq=abc", '"pollfreq" must be an integer, got "abc"'),
        ("pollfreq=0", '"pollfreq" must be at least 1, got "0"'),
        ("maxmsg=-3", '"maxmsg" must be at least 0, got "-3"'),
        ("maxmsg=10000", '"maxmsg" must be at most 9999, got "10000"'),
        ("minsecs=-1", '"minsecs" must be at least 0, got "-1"'),
        ("attach=maybe", '"attach" must be yes or no, got "maybe"'),
        ("pollmailboxes=sometimes", '"pollmailboxes" must be yes or no, got "sometimes"'),
        ("volgain=loud", '"volgain" must be a number, got "loud"'),
        ("backupdeleted=lots", '"backupdeleted" must be an integer, got "lots"'),
        ("passwordlocation=db", '"passwordlocation" must be one of voicemail.conf, spooldir'),
        ("maxrecordsecs=0", '"maxrecordsecs" must be at least 1, got "0"'),
        ("spoolmaxmb=big", '"spoolmaxmb" must be an integer, got "big"'),
    ],
)
def test_bad_general_values_are_errors_at_their_line(line: str, message: str) -> None:
    assert error(f"[general]\nformat=wav\n{line}\n").startswith(f"voicemail.conf:3: {message}")


def test_format_must_be_a_supported_storage_format() -> None:
    text = error("[general]\nformat=wav49|mp3\n")
    assert text.startswith("voicemail.conf:2: \"format\" has 'mp3', which is not a supported")
    assert "wav, wav49, gsm, ulaw, alaw" in text
    assert settings("[general]\nformat=wav49|gsm|wav\n").formats == ["wav49", "gsm", "wav"]
    assert settings("[general]\nformat=WAV\n").formats == ["WAV"]


def test_good_values_load_and_our_options_have_defaults() -> None:
    vm = settings(
        "[general]\nmaxsecs=180\nmaxmsg=0\nattach=yes\nbackupdeleted=yes\nvolgain=-2.5\n"
        "maxrecordsecs=30\nspoolmaxmb=10\npollfreq=2\npollmailboxes=no\n"
    )
    assert (vm.maxrecordsecs, vm.spoolmaxmb, vm.pollfreq, vm.pollmailboxes) == (30, 10, 2, False)
    defaults = settings("[general]\n")
    assert (defaults.maxrecordsecs, defaults.spoolmaxmb) == (600, 1024)
    assert (defaults.pollfreq, defaults.pollmailboxes) == (5, True)


def test_unknown_and_unimplemented_options_are_warnings_with_file_and_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="voicemail.config"):
        vm = settings("[general]\nformat=wav\nformt=wav\nimapserver=imap.example.com\n")
    assert vm.warnings == [
        'voicemail.conf:3: "formt": unknown option',
        'voicemail.conf:4: "imapserver": not implemented yet',
    ]
    assert "voicemail.conf:3:" in caplog.text
    assert settings("[general]\nformat=wav\nmaxsecs=60\nlocalspool=/tmp/x\n").warnings == []


def test_deprecated_maxmessage_is_read_as_maxsecs_with_a_warning() -> None:
    vm = settings("[general]\nmaxmessage=90\n")
    assert vm.general["maxsecs"] == "90"
    assert vm.warnings == ['voicemail.conf:2: "maxmessage" is deprecated, use "maxsecs"']


def test_misspelt_special_section_names_are_warned_about() -> None:
    assert edit_distance("genral", "general") == 1
    vm = settings("[genral]\nformat => wav\n[zonemesages]\n[default]\n1000 => 1234\n")
    assert vm.warnings == [
        "voicemail.conf:1: section [genral] is read as a mailbox context; did you mean [general]?",
        "voicemail.conf:3: section [zonemesages] is read as a mailbox context; did you mean "
        "[zonemessages]?",
    ]


def test_mailbox_options_are_checked_like_general_ones() -> None:
    assert error("[default]\n1000 => 1234,A,,,maxmsg=-3\n").startswith(
        'voicemail.conf:2: "maxmsg" must be at least 0, got "-3"'
    )
    assert error("[default]\n1000 => 1234,A,,,attach=yes|saycid=perhaps\n").startswith(
        'voicemail.conf:2: "saycid" must be yes or no'
    )
    assert "has no" in error("[default]\n1000 => 1234,A,,,maxsecs\n")
    vm = settings("[default]\n1000 => 1234,A,,,|Tz=eastern|maxsecs=60|colour=blue\n")
    assert vm.mailboxes[("default", "1000")].options == {
        "tz": "eastern",
        "maxsecs": "60",
        "colour": "blue",
    }
    assert vm.warnings == [
        'voicemail.conf:2: "colour": unknown option',
        'voicemail.conf:2: "tz=eastern" names no [zonemessages] zone',
    ]


def test_asterisk_sample_general_section_loads_with_warnings_only() -> None:
    """Every option of Asterisk 20's [general] is known: a copied file never fails on names."""
    vm = settings(
        "[general]\nformat=wav49|gsm|wav\nserveremail=asterisk\nattach=yes\nskipms=3000\n"
        "maxsilence=10\nsilencethreshold=128\nmaxlogins=3\nemaildateformat=%A, %B %d, %Y at %r\n"
        "pagerdateformat=%A, %B %d, %Y at %r\nsendvoicemail=yes\n"
    )
    # serveremail, attach, emaildateformat and pagerdateformat warned until mail came (issue 9).
    assert vm.warnings == []
    assert {"format", "maxsecs", "pollfreq", "odbc_audio_on_disk"} <= VOICEMAIL_GENERAL


def test_server_config_collects_the_warnings(tmp_path: Path) -> None:
    (tmp_path / "voicemail.conf").write_text("[general]\nformt=wav\n")
    (tmp_path / "sip.conf").write_text("[general]\nbindprot=5060\n")
    config = load_server_config(tmp_path)
    assert config.warnings == [
        f'{tmp_path / "voicemail.conf"}:2: "formt": unknown option',
        f'{tmp_path / "sip.conf"}:2: "bindprot": unknown option',
    ]


def test_the_aliases_context_is_not_read_as_mailboxes() -> None:
    vm = settings(
        "[myaliases]\n1234@devices => 1234@default\n[general]\naliasescontext=myaliases\n"
    )
    assert vm.mailboxes == {}
    assert vm.warnings == ['voicemail.conf:4: "aliasescontext": not implemented yet']
