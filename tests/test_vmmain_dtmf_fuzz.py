"""Random DTMF through the whole VoiceMailMain session: the core, its driver and a real SQLite
message store through ODBC, with messages in the mailbox.

tests/test_vmmain_fuzz.py throws events at the core alone; this one goes through the driver
and the database, where a wrong msgnum, a copy into a full folder or a close after a hang-up
would show as rows. Each session ends (Finish) within a bounded number of channel calls, the
driver raises nothing, the core asks for nothing after Finish, and after every session the
table is consistent: counts = rows, msgnums 0..n-1 in every folder, no row outside a known
folder or greeting, no row without audio. bench/soak_dtmf.py runs the same for 10 000 sessions.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyodbc
import pytest

from channels.channel import CallerInfo, ChannelHungUp, Recording, StopReason
from storage.audioformats import encode
from storage.messagerows import FOLDERS, GREETINGS
from storage.messages import MessageStore
from storage.odbc_handles import handle_lock
from storage.realtime import Realtime
from voicemail.config_voicemail import StaticMailbox, VoicemailSettings
from voicemail.mailboxes import MailboxDirectory
from voicemail.vmmain.access import MailboxAccess
from voicemail.vmmain.core import VoiceMailMain
from voicemail.vmmain.driver import MenuDriver
from voicemail.vmmain.events import Action, Event, Finish, HungUp, PromptDone
from voicemail.vmmain.options import MainArgs, MenuSettings

from .dbbackends import Backend
from .helpers import SPOOL, message_fields, started_store
from .server import SOUNDS

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

CONTEXT = "default"
OWNER, OWNER_PIN = "1234", "4321"
OTHER, OTHER_PIN = "1235", "5321"  # a forward recipient
MAILBOXES = {OWNER: OWNER_PIN, OTHER: OTHER_PIN}
MAX_STEPS = 400  # the caller hangs up at the latest after this many channel calls
MAX_CORE_STEPS = 4 * MAX_STEPS  # the core's answers per session (database steps included)
SESSION_TIMEOUT = 30.0  # seconds; a session still running then is a hang
ENTRIES = (OWNER, OWNER_PIN, OTHER, "", "*", "0", "9999", "12345678")


class FuzzFailure(AssertionError):
    """A session broke a rule; the message names the seed that reproduces it."""


@dataclass
class RandomChannel:
    """A Channel double whose caller presses random keys and hangs up at a random moment.

    Like the real Channel: play/wait return only one of their interrupt digits, every call
    after the hang-up raises ChannelHungUp, and record() returns what it has (HANGUP).
    A cooperative caller's `entries` (the right mailbox and PIN) come first, with no key
    pressed over the prompts before them, so most sessions get past the login.
    """

    rng: random.Random
    hang_up_at: int
    entries: list[str]  # what the caller enters first (a cooperative caller: mailbox, PIN)
    info: CallerInfo = field(default_factory=lambda: CallerInfo("8500", CONTEXT))
    steps: int = 0
    steps_after_hang_up: int = 0
    hung_up: bool = False
    answered: bool = False

    async def _step(self) -> None:
        await asyncio.sleep(0)  # a real channel call yields to the loop (and to wait_for)
        if self.hung_up:
            self.steps_after_hang_up += 1
            raise ChannelHungUp("gone")
        self.steps += 1
        if self.steps >= self.hang_up_at:
            self.hung_up = True
            raise ChannelHungUp("gone")

    def _key(self, allowed: str, none_weight: float) -> str | None:
        if not allowed or self.rng.random() < none_weight:
            return None
        return self.rng.choice(allowed)

    async def answer(self) -> None:
        self.answered = True

    async def ring(self) -> None:
        await self._step()

    def flush_digits(self) -> None:
        pass

    async def play(self, pcm: bytes, interrupt_digits: str = "") -> str | None:
        await self._step()
        return None if self.entries else self._key(interrupt_digits, 0.5)

    async def wait(self, seconds: float, interrupt_digits: str = "") -> str | None:
        await self._step()
        return self._key(interrupt_digits, 0.15)

    async def read_digits(
        self, max_digits: int, first_timeout: float, timeout: float, terminators: str = "#"
    ) -> str:
        await self._step()
        if self.entries:
            text = self.entries.pop(0)
        elif self.rng.random() < 0.5:
            text = self.rng.choice(ENTRIES)
        else:
            text = "".join(self.rng.choice("0123456789*") for _ in range(self.rng.randint(0, 6)))
        return text[: max(0, max_digits)]

    async def record(
        self, max_seconds: float | None = None, stop_digits: str = "#", **options: object
    ) -> Recording:
        if self.hung_up:
            return Recording(b"", StopReason.HANGUP)
        await self._step()
        if self.hung_up:
            return Recording(b"\x01\x00" * 800, StopReason.HANGUP)
        reason = self.rng.choice(
            [StopReason.DIGIT, StopReason.DIGIT, StopReason.MAX_DURATION, StopReason.SILENCE]
        )
        digit = self.rng.choice(stop_digits) if reason == StopReason.DIGIT and stop_digits else None
        samples = self.rng.randint(0, 16000)
        return Recording(b"\x07\x01" * samples, reason, digit)

    def hangup(self, code: int | None = None, reason: str = "") -> None:
        self.hung_up = True


class TracedSession(VoiceMailMain):
    """The core, with every action it asked for kept, to check nothing comes after Finish.

    More than MAX_CORE_STEPS answers in one session is a loop that does not wait for the
    caller (a prompt that plays nothing, asked again and again): FuzzFailure.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.batches: list[list[Action]] = []

    def start(self) -> list[Action]:
        actions = super().start()
        self.batches.append(list(actions))
        return actions

    def handle(self, event: Event) -> list[Action]:
        actions = super().handle(event)
        self.batches.append(list(actions))
        if len(self.batches) > MAX_CORE_STEPS:
            tail = [type(a).__name__ for batch in self.batches[-6:] for a in batch]
            raise FuzzFailure(f"{MAX_CORE_STEPS} core steps without an end; last: {tail}")
        return actions


def directory(general: dict[str, str]) -> MailboxDirectory:
    settings = VoicemailSettings(
        general=general,
        mailboxes={
            (CONTEXT, box): StaticMailbox(CONTEXT, box, pin) for box, pin in MAILBOXES.items()
        },
        zonemessages={},
    )
    return MailboxDirectory(settings, Realtime([], {}))


async def top_up(store: MessageStore, rng: random.Random) -> None:
    """Keep 1-5 messages in the owner's INBOX and a few in Old, so the menus have work."""
    for folder, low, high in (("INBOX", 1, 5), ("Old", 0, 3)):
        have = await store.count(CONTEXT, OWNER, folder)
        for _ in range(max(0, rng.randint(low, high) - have)):
            audio = encode(noise(rng, rng.randint(100, 4000)), "wav")
            await store.store(**message_fields(audio, mailbox=OWNER, folder=folder))


def noise(rng: random.Random, samples: int) -> bytes:
    """`samples` of quiet 16-bit PCM noise (a stored message is a real WAV file)."""
    return bytes(rng.getrandbits(4) for _ in range(2 * samples))


def known_dirs() -> set[str]:
    return {
        f"{SPOOL}{CONTEXT}/{box}/{name}" for box in MAILBOXES for name in (*FOLDERS, *GREETINGS)
    }


class TableReader:
    """One connection for the checks: Backend.sql connects each time, and each SQLite ODBC
    connect + close keeps about 140 KB of native memory (10 000 sessions' worth is GBs)."""

    def __init__(self, backend: Backend) -> None:
        with handle_lock(backend.name == "sqlite"):
            self.connection = pyodbc.connect(backend.connection_string, autocommit=True)
        self.serialize = backend.name == "sqlite"

    def sql(self, statement: str, *params: object) -> list[dict[str, object]]:
        cursor = self.connection.execute(statement, *params)
        if cursor.description is None:
            return []
        names = [column[0].lower() for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        with handle_lock(self.serialize):
            self.connection.close()


def check_table(backend: TableReader, table: str = "voicemessages") -> int:
    """The table's rules after a session; returns the number of message rows."""
    rows = backend.sql(f"SELECT dir, msgnum, LENGTH(recording) AS size, msg_id FROM {table}")
    dirs = known_dirs()
    by_dir: dict[str, list[int]] = {}
    for row in rows:
        where = f"{row['dir']} #{row['msgnum']}"
        if row["dir"] not in dirs:
            raise FuzzFailure(f"row outside any folder or greeting: {where}")
        if not row["size"]:
            raise FuzzFailure(f"row without audio: {where}")
        greeting = str(row["dir"]).rsplit("/", 1)[1] in GREETINGS
        if greeting != (row["msgnum"] == -1):
            raise FuzzFailure(f"greeting and msgnum disagree: {where}")
        if not greeting:
            if not row["msg_id"]:
                raise FuzzFailure(f"message without msg_id: {where}")
            by_dir.setdefault(str(row["dir"]), []).append(int(row["msgnum"]))  # type: ignore[call-overload]
    for folder_dir, msgnums in by_dir.items():
        if sorted(msgnums) != list(range(len(msgnums))):
            raise FuzzFailure(f"{folder_dir}: msgnums {sorted(msgnums)}, not 0..{len(msgnums) - 1}")
    return sum(len(m) for m in by_dir.values())


async def check_counts(store: MessageStore, backend: TableReader) -> None:
    """What the server counts (the lamp, the menus) is what the table holds."""
    rows = {
        str(row["dir"]): int(row["n"])  # type: ignore[call-overload]
        for row in backend.sql("SELECT dir, COUNT(*) AS n FROM voicemessages GROUP BY dir")
    }
    for box in MAILBOXES:
        for folder in FOLDERS:
            held = rows.get(f"{SPOOL}{CONTEXT}/{box}/{folder}", 0)
            if not held and folder not in ("INBOX", "Old"):
                continue  # count() of an empty folder is checked for INBOX and Old
            counted = await store.count(CONTEXT, box, folder)
            listed = await store.list_messages(CONTEXT, box, folder)
            if not counted == len(listed) == held:
                raise FuzzFailure(
                    f"{box}/{folder}: count {counted}, listed {len(listed)}, rows {held}"
                )
        new, old, _ = await store.counts(CONTEXT, box)
        inbox = rows.get(f"{SPOOL}{CONTEXT}/{box}/INBOX", 0)
        if (new, old) != (inbox, rows.get(f"{SPOOL}{CONTEXT}/{box}/Old", 0)):
            raise FuzzFailure(f"{box}: counts() says {new} new, {old} old")


def check_trace(session: TracedSession) -> None:
    """Finish only last, nothing after it, and the finished core stays silent."""
    finished = False
    for batch in session.batches:
        if finished and batch:
            raise FuzzFailure(f"actions after Finish: {batch}")
        for action in batch[:-1]:
            if isinstance(action, Finish):
                raise FuzzFailure(f"Finish before the end of its batch: {batch}")
        finished = finished or bool(batch and isinstance(batch[-1], Finish))
    if not session.finished:
        raise FuzzFailure("the session ended without Finish")


@dataclass
class FuzzStats:
    sessions: int = 0
    logged_in: int = 0
    channel_calls: int = 0
    ended_by_caller: int = 0  # hang-up before the core finished on its own
    max_messages: int = 0
    left: list[tuple[str, str]] = field(default_factory=list)  # LeaveMessage recipients


async def one_session(
    store: MessageStore, backend: TableReader, seed: int, stats: FuzzStats
) -> None:
    """One caller with random keys against a fresh core and driver; raises FuzzFailure."""
    rng = random.Random(seed)
    await top_up(store, rng)
    general = {
        "messagewrap": rng.choice(["yes", "no"]),
        "nextaftercmd": rng.choice(["yes", "no"]),
        "moveheard": rng.choice(["yes", "no"]),
        "maxmsg": rng.choice(["100", "6", "3"]),
        "sendvoicemail": rng.choice(["yes", "no"]),
    }
    args = MainArgs(
        mailbox=OWNER if rng.random() < 0.3 else "",
        skip_password=rng.random() < 0.1,
    )
    login = [OWNER_PIN] if args.mailbox else [OWNER, OWNER_PIN]
    entries = login if rng.random() < 0.8 else []
    channel = RandomChannel(rng, rng.randint(1, MAX_STEPS), entries)

    async def leave_message(ch: object, recipients: Sequence[tuple[str, str]]) -> str:
        for mailbox, context in recipients:
            stats.left.append((mailbox, context))
            audio = encode(noise(rng, 800), "wav")
            await store.store(**message_fields(audio, mailbox=mailbox, context=context))
        return "SUCCESS"

    driver = MenuDriver(
        channel,  # type: ignore[arg-type]
        MailboxAccess(store, directory(general), general),
        SOUNDS,
        max_record_seconds=5,
        leave_message=leave_message,  # type: ignore[arg-type]
    )
    session = TracedSession(args, MenuSettings.from_options(general), "")
    try:
        finish = await asyncio.wait_for(driver.run(session), SESSION_TIMEOUT)
    except TimeoutError as exc:
        raise FuzzFailure(f"seed {seed}: no Finish within {SESSION_TIMEOUT} s") from exc
    except FuzzFailure as exc:
        raise FuzzFailure(f"seed {seed}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any exception out of the driver is the finding
        raise FuzzFailure(f"seed {seed}: the driver raised {exc!r}") from exc
    try:
        if not isinstance(finish, Finish):
            raise FuzzFailure(f"run() returned {finish!r}")
        check_trace(session)
        if channel.steps > MAX_STEPS or channel.steps_after_hang_up > 0:
            raise FuzzFailure(
                f"{channel.steps} channel calls, {channel.steps_after_hang_up} after the hang-up"
            )
        if session.handle(HungUp()) or session.handle(PromptDone()):
            raise FuzzFailure("the finished core still answers events")
        messages = check_table(backend)
        await check_counts(store, backend)
    except FuzzFailure as exc:
        raise FuzzFailure(f"seed {seed}: {exc}") from exc
    stats.sessions += 1
    stats.logged_in += driver.mailbox is not None
    stats.channel_calls += channel.steps
    stats.ended_by_caller += channel.hung_up
    stats.max_messages = max(stats.max_messages, messages)


class _Unexpected(logging.Handler):
    """Counts log records with a traceback: log.exception marks what nobody designed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


async def fuzz(backend: Backend, seeds: range, stats: FuzzStats) -> list[logging.LogRecord]:
    """Run a session per seed on one store (the state carries over, as a mailbox's does);
    returns the log records with a traceback."""
    handler = _Unexpected()
    logging.getLogger().addHandler(handler)
    try:
        async with started_store(backend) as store:
            reader = TableReader(backend)
            try:
                for seed in seeds:
                    await one_session(store, reader, seed, stats)
            finally:
                reader.close()
    finally:
        logging.getLogger().removeHandler(handler)
    return handler.records


def test_random_digits_through_the_driver_keep_the_store_consistent(backend: Backend) -> None:
    stats = FuzzStats()
    unexpected = asyncio.run(fuzz(backend, range(200), stats))
    assert not unexpected, [r.getMessage() for r in unexpected]
    assert stats.sessions == 200
    # The run reached the menus and the database, not just the login prompt.
    assert stats.logged_in >= 100, stats
    assert stats.max_messages >= 3, stats
    assert stats.ended_by_caller >= 20, stats


def test_the_checks_see_a_broken_table(backend: Backend) -> None:
    """The consistency check is not vacuous: a gap in the msgnums and an orphan row fail it."""

    async def scenario() -> None:
        async with started_store(backend) as store:
            await top_up(store, random.Random(1))
            reader = TableReader(backend)
            check_table(reader)
            inbox = f"{SPOOL}{CONTEXT}/{OWNER}/INBOX"
            backend.sql("UPDATE voicemessages SET msgnum = 7 WHERE dir = ? AND msgnum = 0", inbox)
            with pytest.raises(FuzzFailure, match="not 0.."):
                check_table(reader)
            backend.sql("UPDATE voicemessages SET msgnum = 0 WHERE dir = ? AND msgnum = 7", inbox)
            backend.sql(
                "UPDATE voicemessages SET dir = ? WHERE dir = ? AND msgnum = 0",
                f"{SPOOL}{CONTEXT}/9999/INBOX",
                inbox,
            )
            with pytest.raises(FuzzFailure, match="outside"):
                check_table(reader)
            reader.close()

    asyncio.run(scenario())
