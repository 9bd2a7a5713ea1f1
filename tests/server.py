"""Start the real server (`voicemail serve`) as a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from voicemail.sounds import SoundLibrary

from .dbbackends import Backend

REPO = Path(__file__).resolve().parent.parent
VOICEMAIL_BIN = Path(sys.executable).parent / "voicemail"
SOUNDS = SoundLibrary([Path("/usr/share/asterisk/sounds")], REPO / "prompts")

DEFAULT_EXTENSIONS = """[default]
exten => _X.,1,VoiceMail(${EXTEN}@default,u)
same => n,Hangup()
exten => _7XXXX,1,Ringing()
same => n,Wait(4)
same => n,VoiceMail(${EXTEN:1}@default,u)
same => n,Hangup()
"""

DEFAULT_MAILBOXES = """[default]
1000 => 1234,Alice Example,alice@example.com
"""


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port nothing listens on right now, on 127.0.0.1 (UDP unless told)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prompt_seconds(*names: str) -> float:
    """How long the server takes to play these prompts (the test's caller waits for them)."""
    return sum(len(SOUNDS.load_pcm(name)) / 16000 for name in names)


def unavailable_greeting_seconds(mailbox: str) -> float:
    """vm-theperson, the digits, vm-isunavail, vm-intro and the beep."""
    names = ["vm-theperson", *(f"digits/{d}" for d in mailbox), "vm-isunavail", "vm-intro", "beep"]
    return prompt_seconds(*names)


def write_config(
    directory: Path,
    backend: Backend,
    *,
    mailboxes: str = DEFAULT_MAILBOXES,
    extensions: str = DEFAULT_EXTENSIONS,
    general: str = "",
    realtime_voicemail: bool = True,
    realtime: tuple[str, ...] = (),
    smtp_port: int | None = None,
) -> Path:
    """`realtime`: more families of the asterisk database, each mapped to the table of its
    name ("sippeers", "voicemail.conf=ast_config"). `smtp_port`: mail goes to an SMTP
    server on 127.0.0.1 there (tests/mail_server.py)."""
    directory.mkdir(parents=True, exist_ok=True)
    if smtp_port is not None:
        general = f"smtphost=127.0.0.1\nsmtpport={smtp_port}\n" + general
    (directory / "asterisk.conf").write_text(
        "[directories]\nastspooldir => /var/spool/asterisk\nastdatadir => /usr/share/asterisk\n"
    )
    (directory / "res_odbc.conf").write_text(backend.res_odbc_section())
    families = [("voicemail", "voicemail")] if realtime_voicemail else []
    families += [(f.partition("=")[0], f.partition("=")[2] or f) for f in realtime]
    (directory / "extconfig.conf").write_text(
        "[settings]\n" + "".join(f"{name} => odbc,asterisk,{table}\n" for name, table in families)
    )
    (directory / "voicemail.conf").write_text(
        "[general]\nformat=wav\nodbcstorage=asterisk\nmaxsecs=60\nlocalspool=spool\n"
        + general
        + "\n"
        + mailboxes
    )
    (directory / "sip.conf").write_text(
        "[general]\nbindaddr=127.0.0.1\nbindport=0\ncontext=default\n"
    )
    (directory / "extensions.conf").write_text(extensions)
    return directory


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    host: str
    port: int
    output: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        return "".join(self.output)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """The log once it holds `text`: a thread reads the output, so a line lags its event."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged:\n{self.log()[-4000:]}")
            time.sleep(0.05)
        return self.log()

    def log_from(self, start: str, until: str, timeout: float = 10.0) -> str:
        """The log from the last `start` on, once `until` follows it (one call's lines)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            begin = text.rfind(start)
            if begin >= 0 and until in text[begin:]:
                return text[begin:]
            if time.monotonic() > deadline:
                raise AssertionError(f"{start!r} then {until!r} not logged:\n{text[-4000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VOICEMAIL_BIN), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def start_server(config_dir: Path, timeout: float = 30) -> RunningServer:
    """`voicemail db init` then `voicemail serve`, returning once it listens."""
    init = run_cli("db", "init", "-C", str(config_dir))
    assert init.returncode == 0, f"db init failed: {init.stdout}{init.stderr}"
    process = subprocess.Popen(
        [str(VOICEMAIL_BIN), "serve", "-C", str(config_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output: list[str] = []
    listening = threading.Event()
    found: list[tuple[str, int]] = []

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            match = re.search(r"listening on (\[[0-9a-fA-F:]+\]|[\d.]+):(\d+)", line)
            if match and not found:
                found.append((match.group(1), int(match.group(2))))
                listening.set()

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not listening.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("server did not start:\n" + "".join(output))
    host, port = found[0]
    return RunningServer(process, host, port, output)


@contextmanager
def serving(config_dir: Path, secrets: Iterable[str] = ()) -> Iterator[RunningServer]:
    """A started server, stopped after the block: it must exit 0, with no traceback and
    none of `secrets` (PINs) in its log."""
    running = start_server(config_dir)
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()
    log = running.log()
    assert "Traceback" not in log, log
    for secret in secrets:
        assert secret not in log, f"{secret!r} in the server log"
