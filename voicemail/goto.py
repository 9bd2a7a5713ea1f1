"""A dial plan jump an application asks for (Asterisk's `a`/`o` extensions, Goto, GotoIf).

An application returns `Goto(...)` instead of True/False; the dial plan runner continues at
that extension and priority (in the call's context unless one is named), and an unknown target
ends the call as Asterisk does (the `i` extension if the context has one).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Goto:
    exten: str
    context: str | None = None  # None: the context the call is in
    priority: int | str = 1  # a number or a label of `n(label)`
