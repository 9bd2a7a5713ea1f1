"""Every prompt the applications can play in English has a generated file.

Three sources of names: prompts/required-en.txt (the fact sheet's list of what app_voicemail
plays, kept in the repository), every string literal in the code that looks like a prompt name,
and everything the say engine can return for English. A name missing from
prompts/manifest-en.tsv (and so from prompts/en/) fails here with the name in the message.
"""

from __future__ import annotations

import ast
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from voicemail import say

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "prompts"
FACT_SHEET = Path("/work/shared/reference/asterisk-voicemail-facts.md")
# Section 6 lists these as used only in code Asterisk compiles out (`#if 0`).
DISABLED_IN_ASTERISK = {"vm-tooshort", "vm-nothingrecorded", "vm-speakup"}
PROMPT_LITERAL = re.compile(
    r"(vm-[A-Za-z0-9-]+|digits/[A-Za-z0-9-]+|letters/[a-z-]+|phonetic/[a-z_]+|silence/\d+"
    r"|beep|auth-thankyou|transfer|pbx-invalid)"
)
# Literals that look like prompts but are not: voicemail.conf option names of a role.
NOT_PROMPTS = {"vm-prepend-timeout"}
# Code that only runs for Spanish or French, whose prompts come from those core sounds.
OTHER_LANGUAGE_CODE = {"voicemail/say/es.py", "voicemail/say/fr.py"}


def manifest() -> set[str]:
    lines = (PROMPTS / "manifest-en.tsv").read_text(encoding="utf-8").splitlines()
    return {line.split("\t", 1)[0] for line in lines if line.strip()}


def required() -> set[str]:
    lines = (PROMPTS / "required-en.txt").read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def generated() -> set[str]:
    root = PROMPTS / "en"
    return {p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.wav")}


def missing(names: set[str]) -> list[str]:
    return sorted(names - manifest() - NOT_PROMPTS)


def fact_sheet_names(text: str) -> set[str]:
    """The first column of section 6's table, with `a … b` ranges and bare continuations
    (`digits/0 … digits/20, 30 … 90, hundred`) expanded."""
    section = text.split("## 6.", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| ") or row.startswith("| File") or row.startswith("|---"):
            continue
        cell = re.sub(r"\(.*?\)", "", row.split("|")[1])
        prefix = ""
        for part in (p.strip() for p in cell.split(",")):
            if "…" in part:
                first, last = (x.strip() for x in part.split("…"))
                head, start = re.fullmatch(r"(.*?)(\d+)", first).groups()
                end = int(re.fullmatch(r".*?(\d+)", last).group(1))
                head = head if head else prefix
                step = 10 if int(start) >= 30 and int(start) % 10 == 0 else 1
                names.update(f"{head}{i}" for i in range(int(start), end + 1, step))
            elif part:
                names.add(part if "/" in part or not prefix else prefix + part)
            first_name = part.split("…")[0].strip()
            if "/" in first_name:
                prefix = first_name.rsplit("/", 1)[0] + "/"
    return names


def code_literals() -> dict[str, str]:
    """Prompt-like string constants in the server's code: name -> first file:line using it."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "voicemail").rglob("*.py")) + sorted(
        (REPO / "channels").rglob("*.py")
    ):
        relative = path.relative_to(REPO).as_posix()
        if relative in OTHER_LANGUAGE_CODE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # Pieces of f-strings (f"digits/h-{n}") are no names; english_say_names covers them.
        pieces = {
            id(value)
            for node in ast.walk(tree)
            if isinstance(node, ast.JoinedStr)
            for value in node.values
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) not in pieces and PROMPT_LITERAL.fullmatch(node.value):
                    found.setdefault(node.value, f"{relative}:{node.lineno}")
    return found


def english_say_names() -> set[str]:
    """Everything the say engine returns for English over a wide sweep of its inputs."""
    names: set[str] = set()
    numbers = [*range(-120, 1201), 1999, 2024, 9999, 12345, 999999, 10**6, 10**9, 2**31 - 2]
    for language in ("en", "en_GB"):
        for num in numbers:
            if language == "en_GB" and abs(num) >= 10**9:
                continue
            names.update(say.say_number(num, language))
    for num in [*range(-3, 1201), 10**6, 10**9, 2**31 - 1]:
        names.update(say.say_enumeration(num, "en"))
    names.update(say.say_digits("0123456789*#-", "en"))
    names.update(say.say_alpha("".join(chr(c) for c in range(32, 127))))
    formats = [
        say.ENVELOPE_FORMAT,
        None,
        "AaBbhmdeYIlHkMNPpQqRST",
        "'vm-received' Q 'digits/at' IMp",
        "'vm-received' q 'digits/at' H N 'hours'",
        "'vm-received' q 'digits/at' H N 'hours' 'phonetic/z_p'",
        "'vm-received' a d b 'digits/at' HM",
    ]
    tz = ZoneInfo("America/New_York")
    now = datetime(2024, 3, 15, 14, 30, tzinfo=tz)
    # Every day from 1899 (silent year) to a year ahead is too many; sample days and minutes.
    moments = [now + timedelta(hours=7 * i, minutes=13 * i) for i in range(-1500, 200)]
    moments += [datetime(year, 1, 1, tzinfo=tz) for year in (1899, 1901, 1905, 1950, 1999)]
    for when in moments:
        for fmt in formats:
            names.update(
                say.say_datetime(
                    int(when.timestamp()), fmt, "America/New_York", "en", int(now.timestamp())
                )
            )
    for new in range(4):
        for old in range(4):
            for urgent in range(4):
                names.update(say.vm_intro(new, old, urgent, "en", temp_greeting_warning=True))
    for box in (
        "INBOX",
        "Old",
        "Work",
        "Family",
        "Friends",
        "Urgent",
        *map("Cust{}".format, range(1, 6)),
    ):
        names.update(say.folder_name(f"vm-{box}", "en"))
        names.update(say.empty_folder(f"vm-{box}", "en"))
    for index in range(4):
        names.update(say.message_intro(index, 3, True, "en"))
    names.update(say.say_duration(600, "en"))
    names.update(say.prompt_overrides({}).values())
    return names


def test_manifest_and_generated_files_agree() -> None:
    assert generated() == manifest()


def test_required_prompts_are_generated() -> None:
    assert missing(required()) == []


def test_required_list_holds_the_fact_sheet_prompts() -> None:
    if not FACT_SHEET.is_file():
        pytest.skip("fact sheet not present on this machine")
    names = fact_sheet_names(FACT_SHEET.read_text(encoding="utf-8"))
    assert len(names) > 150
    assert {"vm-Cust3", "digits/90", "digits/h-31", "digits/mon-11", "silence/1"} <= names
    assert sorted(names - required() - DISABLED_IN_ASTERISK) == []


def test_every_prompt_literal_in_the_code_is_generated() -> None:
    literals = code_literals()
    assert "vm-intro" in literals and "vm-youhave" in literals
    absent = {name: where for name, where in literals.items() if name in missing({name})}
    assert absent == {}


def test_every_english_say_engine_prompt_is_generated() -> None:
    names = english_say_names()
    assert {"digits/h-last", "digits/tomorrow", "letters/z", "hours", "vm-and"} <= names
    assert missing(names) == []


def test_fact_sheet_parser_expands_ranges() -> None:
    text = (
        "## 6. Prompts\n| File | Words |\n|---|---|\n"
        "| digits/0 … digits/3, 30 … 50, hundred | x |\n"
        "| digits/day-0 … day-2 | y |\n| vm-Cust1 … vm-Cust2 | z |\n"
        "| digits/h-1 … h-2 (ordinals) | o |\n| digits/a-m, digits/p-m | p |\n## 7. Next\n"
    )
    assert fact_sheet_names(text) == {
        *(f"digits/{n}" for n in (0, 1, 2, 3, 30, 40, 50)),
        "digits/hundred",
        "digits/day-0",
        "digits/day-1",
        "digits/day-2",
        "vm-Cust1",
        "vm-Cust2",
        "digits/h-1",
        "digits/h-2",
        "digits/a-m",
        "digits/p-m",
    }
