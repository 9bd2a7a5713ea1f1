"""End to end: `/metrics`, `/health` and `/ready` of a running server, as Prometheus and a
load balancer see them, after a known sequence of sipp calls; logger.conf's JSON lines."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from . import mail_server, sipp
from .dbbackends import Backend, tcp_proxy
from .server import run_cli, start_server, write_config
from .test_deposit_e2e import DATA, deposit_scenario, rows

pytestmark = pytest.mark.timeout(180)

smtp_server = pytest.fixture(mail_server.smtp_servers)
MAILBOXES = "[default]\n1000 => 1234,Alice Example,alice@example.com\n"


def tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def enable_http(config: Path, port: int) -> None:
    (config / "http.conf").write_text(
        f"[general]\nenabled=yes\nbindaddr=127.0.0.1\nbindport={port}\n"
    )
    (config / "prometheus.conf").write_text("[general]\nenabled=yes\nuri=metrics\n")


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET http://127.0.0.1:port/path."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, content_type, body = get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def deposit(tmp_path: Path, target: str, name: str) -> None:
    xml = deposit_scenario(
        "1000",
        DATA / "signal3s_pcmu.pcap",
        [0, 101],
        [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)],
    )
    sipp.run_sipp(tmp_path / name, xml, target, timeout=60).check()


def refused_call(tmp_path: Path, target: str, user: str, code: int) -> None:
    xml = sipp.scenario(
        f"refused{user}",
        sipp.invite(user, [0]),
        sipp.recv(100, optional=True),
        sipp.recv(code),
        sipp.ack_non2xx(user),
    )
    sipp.run_sipp(tmp_path / f"sipp{user}", xml, target, timeout=20).check()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_counter_follows_a_known_sequence_of_calls(
    backend: Backend, tmp_path: Path, smtp_server
) -> None:
    handler = mail_server.Handler()
    config = write_config(
        tmp_path / "etc", backend, mailboxes=MAILBOXES, smtp_port=smtp_server(handler)
    )
    port = tcp_port()
    enable_http(config, port)
    server = start_server(config)
    try:
        assert get(port, "/health")[0] == 200
        status, _type, body = get(port, "/ready")
        assert status == 200, body
        deposit(tmp_path, server.target, "first")
        deposit(tmp_path, server.target, "second")
        refused_call(tmp_path, server.target, "1999", 480)  # VoiceMail: no such mailbox
        refused_call(tmp_path, server.target, "nobody", 404)  # no extension: no application
        stored = rows(backend)
        assert len(stored) == 2
        deadline = time.monotonic() + 30
        metrics = scrape(port)
        while value(metrics, "voicemail_email_sent_total") < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
            metrics = scrape(port)
        assert len(handler.received) == 2

        def v(name: str, **labels: str) -> float:
            return value(metrics, name, **labels)

        assert v("voicemail_calls_total", app="VoiceMail", result="SUCCESS") == 2
        assert v("voicemail_calls_total", app="VoiceMail", result="FAILED") == 1
        assert v("voicemail_calls_total", app="VoiceMailMain", result="SUCCESS") == 0
        assert v("voicemail_calls_active", app="VoiceMail") == 0
        assert v("voicemail_calls_active", app="VoiceMailMain") == 0
        assert v("voicemail_messages_stored_total") == 2
        assert 5 <= v("voicemail_recorded_seconds_total") <= 7  # two 3 s recordings
        assert v("voicemail_spool_messages") == 0
        assert v("voicemail_email_sent_total") == 2
        assert v("voicemail_email_failed_total") == 0
        assert v("voicemail_email_outbox_messages") == 0
        assert v("voicemail_sip_requests_total", method="INVITE") == 4
        assert v("voicemail_sip_requests_total", method="BYE") == 2
        assert v("voicemail_sip_requests_total", method="ACK") >= 2
        # 3 s of 20 ms packets per deposit, and the greeting's wait sends nothing.
        assert 290 <= v("voicemail_rtp_packets_total", kind="received") <= 310
        assert v("voicemail_rtp_packets_total", kind="lost") == 0
        assert v("voicemail_rtp_packets_total", kind="late") == 0
        assert v("voicemail_db_query_seconds_count", **{"class": "asterisk"}) > 0
        assert v("voicemail_db_errors_total", **{"class": "asterisk"}) == 0
        assert v("voicemail_loop_lag_seconds_count") > 0
        assert v("voicemail_media_clock_lag_seconds_count") >= 290  # a tick each 20 ms of a call
        assert ("voicemail_realtime_cache_total", frozenset({("result", "miss")})) in metrics
        # Nobody listened: each mail's attachment is what was read, once per message.
        assert v("voicemail_messages_read_total") == 2
        recorded = sum(len(bytes(row["recording"])) for row in stored)
        assert v("voicemail_message_audio_read_bytes_total") == recorded
        assert ("voicemail_mwi_notify_total", frozenset({("result", "ok")})) not in metrics
        assert get(port, "/nothing-here")[0] == 404
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_ready_is_503_with_the_reason_while_the_database_is_away(
    backend: Backend, tmp_path: Path
) -> None:
    with tcp_proxy(5432) as proxy:
        via_proxy = backend.via(proxy.port)
        config = write_config(tmp_path / "etc", via_proxy)
        port = tcp_port()
        enable_http(config, port)
        server = start_server(config)
        try:
            status, _type, body = get(port, "/ready")
            assert (status, body) == (200, "ready\n")
            proxy.stop()  # the database goes away
            status, _type, body = get(port, "/ready")
            assert status == 503
            assert "database [asterisk]" in body, body
            assert get(port, "/health")[0] == 200  # the process still serves
            assert value(scrape(port), "voicemail_db_errors_total", **{"class": "asterisk"}) >= 1
            proxy.start()  # back: ready again once a connection is made
            deadline = time.monotonic() + 30
            while get(port, "/ready")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert get(port, "/ready")[0] == 200
        finally:
            assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_json_log_lines_carry_the_call_id_and_mailbox(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    (config / "logger.conf").write_text(
        "[general]\nformat=json\nlevel=info\n\n[levels]\nstorage.odbc=debug\nvoicemail.mwi_feed=warning\n"
    )
    server = start_server(config)
    try:
        deposit(tmp_path, server.target, "json")
    finally:
        assert server.stop() == 0, server.log()
    printed = ("ARA Voicemail listening", "  ")  # the banner serve prints, not log lines
    entries = []
    for line in server.log().splitlines():
        if not line.strip() or line.startswith(printed):
            continue
        entry = json.loads(line)  # every log line is one JSON object
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        entries.append(entry)
    in_call = [e for e in entries if e.get("mailbox") == "1000@default" and e.get("call_id")]
    assert in_call, entries
    call_ids = {e["call_id"] for e in in_call}
    assert len(call_ids) == 1
    # The dial plan's own lines carry the call id from its first step on.
    executing = [e for e in entries if "executing" in e["message"]]
    assert executing and all(e.get("call_id") in call_ids for e in executing), executing
    # A level per facility: storage.odbc's debug lines show, the MWI feed's info lines do not.
    assert any(e["level"] == "debug" and e["logger"] == "storage.odbc" for e in entries)
    assert all(e["level"] != "debug" for e in entries if e["logger"] != "storage.odbc")
    assert not [e for e in entries if e["logger"] == "voicemail.mwi_feed" and e["level"] == "info"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("http.conf", "[general]\nenabled=yes\nbindport=80a\n", "http.conf:3:"),
        ("http.conf", "[general]\nenabled=yes\n\ntlsenable=yes\n", "http.conf:4:"),
        ("prometheus.conf", "[general]\nenabled=yes\nauth_username=x\n", "prometheus.conf:3:"),
        ("logger.conf", "[general]\nformat=xml\n", "logger.conf:2:"),
    ],
)
def test_a_broken_line_stops_start_up_with_file_and_line(
    backend: Backend, tmp_path: Path, name: str, text: str, expected: str
) -> None:
    config = write_config(tmp_path / "etc", backend)
    enable_http(config, tcp_port())
    (config / name).write_text(text)
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    result = run_cli("serve", "-C", str(config), timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_jitter_buffer_counts_lost_and_late_packets() -> None:
    """What voicemail_rtp_packets_total{kind="lost"|"late"} adds up, packet by packet."""
    from channels.rtp import JitterBuffer, RtpCounts, RtpPacket

    counts = RtpCounts()
    buffer = JitterBuffer(depth=2, counts=counts)

    def packet(seq: int) -> RtpPacket:
        return RtpPacket(payload_type=0, sequence=seq, timestamp=seq * 160, ssrc=7, payload=b"")

    for seq in (10, 11, 13, 14, 15):  # 12 never comes: given up on once 3 are held
        buffer.push(packet(seq), b"")
    buffer.push(packet(12), b"")  # too late now
    buffer.push(packet(17), b"")
    buffer.flush()  # the recording ends with 16 missing
    assert (counts.lost, counts.late) == (2, 1)


def test_status_http_server_speaks_http_1_1() -> None:
    """Two requests on one connection, HEAD without a body, 405 for POST, 400 for garbage."""
    import asyncio

    from voicemail.http_status import HttpSettings, Reply, StatusHttpServer

    async def health() -> Reply:
        return Reply(200, b"OK\n")

    async def exchange(port: int, data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # the server closes after the last
        writer.close()
        return answer

    async def run() -> list[bytes]:
        server = StatusHttpServer(
            HttpSettings(enabled=True, bindport=0, session_inactivity=2.0), {"/health": health}
        )
        await server.start()
        try:
            return [
                await exchange(
                    server.port,
                    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                ),
                await exchange(server.port, b"POST /health HTTP/1.0\r\nContent-Length: 0\r\n\r\n"),
                await exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n"),
            ]
        finally:
            await server.stop()

    both, post, garbage = asyncio.run(run())
    assert both.count(b"HTTP/1.1 200 ") == 2
    assert both.endswith(b"\r\n\r\n") and both.count(b"OK\n") == 1  # HEAD: headers only
    assert post.startswith(b"HTTP/1.1 405 ")
    assert garbage.startswith(b"HTTP/1.1 400 ")
