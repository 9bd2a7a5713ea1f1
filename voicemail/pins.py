"""Mailbox PINs: salted slow hashes in Asterisk's `password` column, and what a new PIN must not be.

Asterisk keeps the PIN in clear text; anyone who reads the table (a backup, a replica, a
support dump) can log in to every mailbox. We store argon2id (argon2-cffi) instead, in the same
column: the encoded hash is 76 characters with the parameters below, so it fits Asterisk's
String(80) column, and a leading '-' ("the owner may not change it") is kept in front of it.
A clear-text value is still accepted, so an existing Asterisk table works as it is.

The column holds argon2's PHC string with the commas of its parameter part written as dots
(`$argon2id$v=19$m=19456.t=2.p=1$<salt>$<tag>`): a voicemail.conf mailbox line splits its
fields on commas, and one form for both places means a row can move between them. Salt and
tag are base64 without dots or commas, so the swap is exact; a PHC string with commas (written
by another tool) is accepted too.

The parameters follow OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane): about 20 ms a
verification on this machine kind, which a brute force pays per guess while the lockout
(login_guard.py) stops it after a handful of guesses. The 16-byte tag keeps the column short;
a PIN has far fewer than 128 bits of entropy, so a longer tag would protect nothing more.
"""

from __future__ import annotations

import hmac
from itertools import pairwise

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

HASH_PREFIX = "$argon2id$"
NOT_CHANGEABLE = "-"

_HASHER = PasswordHasher(
    time_cost=2, memory_cost=19456, parallelism=1, hash_len=16, salt_len=16, type=Type.ID
)

# The commonest 4-digit PINs that are neither one repeated digit nor a run (DataGenetics' 2012
# analysis of leaked PINs, and the years people pick), refused as new PINs.
COMMON_PINS = frozenset(
    {
        "1212", "1004", "2000", "6969", "1122", "1313", "2001", "1010", "2580", "0852",
        "1998", "1999", "2468", "1357", "1225", "0007", "1230", "0101", "0110",
        "1100", "1001", "2020", "2121", "5683", "0070", "0911", "1200",
        "123123", "121212", "112233", "696969", "101010", "654321", "159753",
    }
)  # fmt: skip


def is_hashed(stored: str) -> bool:
    """Whether a `password` value is one of our hashes (with or without the '-' prefix)."""
    return stored.removeprefix(NOT_CHANGEABLE).startswith(HASH_PREFIX)


def is_locked(stored: str) -> bool:
    """A leading '-' means the owner may not change the PIN (Asterisk)."""
    return stored.startswith(NOT_CHANGEABLE)


def is_empty(stored: str) -> bool:
    """Empty or '-' alone: Asterisk asks for no PIN at all; we need `emptypin=yes` for that."""
    return stored in ("", NOT_CHANGEABLE)


def _to_column(phc: str) -> str:
    return phc.replace(",", ".")


def _from_column(value: str) -> str:
    return value.replace(".", ",")


def hash_pin(pin: str) -> str:
    """A fresh salted hash of `pin` in the column's form (slow on purpose: call it off the
    event loop)."""
    return _to_column(_HASHER.hash(pin))


def stored_form(pin: str, *, pinhash: bool, locked: bool = False) -> str:
    """What to write to the `password` column for a new `pin`."""
    value = hash_pin(pin) if pinhash else pin
    return NOT_CHANGEABLE + value if locked else value


def verify_pin(stored: str, entered: str) -> bool:
    """Whether `entered` is the PIN that `stored` holds, hashed or clear; constant time in the
    clear case (hmac.compare_digest), argon2's own comparison in the hashed one. An empty
    stored PIN never matches here: whether no PIN is enough is the caller's decision."""
    expected = stored.removeprefix(NOT_CHANGEABLE)
    if not expected:
        return False
    if expected.startswith(HASH_PREFIX):
        try:
            return _HASHER.verify(_from_column(expected), entered)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
    return hmac.compare_digest(expected.encode(), entered.encode())


# A verification against this costs what a real one does, so that "no such mailbox" and
# "wrong PIN" take the same time (no mailbox enumeration by timing).
_DUMMY_HASH = hash_pin("not-a-pin")


def verify_unknown(entered: str) -> bool:
    """The work of a verification for a mailbox that does not exist; always False."""
    verify_pin(_DUMMY_HASH, entered)
    return False


def verify_pin_evenly(stored: str, entered: str) -> bool:
    """verify_pin that always costs one argon2 verification (a clear or empty stored PIN pays
    for the dummy one), so how long an answer takes tells nothing of how the PIN is stored,
    nor whether the mailbox exists (verify_unknown costs the same)."""
    if is_hashed(stored):
        return verify_pin(stored, entered)
    verify_pin(_DUMMY_HASH, entered)
    return verify_pin(stored, entered)


def needs_rehash(stored: str, *, pinhash: bool) -> bool:
    """After a good login: a clear-text PIN is replaced by its hash when `pinhash` is on, and
    an old hash by one with today's parameters."""
    if is_empty(stored) or not pinhash:
        return False
    expected = stored.removeprefix(NOT_CHANGEABLE)
    if not expected.startswith(HASH_PREFIX):
        return True
    try:
        return _HASHER.check_needs_rehash(_from_column(expected))
    except InvalidHashError:
        return False


def _is_run(pin: str) -> bool:
    steps = {(int(b) - int(a)) % 10 for a, b in pairwise(pin)}
    return steps in ({1}, {9})


def pin_problem(new: str, *, mailbox: str, minpassword: int = 4) -> str | None:
    """Why `new` may not be a PIN (one word: short, digits, same, run, mailbox, common), or
    None when it is acceptable. The caller maps the reason to a prompt."""
    if len(new) < max(minpassword, 1):
        return "short"
    if not new.isdigit() or not new.isascii():
        return "digits"
    if len(set(new)) == 1:
        return "same"
    if _is_run(new):
        return "run"
    if new == mailbox:
        return "mailbox"
    if new in COMMON_PINS:
        return "common"
    return None
