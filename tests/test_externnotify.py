"""voicemail.conf externnotify: the program gets `<context> <mailbox> <new> <old> <urgent>`
(Asterisk's run_externnotify: new = INBOX, urgent = Urgent) whenever a mailbox's counts
change, on the server that made the change and on the others through the change feed; a
hung program is killed, and nothing it does reaches the shell unquoted.

The program is a real shell script writing its arguments to a file, one run a line."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from storage.messages import MessageStore
from storage.schema import create_tables, storage_tables
from tests.dbbackends import Backend
from tests.helpers import SPOOL, deposit, run
from tests.test_outbox import started_pool
from voicemail.externnotify import ExternNotify, command_line

from . import sipp
from .test_mwi_cluster_e2e import (
    PIN,
    Keys,
    body_of,
    call,
    deposit_on,
    expected_body,
    phone_on,
    start_node,
    wait_for_notify,
)
from .test_mwi_e2e import insert_message, wait_for

pytestmark = pytest.mark.timeout(120)

RUN_WAIT = 10.0  # bound on waiting for a run (not a timing assertion)


def recording_script(tmp_path: Path, name: str = "notify") -> tuple[Path, Path]:
    """A script appending its arguments, `|`-separated, as one line of `<name>.out`."""
    script, out = tmp_path / f"{name}.sh", tmp_path / f"{name}.out"
    # One write per run (O_APPEND), so runs at the same time do not mix their lines.
    script.write_text(f'#!/bin/sh\nline=$(printf \'%s|\' "$@")\necho "$line" >> {out}\n')
    script.chmod(0o755)
    return script, out


def runs(out: Path) -> list[str]:
    return out.read_text().splitlines() if out.exists() else []


async def wait_runs(out: Path, count: int) -> list[str]:
    for _ in range(int(RUN_WAIT / 0.02)):
        if len(runs(out)) >= count:
            break
        await asyncio.sleep(0.02)
    return runs(out)


def test_the_command_line_is_asterisks_with_context_and_mailbox_quoted() -> None:
    assert command_line("/usr/bin/notify -v", "default", "1000", (2, 1, 3)) == (
        "/usr/bin/notify -v default 1000 2 1 3"
    )
    assert command_line("n", "my ctx", "$(reboot)", (0, 0, 0)) == "n 'my ctx' '$(reboot)' 0 0 0"
    assert command_line("n", "", "1000", (1, 0, 0)) == 'n "" 1000 1 0 0'


def test_counts_from_the_store_reach_the_program_once_per_change(
    backend: Backend, tmp_path: Path
) -> None:
    async def scenario() -> None:
        script, out = recording_script(tmp_path)
        async with started_pool(backend) as pool:
            await create_tables(pool, storage_tables())
            store = MessageStore(pool, "voicemessages", SPOOL)
            notify = ExternNotify(str(script), store.counts)
            notify.start()
            try:
                await deposit(store, mailbox="1000")
                notify.mailbox_changed("1000", "default")
                assert await wait_runs(out, 1) == ["default|1000|1|0|0|"]
                # Events without a change of counts run nothing; several events queued
                # while nothing changed fold into one look.
                for _ in range(5):
                    notify.mailbox_changed("1000", "default")
                await notify.idle()
                assert runs(out) == ["default|1000|1|0|0|"]
                await deposit(store, mailbox="1000", folder="Urgent")
                await deposit(store, mailbox="1000", folder="Old")
                notify.mailbox_changed("1000", "default")
                assert await wait_runs(out, 2) == ["default|1000|1|0|0|", "default|1000|1|1|1|"]
            finally:
                await notify.stop()

    run(scenario)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_a_name_with_shell_characters_is_only_an_argument(workdir: Path) -> None:
    async def scenario() -> None:
        script, out = recording_script(workdir)
        mailbox = f"$(touch {workdir}/owned);x"

        async def counts(context: str, mailbox: str) -> tuple[int, int, int]:
            return (1, 0, 0)

        notify = ExternNotify(str(script), counts)
        notify.start()
        try:
            notify.mailbox_changed(mailbox, "a b")
            assert await wait_runs(out, 1) == [f"a b|{mailbox}|1|0|0|"]
        finally:
            await notify.stop()
        assert not (workdir / "owned").exists()

    run(scenario)


def test_a_hung_program_is_killed_and_the_others_go_on(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        script, out = recording_script(workdir)
        hung = workdir / "hung.sh"
        # Its child keeps the pipe: the whole process group must go.
        hung.write_text(f'#!/bin/sh\n{script} "$@"\nsleep 60 & echo $! > {workdir}/child\nwait\n')
        hung.chmod(0o755)
        told = {"slow": (1, 0, 0), "fast": (2, 0, 0)}

        async def counts(context: str, mailbox: str) -> tuple[int, int, int]:
            return told[mailbox]

        notify = ExternNotify(str(hung), counts, timeout=1.0, max_running=2)
        notify.start()
        try:
            notify.mailbox_changed("slow", "default")
            notify.mailbox_changed("fast", "default")
            assert sorted(await wait_runs(out, 2)) == ["default|fast|2|0|0|", "default|slow|1|0|0|"]
            await notify.idle()  # both killed after their second, not after `sleep 60`
        finally:
            await notify.stop()
        child = int((workdir / "child").read_text())
        with pytest.raises(ProcessLookupError):
            for _ in range(100):
                os.kill(child, 0)
                await asyncio.sleep(0.05)

    with caplog.at_level(logging.WARNING, logger="voicemail.externnotify"):
        run(scenario)
    assert "externnotify: killed after 1 s" in caplog.text


def test_a_failing_program_is_logged_with_its_error(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async def counts(context: str, mailbox: str) -> tuple[int, int, int]:
            return (0, 0, 0)

        notify = ExternNotify("echo no such lamp >&2; exit 3; :", counts)
        notify.start()
        try:
            notify.mailbox_changed("1000", "default")
            await asyncio.sleep(0.05)
            await notify.idle()
        finally:
            await notify.stop()

    with caplog.at_level(logging.WARNING, logger="voicemail.externnotify"):
        run(scenario)
    assert "externnotify exited with 3" in caplog.text
    assert "no such lamp" in caplog.text


# --- the real servers ----------------------------------------------------------------------


def wait_lines(out: Path, count: int) -> list[str]:
    wait_for(lambda: len(runs(out)) >= count, RUN_WAIT, f"{count} externnotify run(s)")
    return runs(out)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_deposit_and_menu_delete_on_a_run_externnotify_on_a_and_on_b(
    backend: Backend, workdir: Path
) -> None:
    script_a, out_a = recording_script(workdir, "a")
    script_b, out_b = recording_script(workdir, "b")
    a = start_node(workdir, backend, "a", f"pollmailboxes=no\nexternnotify={script_a}\n")
    b = start_node(workdir, backend, "b", f"pollmailboxes=no\nexternnotify={script_b} --lamp\n")
    try:
        deposit_on(a, workdir / "deposit")
        assert wait_lines(out_a, 1) == ["default|1000|1|0|0|"]  # its own deposit
        assert wait_lines(out_b, 1) == ["--lamp|default|1000|1|0|0|"]  # through the feed
        keys = Keys()
        xml = call(
            keys,
            *keys.press(f"1000#{PIN}#"),
            sipp.pause(1500),
            *keys.press("11", 1000),
            *keys.press("7", 1500),
        )
        sipp.run_sipp(workdir / "vmmain", xml, a.target, timeout=60).check()
        assert wait_lines(out_a, 2)[1:] == ["default|1000|0|0|0|"]
        assert wait_lines(out_b, 2)[1:] == ["--lamp|default|1000|0|0|0|"]
        time.sleep(1)  # a's echo of its own changes through the feed: no second run
        assert len(runs(out_a)) == 2 and len(runs(out_b)) == 2
    finally:
        for server in (b, a):
            assert server.stop() == 0, server.log()
    for server in (a, b):
        assert "Traceback" not in server.log(), server.log()
        assert "externnotify" not in server.log(), server.log()  # no warning of any kind


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_row_inserted_behind_our_back_runs_externnotify_from_the_poll(
    backend: Backend, workdir: Path
) -> None:
    script, out = recording_script(workdir)
    server = start_node(
        workdir, backend, "b", f"pollmailboxes=yes\npollfreq=1\nexternnotify={script}\n"
    )
    try:
        phone = phone_on(server, workdir / "phone", ["0/0", "1/0"])  # 1000 is watched
        try:
            wait_for_notify(phone, 1, server)
            time.sleep(1.5)  # a poll has seen 0/0
            insert_message(backend, 0)
            assert body_of(wait_for_notify(phone, 2, server)) == expected_body(server, 1, 0)
            assert wait_lines(out, 1) == ["default|1000|1|0|0|"]
            phone.wait(15).check()
        finally:
            phone.stop()
    finally:
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(), server.log()
