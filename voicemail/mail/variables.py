"""The ${VM_*} and ${ORIG_VM_*} variables of emailsubject, emailbody, fromstring and the pager
strings, as Asterisk 20's prep_email_sub_vars sets them (fact sheet 5.3).

Asterisk expands these strings with ast_str_substitute_variables on a dummy channel, so there
the full dial plan language works (`${IF(...)}`, `$[...]`, `${VAR:offset:length}`). Here only
plain `${NAME}` references to the variables below are supported; anything else is refused when
the configuration is loaded (`check_template`), never left in the mail unexpanded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

UNKNOWN_CALLER = "an unknown caller"
NO_CATEGORY = "no category"

# Every variable prep_email_sub_vars sets (AV@20 l.5299).
VARIABLES = (
    "VM_NAME",
    "VM_DUR",
    "VM_MSGNUM",
    "VM_CONTEXT",
    "VM_MAILBOX",
    "VM_CALLERID",
    "VM_CIDNAME",
    "VM_CIDNUM",
    "VM_DATE",
    "VM_CATEGORY",
    "VM_FLAG",
    "ORIG_VM_CALLERID",
    "ORIG_VM_CIDNAME",
    "ORIG_VM_CIDNUM",
    "ORIG_VM_DATE",
)

_REFERENCE = re.compile(r"\$\{([^{}]*)\}")
_FUNCTION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\(")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PHONE_PUNCTUATION = str.maketrans("", "", "()- .")
_PHONE = re.compile(r"[0-9#*+]+\Z")


@dataclass(frozen=True)
class Original:
    """What the message's `.txt` (its database row) says: caller ID string and origtime.

    Asterisk reads these back from the stored message for ORIG_VM_* and the forwarded body.
    """

    callerid: str = ""
    origtime: int | None = None


def duration_text(seconds: int) -> str:
    """VM_DUR: `M:SS` (minutes unbounded), as `%d:%02d`."""
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def callerid_merge(name: str, number: str, unknown: str) -> str:
    """ast_callerid_merge: `"Name" <num>` (quotes and backslashes escaped), name, num or
    `unknown`. An empty name or number counts as absent."""
    if name and number:
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{number}>'
    return name or number or unknown


def callerid_split(text: str) -> tuple[str, str]:
    """ast_callerid_split, leniently: `"Name" <num>`, `Name <num>`, `<num>`, a bare number or
    a bare name, as (name, number); the number loses `()- .` as ast_shrink_phone_number does."""
    text = text.strip()
    quoted = len(text) >= 2 and text[0] == '"' and text[-1] == '"' and "<" not in text
    if quoted:
        return _unquote(text), ""
    start = text.rfind("<")
    if start >= 0:
        end = text.find(">", start)
        number = text[start + 1 : end if end >= 0 else len(text)]
        name = _unquote(text[:start].strip())
        return name, number.translate(_PHONE_PUNCTUATION)
    shrunk = text.translate(_PHONE_PUNCTUATION)
    if shrunk and _PHONE.fullmatch(shrunk):
        return "", shrunk
    return _unquote(text), ""


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    return re.sub(r"\\(.)", r"\1", text)


def email_variables(
    *,
    fullname: str,
    msgnum: int,
    context: str,
    mailbox: str,
    cidnum: str,
    cidname: str,
    duration: int,
    date: str,
    category: str | None,
    flag: str,
    original: Original | None = None,
    origdate: str = "",
) -> dict[str, str]:
    """The variables for one mail; `msgnum` is 0-based (VM_MSGNUM is msgnum + 1).

    ORIG_VM_* are set only when the stored message is known (`original`), as Asterisk sets
    them only when it can read the `.txt`; ORIG_VM_DATE is `origdate`, already formatted.
    """
    values = {
        "VM_NAME": fullname,
        "VM_DUR": duration_text(duration),
        "VM_MSGNUM": str(msgnum + 1),
        "VM_CONTEXT": context,
        "VM_MAILBOX": mailbox,
        "VM_CALLERID": callerid_merge(cidname, cidnum, UNKNOWN_CALLER),
        "VM_CIDNAME": cidname or UNKNOWN_CALLER,
        "VM_CIDNUM": cidnum or UNKNOWN_CALLER,
        "VM_DATE": date,
        "VM_CATEGORY": category if category is not None else NO_CATEGORY,
        "VM_FLAG": flag,
    }
    if original is not None:
        if original.callerid:
            name, number = callerid_split(original.callerid)
            values["ORIG_VM_CALLERID"] = original.callerid
            values["ORIG_VM_CIDNAME"] = name
            values["ORIG_VM_CIDNUM"] = number
        if original.origtime is not None and origdate:
            values["ORIG_VM_DATE"] = origdate
    return values


def check_template(text: str) -> str | None:
    """The problem with a template (a reference we cannot expand), or None."""
    if "$[" in text:
        return "uses a $[...] expression; only ${VM_*} variables are supported here"
    position = 0
    while (start := text.find("${", position)) >= 0:
        function = _FUNCTION.match(text, start)
        if function:
            return (
                f"uses the dial plan function {function.group(1)}(); only plain variables are "
                f"supported here ({', '.join(VARIABLES)})"
            )
        match = _REFERENCE.match(text, start)
        if match is None:
            return f"has an unterminated or nested reference at {text[start : start + 20]!r}"
        inner = match.group(1)
        if not _NAME.fullmatch(inner):
            return (
                f"uses the reference ${{{inner}}}; only plain variables are supported here "
                f"({', '.join(VARIABLES)})"
            )
        if inner not in VARIABLES:
            return f"uses ${{{inner}}}, which is not one of {', '.join(VARIABLES)}"
        position = match.end()
    return None


def substitute(template: str, variables: Mapping[str, str]) -> str:
    """Replace each `${NAME}` by its value; an unset variable becomes empty (as in Asterisk).

    Values are inserted once, never rescanned, so a caller name holding `${...}` stays text.
    """
    return _REFERENCE.sub(lambda match: variables.get(match.group(1), ""), template)
