"""VoiceMailMain's say items through the say engine (EngineSayer): intro, folder names, the
envelope in the mailbox's [zonemessages] zone, caller id, duration and the vm-* overrides, in
English, Spanish and French; and what the loader refuses in those options (file:line)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from storage.conffile import ConfigError, parse_config_text
from storage.realtime import Realtime
from voicemail.config_voicemail import StaticMailbox, VoicemailSettings, voicemail_settings
from voicemail.mailboxes import MailboxDirectory
from voicemail.vmmain.access import MailboxAccess
from voicemail.vmmain.driver import MenuDriver
from voicemail.vmmain.engine_sayer import EngineSayer, caller_number
from voicemail.vmmain.events import (
    INBOX,
    OLD,
    URGENT,
    CallerId,
    Duration,
    EmptyFolder,
    Envelope,
    FolderName,
    Intro,
    MailboxInfo,
    SayItem,
    SayNumber,
)
from voicemail.vmmain.sayer import Listener

from .server import SOUNDS

pytestmark = pytest.mark.timeout(30)

ZONES = {
    "european": "Europe/Copenhagen|'vm-received' a d b 'digits/at' HM",
    "eastern": "America/New_York|'vm-received' Q 'digits/at' IMp",
}
NEW_YORK = ZoneInfo("America/New_York")


def new_york(*when: int) -> int:
    """Epoch seconds of a wall-clock time in New York."""
    return int(datetime(*when, tzinfo=NEW_YORK).timestamp())  # type: ignore[misc]


NOW = new_york(2024, 3, 14, 1, 0)  # Thursday 01:00 in New York, 06:00 in Copenhagen


@pytest.fixture
def server_in_tokyo() -> Iterator[None]:
    """The server's own zone (a mailbox without tz) is neither of the mailboxes' zones."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def said(item: SayItem, language: str, tz: str = "", sayer: EngineSayer | None = None) -> str:
    sayer = sayer or EngineSayer({}, ZONES)
    return " ".join(sayer.expand(item, Listener(language, tz, NOW)))


EN_ONE, EN_TWO = "digits/1 vm-INBOX vm-message", "digits/2 vm-INBOX vm-messages"
ES_ONE, ES_TWO = "digits/1M vm-message vm-INBOXs", "digits/2 vm-messages vm-INBOX"


@pytest.mark.parametrize(
    ("language", "one", "two"),
    [
        ("en", EN_ONE, EN_TWO),
        ("es", ES_ONE, ES_TWO),
        ("fr", EN_ONE, EN_TWO),
        ("es_MX", ES_ONE, ES_TWO),
    ],
)
def test_intro_with_one_and_two_new_messages(language: str, one: str, two: str) -> None:
    assert said(Intro(new=1, old=0, urgent=0), language) == f"vm-youhave {one}"
    assert said(Intro(new=2, old=0, urgent=0), language) == f"vm-youhave {two}"


def test_intro_old_urgent_and_none_per_language() -> None:
    assert said(Intro(2, 1, 1), "en") == (
        "vm-youhave digits/1 vm-Urgent vm-and digits/2 vm-INBOX vm-and digits/1 vm-Old vm-message"
    )
    # Spanish and French do not count urgent messages (vm_intro_es / _fr).
    assert said(Intro(0, 1, 0), "es") == "vm-youhave digits/1M vm-message vm-Olds"
    assert said(Intro(0, 0, 0), "es") == "vm-youhaveno vm-messages"
    assert said(Intro(0, 0, 0), "fr") == "vm-youhave vm-no vm-messages"
    assert said(Intro(0, 21, 0), "fr") == (
        "vm-youhave digits/20 digits/et digits/1 vm-Old vm-messages"
    )


def test_numbers_follow_the_language() -> None:
    assert said(SayNumber(21), "en") == "digits/20 digits/1"
    assert said(SayNumber(21), "es") == "digits/21"
    assert said(SayNumber(71), "fr") == "digits/60 digits/et digits/11"
    assert said(SayNumber(150), "es") == "digits/100-and digits/50"


def test_folder_names_in_each_language_order() -> None:
    assert said(FolderName(INBOX), "en") == "vm-INBOX vm-messages"
    assert said(FolderName(INBOX), "fr") == "vm-INBOX vm-messages"
    assert said(FolderName(INBOX), "es") == "vm-messages vm-INBOX"  # mensajes nuevos
    assert said(FolderName(2), "es") == "vm-messages vm-Work"
    assert said(FolderName(URGENT), "en") == "vm-Urgent vm-messages"
    assert said(EmptyFolder(OLD), "en") == "vm-youhave vm-no vm-Old vm-messages"
    assert said(EmptyFolder(INBOX), "es") == "vm-youhaveno vm-messages vm-INBOX"
    assert said(EmptyFolder(INBOX), "fr") == "vm-youhave vm-no vm-INBOX vm-messages"


# Today, yesterday, a weekday of this week and an older date, in New York (the `eastern`
# mailbox), and what a mailbox in Copenhagen or without a zone (the server's: Tokyo) hears.
ENVELOPES = [
    (
        new_york(2024, 3, 14, 0, 30),
        {
            ("en", "eastern"): "vm-received digits/today digits/at digits/12 digits/30 digits/a-m",
            ("es", "eastern"): "vm-received digits/today digits/at digits/12 digits/30",
            ("fr", "eastern"): "vm-received digits/today digits/at digits/12 digits/oclock "
            "digits/30 digits/a-m",
            ("en", "european"): "vm-received digits/day-4 digits/h-14 digits/mon-2 digits/at "
            "digits/oh digits/5 digits/30",
            ("es", "european"): "vm-received digits/day-4 digits/14 digits/mon-2 digits/at "
            "digits/5 digits/30",
            ("en", ""): "vm-received digits/today digits/at digits/1 digits/30 digits/p-m",
            ("es", ""): "vm-received digits/today digits/at digits/1F digits/30 digits/afternoon",
        },
    ),
    (
        new_york(2024, 3, 13, 21, 0),  # yesterday in New York, today in Tokyo
        {
            ("en", "eastern"): "vm-received digits/yesterday digits/at digits/9 digits/oclock "
            "digits/p-m",
            ("es", "eastern"): "vm-received digits/yesterday digits/at digits/9 digits/0 "
            "digits/p-m",
            ("fr", "eastern"): "vm-received digits/yesterday digits/at digits/9 digits/oclock "
            "digits/p-m",
            ("en", ""): "vm-received digits/today digits/at digits/10 digits/oclock digits/a-m",
        },
    ),
    (
        new_york(2024, 3, 11, 8, 5),  # Monday
        {
            ("en", "eastern"): "vm-received digits/day-1 digits/at digits/8 digits/oh digits/5 "
            "digits/a-m",
            # Spanish Q has no weekday: the full date
            ("es", "eastern"): "vm-received digits/es-el digits/day-1 digits/11 digits/es-de "
            "digits/mon-2 digits/es-de digits/2 digits/thousand digits/24 digits/at digits/8 "
            "digits/5 digits/a-m",
            ("fr", "european"): "vm-received digits/day-1 digits/11 digits/mon-2 digits/at "
            "digits/13 digits/oclock digits/5",
        },
    ),
    (
        new_york(2024, 1, 2, 15, 45),
        {
            ("en", "eastern"): "vm-received digits/mon-0 digits/h-2 digits/at digits/3 digits/40 "
            "digits/5 digits/p-m",
            ("es", "european"): "vm-received digits/day-2 digits/2 digits/mon-0 digits/at "
            "digits/21 digits/40 digits/and digits/5",
            ("en", ""): "vm-received digits/mon-0 digits/h-3 digits/at digits/5 digits/40 "
            "digits/5 digits/a-m",
        },
    ),
]


@pytest.mark.parametrize(("origtime", "expected"), ENVELOPES)
def test_envelope_in_the_mailbox_zone(
    server_in_tokyo: None, origtime: int, expected: dict[tuple[str, str], str]
) -> None:
    for (language, tz), prompts in expected.items():
        assert said(Envelope(origtime), language, tz) == prompts, (language, tz)


def test_an_unknown_zone_name_is_the_server_zone(
    server_in_tokyo: None, caplog: pytest.LogCaptureFixture
) -> None:
    when = new_york(2024, 3, 13, 21, 0)
    assert said(Envelope(when), "en", "Eastern") == said(Envelope(when), "en", "")
    assert "tz=Eastern names no [zonemessages] zone" in caplog.text


def test_caller_id_and_duration() -> None:
    assert said(CallerId('"Bob" <5551>'), "es") == (
        "vm-from-phonenumber digits/5 digits/5 digits/5 digits/1"
    )
    assert said(CallerId("Unknown"), "fr") == "vm-unknown-caller"
    assert said(CallerId('"Bob" <Unknown>'), "en") == "vm-unknown-caller"
    assert caller_number("+4512") == "+4512"
    assert said(Duration(3), "es") == "vm-duration digits/3 vm-minutes"
    assert said(Duration(21), "es") == "vm-duration digits/21 vm-minutes"


def test_role_overrides_from_general() -> None:
    sayer = EngineSayer({"vm-login": "custom/welcome", "VM-Password": "custom/pin"}, {})
    assert said("vm-login", "es", sayer=sayer) == "custom/welcome"
    assert said("vm-password", "en", sayer=sayer) == "custom/pin"
    assert said("vm-goodbye", "en", sayer=sayer) == "vm-goodbye"  # not a role
    # The role vm-prepend-timeout's default prompt is vm-then-pound.
    assert said("vm-prepend-timeout", "en") == "vm-then-pound"
    assert said("vm-then-pound", "en", sayer=EngineSayer({"vm-prepend-timeout": "x/y"})) == (
        "vm-then-pound"
    )


def settings(text: str) -> VoicemailSettings:
    return voicemail_settings(parse_config_text(text, "voicemail.conf"))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[general]\nvm-login=../../etc/passwd\n", 'voicemail.conf:2: "vm-login" sound name'),
        ("[general]\nvm-password=" + "x" * 80 + "\n", 'voicemail.conf:2: "vm-password" prompt'),
        ("[general]\nvm-newuser=\n", 'voicemail.conf:2: "vm-newuser" empty prompt name'),
        ("[zonemessages]\neu=Europe/Copenhagen\n", "voicemail.conf:2: zone 'eu': expected"),
        ("[zonemessages]\neu=Europe/Kopenhagen|'vm-received' q\n", "voicemail.conf:2: unknown"),
        ("[zonemessages]\n\neu=Europe/Paris|'vm-received' X\n", "voicemail.conf:3: date format"),
    ],
)  # fmt: skip
def test_bad_prompt_overrides_and_zones_are_refused_with_their_line(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(text)
    assert str(caught.value).startswith(error), str(caught.value)


def test_overrides_zones_tz_and_language_load_without_warnings() -> None:
    vm = settings(
        "[general]\nvm-login=custom/welcome\nvm-prepend-timeout=custom/then\ntz=eastern\n"
        "[zonemessages]\n"
        + "".join(f"{name}={value}\n" for name, value in ZONES.items())
        + "[default]\n1000 => 1,A,,,language=es|tz=european\n1001 => 1,B,,,tz=central\n"
    )
    assert vm.zonemessages == ZONES
    assert vm.warnings == ['voicemail.conf:10: "tz=central" names no [zonemessages] zone']


def test_find_gives_the_mailbox_tz_else_the_general_one() -> None:
    vm = VoicemailSettings(
        general={"tz": "eastern"},
        mailboxes={
            ("default", "1000"): StaticMailbox(
                "default", "1000", "1", options={"language": "es", "tz": "european"}
            ),
            ("default", "1001"): StaticMailbox("default", "1001", "1"),
        },
        zonemessages=ZONES,
    )
    access = MailboxAccess(None, MailboxDirectory(vm, Realtime([], {})), vm.general)  # type: ignore[arg-type]
    spanish = asyncio.run(access.find("1000", "default"))
    english = asyncio.run(access.find("1001", "default"))
    assert spanish is not None and (spanish.language, spanish.tz) == ("es", "european")
    assert english is not None and (english.language, english.tz) == ("", "eastern")


class Recorder:
    """A Sayer that notes who it was asked for."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def expand(self, item: SayItem, listener: Listener) -> list[str]:
        self.listeners.append(listener)
        return ["beep"]


class Silent:
    class info:  # noqa: N801 - stands for CallerInfo
        language = ""


def test_driver_gives_the_sayer_language_zone_and_its_clock() -> None:
    recorder = Recorder()
    driver = MenuDriver(
        Silent(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        SOUNDS,
        sayer=recorder,
        clock=lambda: 1_700_000_000.7,
    )
    assert driver._pcm(("vm-login",))
    driver.mailbox = MailboxInfo("1000", "default", "1", language="es", tz="european")
    driver.language = "es"  # what Authenticated does for a mailbox with language=es
    driver._pcm(("vm-youhave",))
    assert recorder.listeners == [
        Listener("en", "", 1_700_000_000),  # the server's default language before login
        Listener("es", "european", 1_700_000_000),
    ]
