"""voicemail.conf [general] custom prompt names (`vm-login=custom/welcome` ...).

Asterisk 20 reads ten of them (app_voicemail.c load_config, "load password sounds
configuration") into 80-byte buffers; each names the file played in one role. The role is
keyed by the option name, and `vm-prepend-timeout` (default `vm-then-pound`, the prompt after
a prepend recording timed out) is a role whose default prompt is also used elsewhere, so
callers look up the role, not the prompt: `prompts["vm-prepend-timeout"]`.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..sounds import checked_sound_name

# option name (= role) -> the prompt Asterisk plays when the option is not set
PROMPT_OPTIONS: dict[str, str] = {
    "vm-login": "vm-login",
    "vm-newuser": "vm-newuser",
    "vm-password": "vm-password",
    "vm-newpassword": "vm-newpassword",
    "vm-passchanged": "vm-passchanged",
    "vm-reenterpassword": "vm-reenterpassword",
    "vm-mismatch": "vm-mismatch",
    "vm-invalid-password": "vm-invalid-password",
    "vm-pls-try-again": "vm-pls-try-again",
    "vm-prepend-timeout": "vm-then-pound",
}
_MAX_LENGTH = 79  # ast_copy_string into char[80] would cut a longer name


def prompt_name_problem(value: str) -> str | None:
    """What is wrong with `value` as the prompt of a role (None: nothing): empty, too long
    (Asterisk would truncate it) or climbing out of the sounds folder."""
    value = value.strip()
    if not value:
        return "empty prompt name"
    if len(value) > _MAX_LENGTH:
        return f"prompt name longer than {_MAX_LENGTH} characters"
    try:
        checked_sound_name(value)
    except ValueError as exc:
        return str(exc)
    return None


def prompt_overrides(general: Mapping[str, str]) -> dict[str, str]:
    """Every role of PROMPT_OPTIONS mapped to the prompt to play, from [general] options.

    Option names are matched without regard to case, as ast_variable_retrieve does. An empty,
    too long (Asterisk would truncate it) or folder-escaping value is a ValueError naming the
    option, so the loader can report it with its file:line.
    """
    lowered = {key.lower(): value for key, value in general.items()}
    prompts = dict(PROMPT_OPTIONS)
    for option in PROMPT_OPTIONS:
        if option not in lowered:
            continue
        value = lowered[option].strip()
        problem = prompt_name_problem(value)
        if problem is not None:
            raise ValueError(f"{option}: {problem}")
        prompts[option] = value
    return prompts
