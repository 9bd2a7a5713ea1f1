"""The local spool on a full filesystem (a small tmpfs filled to the last byte).

Every deposit is written to the spool before the database (storage/spool.py), so a full disk
must not cost a message while the database is up: the spool write fails with ENOSPC and the
message goes straight to the database. Only when the database is away too is the message
lost, and then the caller is told so (vm-sorry, not "thank you"), the log says why, and the
server goes on: once the disk has room the next call is spooled and stored as usual.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from voicemail.app_voicemail import CALL_PATH_DB_WAIT

from .audio import best_correlation, test_signal, wav_pcm
from .dbbackends import Backend, tcp_proxy
from .heard import prompts_heard
from .server import RunningServer, start_server, write_config
from .softphone import Call, Softphone
from .test_deposit_e2e import rows
from .test_harness_deposit_e2e import CANDIDATES, GREETING

pytestmark = pytest.mark.timeout(240)

AFTER_RECORDING = [*CANDIDATES, "vm-sorry"]
FILLER = ".filler"


@contextmanager
def small_tmpfs(directory: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `directory`, unmounted at the end (lazily if busy)."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {mounted.stderr}")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], timeout=10, check=False).returncode:
            subprocess.run(["umount", "-l", str(directory)], timeout=10, check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem refuses with ENOSPC; return it (delete it for room)."""
    path = directory / FILLER
    chunk = b"\0" * 4096
    with path.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:  # the last partial page
            while True:
                file.write(b"\0")
        except OSError:
            pass
    with pytest.raises(OSError) as full:
        (directory / "probe").write_bytes(b"x" * 64)
    assert full.value.errno == errno.ENOSPC
    (directory / "probe").unlink(missing_ok=True)
    return path


def leave_message(server: RunningServer, signal: bytes) -> tuple[Call, list[str]]:
    """A caller hears the greeting, says `signal`, presses # and listens until the server
    hangs up; returns the call and the prompts heard after the beep."""
    with Softphone(server) as phone:
        call = phone.call("1000")
        greeting = call.wait_prompts(GREETING, candidates=CANDIDATES, timeout=60)
        beep_end = greeting[-1].end
        call.send_pcm(signal)
        call.dtmf("#")
        call.wait_hangup(timeout=45)
    return call, prompts_heard(call.heard(beep_end + 0.2), AFTER_RECORDING)


def assert_stored(row: dict, signal: bytes) -> None:
    rate, width, channels, frames = wav_pcm(bytes(row["recording"]))
    assert (rate, width, channels) == (8000, 2, 1)
    seconds = len(frames) / 2 / rate
    assert abs(seconds - len(signal) / 2 / rate) <= 0.3, seconds
    coefficient, _lag = best_correlation(signal, frames)
    assert coefficient > 0.95, coefficient


def spool_files(spool: Path) -> list[Path]:
    return sorted(spool.glob("*.vmsg"))


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"], indirect=True)
def test_a_full_spool_with_the_database_up_still_stores_the_message(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "etc", backend)
    with small_tmpfs(config / "spool") as spool:
        server = start_server(config)
        try:
            fill(spool)
            signal = test_signal(3.0, seed=11)
            call, heard = leave_message(server, signal)
            assert call.ended_by == "server"
            assert heard == ["auth-thankyou"], (heard, server.log()[-3000:])
            stored = rows(backend)
            assert len(stored) == 1, server.log()
            assert_stored(stored[0], signal)
            log = server.log()
            assert "cannot be written to the spool" in log, log[-3000:]
            assert "No space left on device" in log
            assert "NOT SAVED" not in log
            assert server.process.poll() is None
        finally:
            assert server.stop() == 0, server.log()
        assert "Traceback" not in server.log(), server.log()
        assert spool_files(spool) == []


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_full_spool_with_the_database_down_tells_the_caller_vm_sorry(
    backend: Backend, tmp_path: Path
) -> None:
    with tcp_proxy(5432) as proxy:
        config = write_config(tmp_path / "etc", backend.via(proxy.port))
        with small_tmpfs(config / "spool") as spool:
            server = start_server(config)
            try:
                filler = fill(spool)
                proxy.stop()  # neither the disk nor the database can take a message now
                lost = test_signal(3.0, seed=12)
                call, heard = leave_message(server, lost)
                assert call.ended_by == "server"
                assert heard == ["vm-sorry"], (heard, server.log()[-3000:])
                log = server.wait_for_log("NOT SAVED")
                assert "No space left on device" in log
                assert "Failed to store voicemail for 1000@default" in log
                assert server.process.poll() is None, log

                # Room again (the database still away): the next message is spooled, and
                # stored once the database returns; the lost one never appears.
                filler.unlink()
                kept = test_signal(3.0, seed=13)
                call, heard = leave_message(server, kept)
                assert heard == ["auth-thankyou"], (heard, server.log()[-3000:])
                assert len(spool_files(spool)) == 1, server.log()
                proxy.start()
                deadline = time.monotonic() + 30 + CALL_PATH_DB_WAIT
                while spool_files(spool) and time.monotonic() < deadline:
                    time.sleep(0.3)
                assert spool_files(spool) == [], server.log()[-3000:]
                stored = rows(backend)
                assert len(stored) == 1, server.log()
                assert_stored(stored[0], kept)
            finally:
                assert server.stop() == 0, server.log()
            assert "Traceback" not in server.log(), server.log()
            assert os.path.ismount(spool)
