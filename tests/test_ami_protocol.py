"""AMI wire format and manager.conf, without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.conffile import ConfigError
from voicemail.ami import protocol
from voicemail.ami.manager_conf import load_manager_conf


def test_actions_are_split_on_empty_lines_whatever_the_chunks() -> None:
    data = (
        b"Action: Login\r\nUsername: ops\r\nsecret: s:e:c\r\n\r\n"
        b"action: ping\r\nActionID: 7\r\n\r\n"
    )
    parser = protocol.Parser()
    messages = [m for byte in data for m in parser.feed(bytes([byte]))]
    assert [m.action for m in messages] == ["Login", "ping"]
    assert messages[0].get("SECRET") == "s:e:c"  # keys are case-insensitive, value keeps colons
    assert messages[1].action_id == "7"


def test_bare_newlines_and_repeated_keys() -> None:
    (message,) = protocol.Parser().feed(b"Action: X\nVariable: a=1\nVariable: b=2\n\n")
    assert message.getall("variable") == ["a=1", "b=2"]
    assert "VARIABLE" in message and "Missing" not in message


def test_a_message_without_end_is_refused() -> None:
    parser = protocol.Parser()
    with pytest.raises(protocol.ProtocolError):
        parser.feed(b"Action: X\r\nKey: " + b"a" * (protocol.MAX_MESSAGE_BYTES + 1))


def test_responses_carry_the_action_id_second() -> None:
    (action,) = protocol.Parser().feed(b"Action: Ping\r\nActionID: abc\r\n\r\n")
    assert protocol.response(action, message="ok", fields=[("Ping", "Pong")]) == (
        b"Response: Success\r\nActionID: abc\r\nMessage: ok\r\nPing: Pong\r\n\r\n"
    )
    assert protocol.error(action, "Permission denied") == (
        b"Response: Error\r\nActionID: abc\r\nMessage: Permission denied\r\n\r\n"
    )


def test_command_output_is_one_output_header_per_line() -> None:
    (action,) = protocol.Parser().feed(b"Action: Command\r\nCommand: x\r\n\r\n")
    assert protocol.command_output(action, True, "a\nb  \n") == (
        b"Response: Success\r\nMessage: Command output follows\r\nOutput: a\r\nOutput: b  \r\n\r\n"
    )
    assert protocol.command_output(action, False, "No such command 'x'").startswith(
        b"Response: Error\r\n"
    )


def test_values_cannot_break_the_framing() -> None:
    data = protocol.event("MessageWaiting", frozenset({"call"}), [("Mailbox", "1\r\n\r\nEvil: 1")])
    assert data == b"Event: MessageWaiting\r\nPrivilege: call,all\r\nMailbox: 1    Evil: 1\r\n\r\n"


def test_list_start_and_complete_as_asterisk_sends_them() -> None:
    (action,) = protocol.Parser().feed(b"Action: SIPpeers\r\nActionID: 9\r\n\r\n")
    assert protocol.list_start(action, "Peer status list") == (
        b"Response: Success\r\nActionID: 9\r\nEventList: start\r\n"
        b"Message: Peer status list will follow\r\n\r\n"
    )
    assert protocol.list_complete("PeerlistComplete", action, 2) == (
        b"Event: PeerlistComplete\r\nActionID: 9\r\nEventList: Complete\r\nListItems: 2\r\n\r\n"
    )
    assert protocol.BANNER == b"Asterisk Call Manager/9.0.0\r\n"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "manager.conf").write_text(text)
    return tmp_path


def test_manager_conf_users_classes_and_acl(tmp_path: Path) -> None:
    settings = load_manager_conf(
        write(
            tmp_path,
            "[general]\nenabled = yes\nport = 15038\nbindaddr = 127.0.0.1\n\n"
            "[Ops]\nsecret = s3\ndeny = 0.0.0.0/0.0.0.0\npermit = 127.0.0.1/255.255.255.0\n"
            "read = system,call\nwrite = command\n",
        )
    )
    assert (settings.enabled, settings.port) == (True, 15038)
    user = settings.user("ops")
    assert user is not None and user.secret == "s3"
    assert user.acl.allows("127.0.0.1") and not user.acl.allows("10.1.2.3")
    assert user.may_read(frozenset({"call"})) and not user.may_read(frozenset({"log"}))
    assert user.may_write(frozenset({"command"})) and not user.may_write(frozenset({"system"}))


def test_manager_conf_missing_is_off(tmp_path: Path) -> None:
    assert load_manager_conf(tmp_path).enabled is False


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[general]\nenabled=yes\nwebenabled=yes\n", 3, "not implemented"),
        ("[general]\nenabled=maybe\n", 2, "yes or no"),
        ("[ops]\nsecret=x\nread=system,bogus\n", 3, 'unknown class "bogus"'),
        ("[ops]\nsecret=x\npermit=10.0.0.0/99\n", 3, "prefix"),
        ("[ops]\nsecret=x\neventfilter=Event: X\n", 3, "not implemented"),
        ("[ops]\nread=all\n", 1, "no secret"),
    ],
)
def test_manager_conf_refusals_name_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_manager_conf(write(tmp_path, text))
    assert caught.value.line == line
    assert caught.value.filename.endswith("manager.conf")
    assert words in str(caught.value)
