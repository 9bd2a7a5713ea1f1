"""The tables bench.calls prints: one row a run, and what went wrong under them."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.calls import RunResult


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} %"


def _ms(summary: dict[str, float]) -> str:
    if not summary:
        return "n/a"
    return " / ".join(f"{summary[k]:.1f}" for k in ("avg", "p95", "p99", "max"))


def _metrics(values: dict[str, float]) -> str:
    """The server's ODBC work and loop lag, from its /metrics."""
    if not values.get("db_units") or not values.get("lag_samples"):
        return ""
    late = values["lag_samples"] - values.get("lag_within_5ms", 0)
    return (
        f"; ODBC work units {values['db_units']:.0f}, avg {values['db_unit_avg_ms']:.1f} ms; "
        f"loop lag samples over 5 ms {late:.0f} of {values['lag_samples']:.0f}"
    )


def markdown(results: list[RunResult]) -> str:
    head = (
        "| N | attempted | succeeded (strict) | rows | message audio stored / sent "
        "| recorded s | damaged packets | server CPU plateau / run | generator CPU plateau "
        "| PostgreSQL CPU plateau | machine busy plateau (of 200) | peak RSS "
        "| INVITE->200 ms avg / p95 / p99 / max | BYE->200 ms avg / p95 / p99 / max "
        "| recording start lag ms avg / max | server loop waiting for a CPU, plateau |\n"
        "|" + "---|" * 16 + "\n"
    )
    rows = []
    for r in results:
        c, s = r.counters, r.stored
        lag = s.start_lag_ms
        rows.append(
            f"| {r.calls} | {c.get('TotalCallCreated', 'n/a')} "
            f"| {c.get('SuccessfulCall', 'n/a')} | {s.rows} "
            f"| {s.message_seconds:.1f} / {r.sent_message_seconds:.0f} s "
            f"({100 * s.message_seconds / r.sent_message_seconds:.2f} %) "
            f"| {s.recorded_seconds:.1f} | {s.damaged_frames} "
            f"| {percent(r.cpu['server_plateau'])} / {percent(r.cpu['server_run'])} "
            f"| {percent(r.cpu['sipp_plateau'])} | {percent(r.cpu['postgres_plateau'])} "
            f"| {percent(r.cpu['system_plateau'])} | {r.peak_rss_mb:.0f} MB "
            f"| {_ms(r.invite_ms)} | {_ms(r.bye_ms)} "
            + (f"| {lag['avg']:.0f} / {lag['max']:.0f} " if lag else "| n/a ")
            + f"| {percent(r.cpu['loop_wait_plateau'])} |"
        )
    details = []
    for r in results:
        failed = {k: v for k, v in r.counters.items() if k.startswith("Failed") and v}
        extra = {
            k: r.counters.get(k, 0)
            for k in ("Retransmissions", "OutOfCallMsgs", "DeadCallMsgs", "Warnings", "LateTicks")
        }
        details.append(
            f"- N={r.calls} ({r.generator}, {r.codec}"
            + (f", realtime rows +{r.realtime_rows}" if r.realtime_rows is not None else "")
            + f", {r.odbc_connections} ODBC connections"
            + f"): generator exit {r.sipp_exit}, "
            f"wall {r.wall_seconds:.0f} s, "
            f"server exit {r.server_exit}, failures {failed or 'none'}, {extra}, "
            f"unaligned recordings {r.stored.unaligned}"
            + _metrics(r.server_metrics)
            + (f"; server->caller RTP packets {r.greeting_packets}" if r.greeting_packets else "")
        )
        details += [f"  - server log: {line}" for line in r.server_problems]
        details += [f"  - generator: {line[:300]}" for line in r.sipp_errors]
    return head + "\n".join(rows) + "\n\n" + "\n".join(details) + "\n"


def source_version() -> str:
    """The commit measured, and the files outside bench/ that differ from it."""
    repo = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(repo)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    status = subprocess.run([*git, "status", "--short"], capture_output=True, text=True)
    changed = [line[3:] for line in status.stdout.splitlines() if not line[3:].startswith("bench/")]
    return f"commit {head.stdout.strip()}" + (f" + changes in {changed}" if changed else "")


def machine() -> str:
    return (
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {source_version()}, "
        f"nproc {os.cpu_count()}, "
        f"Python {platform.python_version()} ({sys.executable}), {platform.platform()}, "
        f"sipp {subprocess.run(['sipp', '-v'], capture_output=True, text=True).stdout.split()[1]}"
    )
