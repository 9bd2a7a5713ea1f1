"""Soak: a million generated UDP datagrams against a running `voicemail serve`.

Run from the repository root: ``.venv/bin/python -m bench.soak_fuzz --datagrams 1000000``.

A seeded generator (--seed) takes valid SIP requests (INVITE, OPTIONS, REGISTER, BYE, CANCEL,
ACK, SUBSCRIBE, NOTIFY, INFO, MESSAGE, each with its own Call-ID and branch) and the RFC 4475
torture corpus of tests/data/torture, and mutates most of them (flipped, inserted and deleted
bytes, truncation, repeated, dropped and rewritten header lines, bad Content-Length and CSeq
values, other line ends, NULs, a longer or stranger start line). They go to one server on
127.0.0.1 (SQLite, the default test configuration) from one socket, paced at --rate per
second; every --probe-every datagrams an OPTIONS from another socket must be answered
(liveness), and when it is slow to be answered the rate is lowered (the rate the machine
takes). Reported: datagrams sent and per second, the kernel's drops on the server's socket,
the answers the server sent by status, the probes (answered, by status, slowest), the
server's RSS before, at its peak and after the transactions expired, whether it is still
running (crashes), and its log's ERROR/Traceback lines.
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.dbbackends import fresh_database
from tests.server import RunningServer, start_server, write_config
from tests.test_hostile_e2e import EXPECTED, load_torture, options

METHODS = ("INVITE", "OPTIONS", "REGISTER", "BYE", "CANCEL", "ACK", "SUBSCRIBE", "NOTIFY")
METHODS += ("INFO", "MESSAGE")
SDP = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 49217 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)
JUNK_VALUES = (
    "", " ", "-1", "0", "4294967296", "99999999999999999999", "<>", "<sip:>", ";;;", "%00",
    "\x00", "a" * 300, "sip:" + "a" * 2000 + "@x", "\xff\xfe", "SIP/2.0/UDP", '"unclosed',
    "tag=", "z9hG4bK", "1 INVITE", "application/sdp", "*",
)  # fmt: skip
PROBE_TIMEOUT = 5.0  # seconds, with the OPTIONS sent again at 0.5, 1.5 and 3.5 s


def request(rng: random.Random, target: str, local: str, n: int) -> bytes:
    """A valid request of a random method, unique Call-ID and branch."""
    method = rng.choice(METHODS)
    call_id = f"fz{n}-{rng.getrandbits(32):08x}"
    # Mostly no such extension (the parser and the transactions are what is fuzzed); now and
    # then the mailbox 1000, whose INVITE starts a real call.
    user = rng.choice(["nobody", "alice", "9" * rng.randint(1, 12)] * 16 + ["1000"])
    body = SDP if method in ("INVITE", "ACK") and rng.random() < 0.7 else ""
    extra = ""
    if method == "REGISTER":
        extra = f"Contact: <sip:{user}@{local}>\r\nExpires: {rng.choice([0, 60, 3600])}\r\n"
    elif method in ("SUBSCRIBE", "NOTIFY"):
        extra = "Event: message-summary\r\nExpires: 600\r\n"
    elif method in ("BYE", "INFO", "MESSAGE", "NOTIFY"):
        extra = "Content-Type: text/plain\r\n" if not body else ""
    if body:
        extra += "Content-Type: application/sdp\r\n"
    to_tag = ";tag=t1" if method in ("BYE", "INFO", "NOTIFY") else ""
    head = (
        f"{method} sip:{user}@{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{call_id}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:fuzz@{local}>;tag=f{n}\r\n"
        f"To: <sip:{user}@{target}>{to_tag}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: {rng.randint(1, 1000)} {method}\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return (head + body).encode()


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


def m_flip(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        b[rng.randrange(len(b))] = rng.getrandbits(8)
    return bytes(b)


def m_insert(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]


def m_delete(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.randint(1, 64) :]


def m_truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def m_repeat_line(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    return b"\r\n".join(lines[: i + 1] + [lines[i]] * rng.randint(1, 50) + lines[i + 1 :])


def m_drop_line(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return b"\r\n".join(lines)


def m_header_value(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    i = rng.randrange(1, max(2, len(lines)))
    if i < len(lines) and b":" in lines[i]:
        name = lines[i].split(b":", 1)[0]
        lines[i] = name + b": " + rng.choice(JUNK_VALUES).encode("utf-8", "surrogateescape")
    return b"\r\n".join(lines)


def m_numbers(rng: random.Random, data: bytes) -> bytes:
    value = rng.choice([b"-1", b"0", b"4294967296", b"99999999999999999999999", b"1e9", b"0x10"])
    return re.sub(rb"(Content-Length|CSeq|Max-Forwards|Expires): *\d+", rb"\1: " + value, data)


def m_line_ends(rng: random.Random, data: bytes) -> bytes:
    return data.replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"]))


def m_start_line(rng: random.Random, data: bytes) -> bytes:
    first, sep, rest = data.partition(b"\r\n")
    parts = first.split(b" ")
    choice = rng.randrange(4)
    if choice == 0 and parts:
        parts[0] = rng.choice([b"", b"invite", b"X" * 200, b"SIP/2.0", b"\x00", b"GET"])
    elif choice == 1 and len(parts) > 1:
        parts[1] = rng.choice([b"", b"<sip:a@b>", b"sip:" + b"%" * 500, b"tel:+1", b"*", b"sip:@"])
    elif choice == 2:
        parts[-1] = rng.choice([b"SIP/3.0", b"SIP/2.0 extra", b"", b"HTTP/1.1", b"SIP/2"])
    else:
        parts = [b"SIP/2.0", str(rng.randint(100, 699)).encode(), b"OK"]  # a response
    return b" ".join(parts) + sep + rest


def m_nul(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + b"\x00" * rng.randint(1, 4) + data[at:]


def m_case(rng: random.Random, data: bytes) -> bytes:
    return bytes(c ^ 0x20 if 65 <= (c | 0x20) <= 122 and rng.random() < 0.2 else c for c in data)


MUTATIONS: tuple[Callable[[random.Random, bytes], bytes], ...] = (
    m_flip, m_insert, m_delete, m_truncate, m_repeat_line, m_drop_line, m_header_value,
    m_numbers, m_line_ends, m_start_line, m_nul, m_case,
)  # fmt: skip


class Generator:
    """Seeded datagrams: 10 % torture corpus, 15 % valid requests, the rest mutated."""

    def __init__(self, seed: int, target: str, local: str) -> None:
        self.rng = random.Random(seed)
        self.target, self.local = target, local
        self.corpus = sorted(EXPECTED)
        self.n = 0

    def next(self) -> bytes:
        rng, self.n = self.rng, self.n + 1
        if rng.random() < 0.1:
            name = rng.choice(self.corpus)
            data = load_torture(name, self.target, self.local, f"tt{self.n}")
        else:
            data = request(rng, self.target, self.local, self.n)
        if rng.random() < 0.15 or not data:
            return data
        for _ in range(rng.randint(1, 3)):
            if data:
                data = rng.choice(MUTATIONS)(rng, data)
        return data[:65000]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def udp_drops(port: int) -> int:
    """The kernel's drop count for the UDP socket bound to 127.0.0.1:`port`."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted:
            return int(fields[-1])
    return 0


class Prober:
    """OPTIONS from its own socket; the seconds until a final answer, and its status."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.local = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.count = 0

    def probe(self) -> tuple[float | None, int | None]:
        self.count += 1
        call_id = f"probe-{self.count}"
        started = time.monotonic()
        message = options(self.server.target, self.local, call_id)
        deadline = started + PROBE_TIMEOUT
        resend, interval = started, 0.5  # RFC 3261 timer E: a lost request is sent again
        while (left := deadline - time.monotonic()) > 0:
            if time.monotonic() >= resend:
                self.sock.sendto(message, (self.server.host, self.server.port))
                resend, interval = resend + interval, interval * 2
            self.sock.settimeout(max(0.001, min(left, resend - time.monotonic())))
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue  # time to send it again, or the deadline
            match = re.match(rb"SIP/2\.0 (\d{3}) ", data)
            if match and call_id.encode() in data and int(match.group(1)) >= 200:
                return time.monotonic() - started, int(match.group(1))
        return None, None


def problems(log: str, limit: int = 10) -> tuple[int, int, list[str]]:
    """(ERROR lines, Traceback lines, the commonest ERROR/CRITICAL messages, numbers masked)."""
    errors = [ln for ln in log.splitlines() if " ERROR " in ln or " CRITICAL " in ln]
    tracebacks = log.count("Traceback")
    shapes = collections.Counter(re.sub(r"\d+", "N", ln.split(" ", 3)[-1])[:160] for ln in errors)
    return len(errors), tracebacks, [f"{n} x {s}" for s, n in shapes.most_common(limit)]


def traceback_blocks(log: str, limit: int) -> list[str]:
    """The first `limit` distinct tracebacks with the log line before each (to see the cause)."""
    lines, blocks, seen = log.splitlines(), [], set()
    for i, line in enumerate(lines):
        if not line.startswith("Traceback"):
            continue
        end = i + 1
        while end < len(lines) and (lines[end][:1].isspace() or lines[end][:1] in ("^", "~")):
            end += 1
        block = "\n".join(lines[max(0, i - 2) : end + 1])
        key = lines[end] if end < len(lines) else block
        if key not in seen:
            seen.add(key)
            blocks.append(block)
    return blocks[:limit]


def soak(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="soak-fuzz-"))
    with fresh_database("sqlite", tmp) as backend:
        config = write_config(tmp / "etc", backend)
        if not args.flood_limits:
            # The fuzzer and the probes share 127.0.0.1: with the per-address flood limit on,
            # the flood is answered 503 and then dropped unread (probes too), and the parser
            # and the transactions, which are what is fuzzed, see almost nothing.
            with (config / "sip.conf").open("a") as sip_conf:
                sip_conf.write("floodexempt=127.0.0.1\n")
        server = start_server(config)
        try:
            return run(server, args)
        finally:
            code = server.stop()
            print(f"server exit status on SIGINT: {code}")
            if code != 0:
                print("".join(server.output[-40:]))


def run(server: RunningServer, args: argparse.Namespace) -> int:
    pid = server.process.pid
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sender.setblocking(False)
    local = f"127.0.0.1:{sender.getsockname()[1]}"
    generator = Generator(args.seed, server.target, local)
    prober = Prober(server)
    first_latency, first_code = prober.probe()
    print(f"first probe: {first_code} in {first_latency}", flush=True)
    rss_before = rss_kb(pid)
    drops_before = udp_drops(server.port)
    answers: collections.Counter[str] = collections.Counter()
    probe_codes: collections.Counter[str] = collections.Counter()
    slowest = 0.0
    unanswered = 0
    rss_peak = rss_before
    rate = float(args.rate)
    sent = 0
    started = time.monotonic()
    window_start, window_sent = started, 0
    while sent < args.datagrams and time.monotonic() - started < args.duration:
        # Pace: send what the rate allows since the window began, then drain the answers.
        due = int((time.monotonic() - window_start) * rate) - window_sent
        for _ in range(min(max(due, 0), 500)):
            data = generator.next()
            try:
                sender.sendto(data, (server.host, server.port))
            except OSError as exc:  # EMSGSIZE and such: the datagram never left
                answers[f"send error {exc.errno}"] += 1
            sent += 1
            window_sent += 1
            if sent % args.probe_every == 0:
                latency, code = prober.probe()
                probe_codes[str(code)] += 1
                if latency is None:
                    unanswered += 1
                    print(f"{sent}: probe unanswered", flush=True)
                    if server.process.poll() is not None:
                        print("server died", flush=True)
                        break
                    rate = max(200.0, rate / 2)
                else:
                    slowest = max(slowest, latency)
                    if args.adaptive:  # slow answers: the machine does not take this rate
                        rate = (
                            max(200.0, rate * 0.8)
                            if latency > 0.5
                            else min(args.max_rate, rate * 1.05)
                        )
                window_start, window_sent = time.monotonic(), 0
                rss_peak = max(rss_peak, rss_kb(pid))
            if sent % 50_000 == 0:
                elapsed = time.monotonic() - started
                print(
                    f"{sent} sent, {sent / elapsed:.0f}/s (now {rate:.0f}/s), "
                    f"RSS {rss_kb(pid) // 1024} MB, drops {udp_drops(server.port) - drops_before}",
                    flush=True,
                )
            if sent >= args.datagrams or server.process.poll() is not None:
                break
        if server.process.poll() is not None:
            break
        while True:
            try:
                data = sender.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            match = re.match(rb"SIP/2\.0 (\d{3}) ", data)
            answers[match.group(1).decode() if match else "not a response"] += 1
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    alive = server.process.poll() is None
    drops = udp_drops(server.port) - drops_before
    rss_end = rss_kb(pid) if alive else 0
    print(f"settling {args.settle} s for the transactions to expire", flush=True)
    time.sleep(args.settle)
    rss_after = rss_kb(pid) if alive else 0
    after_latency, after_code = prober.probe() if alive else (None, None)
    errors, tracebacks, shapes = problems(server.log())
    probes = sum(probe_codes.values())
    print()
    print(
        "| datagrams sent | datagrams/s | kernel drops at the server | probes answered | "
        "probe statuses | slowest probe | RSS before / peak / end / after settle MB | "
        "server alive | OPTIONS after | ERROR lines | tracebacks |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {sent} | {sent / elapsed:.0f} | {drops} | {probes - unanswered} of "
        f"{probes} | {dict(probe_codes)} | {slowest * 1000:.0f} ms | "
        f"{rss_before / 1024:.0f} / {rss_peak / 1024:.0f} / {rss_end / 1024:.0f} / "
        f"{rss_after / 1024:.0f} | {'yes' if alive else 'NO'} | {after_code} | {errors} | "
        f"{tracebacks} |"
    )
    print(f"\nanswers by status: {dict(answers.most_common())}")
    print(f"wall {elapsed:.0f} s, seed {args.seed}")
    for shape in shapes:
        print(f"- {shape}")
    if args.show_tracebacks:
        for block in traceback_blocks(server.log(), args.show_tracebacks):
            print("\n" + block)
    ok = alive and unanswered == 0 and after_code == 200 and tracebacks == 0
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_fuzz", description=__doc__)
    parser.add_argument("--datagrams", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=4475)
    parser.add_argument("--rate", type=float, default=2000, help="datagrams/s to start with")
    parser.add_argument("--max-rate", type=float, default=20000)
    parser.add_argument(
        "--no-adaptive", dest="adaptive", action="store_false", help="keep --rate fixed"
    )
    parser.add_argument("--probe-every", type=int, default=1000)
    parser.add_argument(
        "--flood-limits",
        action="store_true",
        help="keep sip.conf's flood limits for 127.0.0.1 (default: exempt, so all is parsed)",
    )
    parser.add_argument(
        "--duration", type=float, default=float("inf"), help="stop sending after this many s"
    )
    parser.add_argument(
        "--settle", type=float, default=40.0, help="seconds to wait before the last RSS"
    )
    parser.add_argument(
        "--show-tracebacks",
        type=int,
        default=0,
        metavar="N",
        help="print the first N distinct tracebacks of the server's log, with the line before",
    )
    args = parser.parse_args(argv)
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
