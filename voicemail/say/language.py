"""Which of our rule sets a channel language uses, and numbers in that language.

Asterisk matches language prefixes case-insensitively (`strncasecmp(language, "es", 2)`), so
`es_MX` and `ES` are Spanish; `en_GB` has its own number rule. Every other language uses the
English rules, as Asterisk does for a language it has no rules for.
"""

from __future__ import annotations

from . import en, es, fr


def syntax(language: str) -> str:
    """ "en_GB", "es", "fr" or "en"."""
    lower = (language or "").lower()
    if lower.startswith("en_gb"):
        return "en_GB"
    for prefix in ("es", "fr"):
        if lower.startswith(prefix):
            return prefix
    return "en"


def say_number(n: int, language: str, gender: str = "") -> list[str]:
    """SayNumber: `gender` is Asterisk's option ("f" feminine, "m" masculine) where the
    language has one (es, fr); ValueError beyond what the language's rules can say."""
    rules = syntax(language)
    if rules == "es":
        return es.number(n, gender)
    if rules == "fr":
        return fr.number(n, gender)
    if rules == "en_GB":
        return en.number_gb(n)
    return en.number(n)


def say_enumeration(n: int, language: str) -> list[str]:
    """SayOrdinal-style enumeration (days of the month): English rules for en, es and fr, as
    Asterisk 20 has no Spanish or French enumeration."""
    return en.enumeration(n)
