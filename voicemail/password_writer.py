"""Storing a new mailbox PIN where the mailbox lives, and the external PIN scripts.

Asterisk 20 (app_voicemail.c vm_change_password, change_password_realtime,
vm_change_password_shell, check_password):
- a realtime mailbox: `UPDATE <table> SET password=? WHERE context=? AND mailbox=?`
  (ast_update2_realtime); no row changed is a failure, an unchanged PIN is no write at all;
- a voicemail.conf mailbox: the `mailbox => password,...` line gets the new password before
  its first comma. Asterisk saves the whole file again (ast_config_text_file_save); we change
  that one line and keep every other byte, and replace the file atomically (temp + rename);
- `externpass=cmd` runs `cmd <context> <mailbox> <newpassword>` through the shell instead of
  the two above (exit status 0 = stored); `externpassnotify=cmd` runs it after them;
- `externpasscheck=cmd` runs `cmd <mailbox> <context> <oldpassword> <newpassword>` (split on
  spaces, no shell); its output must start with VALID (any case). Output starting with
  FAILURE (Asterisk prints that when the script cannot be run) is accepted with a warning.

A PIN is never logged, and never appears in an exception message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import stat
import tempfile
from pathlib import Path

from storage.conffile import ConfigError, Variable, load_config
from storage.odbc import DatabaseError
from storage.realtime import Realtime

log = logging.getLogger(__name__)

SCRIPT_TIMEOUT = 30.0  # seconds an external PIN script may take
_CHECK_OUTPUT = 255  # Asterisk reads this much of externpasscheck's output


class PasswordWriteError(Exception):
    """The new PIN could not be stored; the message never holds a PIN."""


# --- voicemail.conf ---------------------------------------------------------------------------


def _first_field_end(line: bytes, start: int) -> int:
    """Where the password field that starts at `start` ends: the first `,` or unescaped `;`
    or the end of the line (trailing blanks and a CR are not part of it)."""
    end = start
    while end < len(line):
        ch = line[end : end + 1]
        if ch == b"," or (ch == b";" and line[end - 1 : end] != b"\\"):
            break
        end += 1
    while end > start and line[end - 1 : end] in (b" ", b"\t", b"\r"):
        end -= 1
    return end


def rewrite_password_line(line: bytes, mailbox: str, old: str, new: str) -> bytes:
    """`1000 => 1234,Name,...` with its password replaced; every other byte kept.

    Refuses (PasswordWriteError) a line that is not plainly `mailbox =>`/`=` followed by
    the stored password, e.g. one continued with `+=` or starting inside a block comment.
    """
    stripped = line.lstrip(b" \t")
    name = mailbox.encode()
    if not stripped.startswith(name):
        raise PasswordWriteError("the mailbox line does not start with its mailbox number")
    at = len(line) - len(stripped) + len(name)
    while line[at : at + 1] in (b" ", b"\t"):
        at += 1
    if line[at : at + 2] == b"=>":
        at += 2
    elif line[at : at + 1] == b"=":
        at += 1
    else:
        raise PasswordWriteError("the mailbox line has no '=>' after the mailbox number")
    while line[at : at + 1] in (b" ", b"\t"):
        at += 1
    end = _first_field_end(line, at)
    found = line[at:end].replace(b"\\;", b";").decode("utf-8", errors="replace").strip()
    if found != old:
        raise PasswordWriteError("the mailbox line does not hold the password the server knows")
    return line[:at] + new.encode() + line[end:]


def _governing_header(lines: list[bytes], index: int) -> str | None:
    """The `[name]` above line `index` in the same file, or None when the file has none."""
    for raw in reversed(lines[:index]):
        text = raw.strip()
        if text.startswith(b"[") and b"]" in text:
            return text[1 : text.index(b"]")].decode("utf-8", errors="replace").strip()
    return None


def _find_mailbox_line(conf_path: Path, context: str, mailbox: str) -> Variable:
    """The line that defines the mailbox now (the last one, as voicemail_settings reads it)."""
    try:
        conf = load_config(conf_path)
    except ConfigError as exc:
        raise PasswordWriteError(f"cannot read {conf_path}: {exc}") from None
    found: Variable | None = None
    for section in conf.sections:
        if section.name != context:
            continue
        for var in section.variables:
            if var.name == mailbox:
                found = var
    if found is None:
        raise PasswordWriteError(f"mailbox {mailbox}@{context} is not in {conf_path}")
    return found


def _atomic_replace(path: Path, data: bytes) -> None:
    """Write `data` next to `path`, fsync, and rename it over `path` (mode kept)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    try:
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)


def write_conf_password(conf_path: Path, context: str, mailbox: str, old: str, new: str) -> Path:
    """Rewrite the mailbox's line in voicemail.conf (or the #included file holding it);
    returns the file written. Blocking: run it in a thread."""
    var = _find_mailbox_line(conf_path, context, mailbox)
    path = Path(var.filename)
    if not path.is_absolute():
        path = conf_path.parent / path
    path = path.resolve()  # a symlinked file is written where it really is
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise PasswordWriteError(f"cannot read {path}: {exc.strerror}") from None
    index = var.line - 1
    if not 0 <= index < len(lines):
        raise PasswordWriteError(f"{path} changed while it was read")
    header = _governing_header(lines, index)
    if header is not None and header != context:
        raise PasswordWriteError(
            f"{path}:{var.line}: mailbox {mailbox} comes from [{header}], not [{context}] "
            "(a template?); change it there by hand"
        )
    try:
        lines[index] = rewrite_password_line(lines[index], mailbox, old, new)
    except PasswordWriteError as exc:
        raise PasswordWriteError(f"{path}:{var.line}: {exc}") from None
    try:
        _atomic_replace(path, b"\n".join(lines))
    except OSError as exc:
        raise PasswordWriteError(f"cannot write {path}: {exc.strerror}") from None
    return path


# --- scripts --------------------------------------------------------------------------------


def passcheck_verdict(output: str) -> bool | None:
    """What externpasscheck printed: True for VALID, False otherwise; None for FAILURE (the
    script could not run), which Asterisk accepts with a warning."""
    head = output.lstrip("\x00")[:7].upper()
    if head.startswith("VALID"):
        return True
    if head.startswith("FAILURE"):
        return None
    return False


async def _run(process: asyncio.subprocess.Process, what: str) -> tuple[int | None, bytes]:
    try:
        out, _ = await asyncio.wait_for(process.communicate(), SCRIPT_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        log.warning("%s did not finish within %.0f s; killed", what, SCRIPT_TIMEOUT)
        return None, b""
    return process.returncode, out or b""


async def run_externpass(command: str, context: str, mailbox: str, new: str) -> bool:
    """`command <context> <mailbox> <newpassword>` through /bin/sh (ast_safe_system); True on
    exit status 0."""
    line = " ".join([command, *(shlex.quote(a) for a in (context, mailbox, new))])
    try:
        process = await asyncio.create_subprocess_shell(
            line,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        log.error("externpass %s: cannot run: %s", command, exc.strerror)
        return False
    status, _ = await _run(process, f"externpass {command}")
    if status != 0:
        log.error("externpass %s for %s@%s: exit status %s", command, mailbox, context, status)
    return status == 0


async def run_externpasscheck(command: str, mailbox: str, context: str, old: str, new: str) -> bool:
    """Asterisk's check_password script; True when the PIN may be used."""
    argv = [*command.split(), mailbox, context, old, new]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        # Asterisk's child prints "FAILURE: <error>" when execv fails, which passes.
        log.warning("externpasscheck %s cannot be run (%s); PIN accepted", command, exc.strerror)
        return True
    status, out = await _run(process, f"externpasscheck {command}")
    if status is None:
        return False
    verdict = passcheck_verdict(out[:_CHECK_OUTPUT].decode("utf-8", errors="replace"))
    if verdict is None:
        log.warning("externpasscheck %s reported a failure; PIN accepted", command)
        return True
    if not verdict:
        log.info("externpasscheck %s refused the new PIN of %s@%s", command, mailbox, context)
    return verdict


# --- realtime -------------------------------------------------------------------------------


async def write_realtime_password(
    realtime: Realtime, context: str, mailbox: str, old: str, new: str
) -> None:
    """change_password_realtime: the UPDATE; raises PasswordWriteError when no row changed."""
    if old == new:
        return  # Asterisk skips the UPDATE (it would change no row)
    try:
        changed = await realtime.update2(
            "voicemail", {"context": context, "mailbox": mailbox}, {"password": new}
        )
    except DatabaseError as exc:
        raise PasswordWriteError(f"realtime voicemail UPDATE failed: {exc}") from None
    if changed <= 0:
        raise PasswordWriteError(
            f"realtime voicemail UPDATE changed no row for {mailbox}@{context}"
        )
