"""MWI at scale: 10 000 registered phones watching 10 000 mailboxes on 2 servers.

Run from the repository root: ``.venv/bin/python -m bench.mwi_scale`` (PostgreSQL).

Two `voicemail serve` processes, A and B, share a fresh PostgreSQL database and the same
sip.conf: `--phones` peers (default 10 000) `pNNNNN`, each with a secret and `mailbox=NNNNN`,
so each phone watches its own mailbox. Half the phones register with A and half with B, at
`--rate` REGISTERs a second in all, answering the digest challenge (the phones are this
process: one thread, `--sockets` UDP sockets on 127.0.0.1 shared by the phones, as phones
behind one NAT share an address; sip.conf `floodexempt=127.0.0.1` so that the flood limit
does not take 10 000 phones on one address for a scanner). Every NOTIFY is answered 200 and
recorded. chan_sip's model: a registered peer with `mailbox=` gets unsolicited NOTIFYs, one on
REGISTER and one when its counts change.

Then, with every phone registered:
1. Idle: after `--settle` seconds, both servers' CPU (utime + stime, all threads, from
   /proc) and this database's PostgreSQL backends' CPU over `--idle` seconds; no NOTIFY is
   expected meanwhile.
2. Deposits: `--deposits` messages stored one by one into the mailboxes of random phones, by
   this process as a third server would (a MessageStore whose on_change is the change log's
   hook, as `voicemail serve` does in every folder write's transaction, the same as
   bench.mwi_propagation), alternately to phones on A and on B. Per deposit: from the
   commit to the NOTIFY at the phone, whose `Voice-Message:` must carry the new count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.mwi_propagation import bench_deposit, committing_store, percentile
from bench.procstats import CLK_TCK, cpu_ticks, postgres_backend_pids, proc_status_kb
from storage.odbc import OdbcPool
from tests.dbbackends import Backend, fresh_database
from tests.server import RunningServer, start_server, write_config
from tests.sipua import (
    SipParseError,
    build,
    digest_authorization,
    new_branch,
    new_token,
    parse,
    parse_challenge,
    response_to,
)

PASSWORD = "bench-mwi-secret"
FIRST_MAILBOX = 20000
EXPIRES = 3600  # the server's maxexpiry: no phone refreshes during a run
RETRANSMIT = 1.0
NOTIFY_WAIT = 10.0  # a NOTIFY later than this is a failure, not a sample


def peers_conf(mailboxes: list[int]) -> str:
    return "".join(
        f"\n[p{box}]\ntype=friend\nhost=dynamic\nsecret={PASSWORD}\nmailbox={box}@default\n"
        "context=default\n"
        for box in mailboxes
    )


@dataclass
class Phone:
    name: str
    server: tuple[str, int]
    sock: socket.socket
    call_id: str = field(default_factory=lambda: new_token("reg-"))
    tag: str = field(default_factory=lambda: new_token())
    cseq: int = 0
    authorization: str = ""
    sent_at: float = 0.0
    tries: int = 0
    registered_at: float | None = None
    last_request: bytes = b""


class Phones(threading.Thread):
    """The phones' side: REGISTER with the digest answer, 200 to every NOTIFY."""

    def __init__(self, assignment: dict[str, tuple[str, int]], sockets: int, rate: float) -> None:
        super().__init__(daemon=True, name="phones")
        self.rate = rate
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        for _ in range(sockets):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.sockets.append(sock)
        self.phones = {
            name: Phone(name, server, self.sockets[i % sockets])
            for i, (name, server) in enumerate(assignment.items())
        }
        self.by_call_id = {phone.call_id: phone for phone in self.phones.values()}
        self.notifies: list[tuple[float, str, str]] = []  # (arrival, phone, Voice-Message)
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def registered(self) -> int:
        return sum(1 for p in self.phones.values() if p.registered_at is not None)

    def notifies_of(self, name: str) -> list[tuple[float, str]]:
        with self.lock:
            return [(when, counts) for when, who, counts in self.notifies if who == name]

    def _register(self, phone: Phone, now: float) -> None:
        phone.cseq += 1
        host, port = phone.server
        local = phone.sock.getsockname()
        headers = [
            ("Via", f"SIP/2.0/UDP {local[0]}:{local[1]};branch={new_branch()};rport"),
            ("From", f"<sip:{phone.name}@{host}:{port}>;tag={phone.tag}"),
            ("To", f"<sip:{phone.name}@{host}:{port}>"),
            ("Call-ID", phone.call_id),
            ("CSeq", f"{phone.cseq} REGISTER"),
            ("Contact", f"<sip:{phone.name}@{local[0]}:{local[1]}>"),
            ("Max-Forwards", "70"),
            ("Expires", str(EXPIRES)),
        ]
        if phone.authorization:
            headers.append(("Authorization", phone.authorization))
        phone.last_request = build(f"REGISTER sip:{host}:{port} SIP/2.0", headers)
        phone.sent_at, phone.tries = now, 0
        phone.sock.sendto(phone.last_request, phone.server)

    def run(self) -> None:
        waiting = list(self.phones.values())
        waiting.reverse()
        started = time.monotonic()
        while not self.stopping.is_set():
            now = time.monotonic()
            due = int((now - started) * self.rate) + 1
            while waiting and len(self.phones) - len(waiting) < due:
                self._register(waiting.pop(), now)
            for key, _ in self.selector.select(0.01):
                self._read(key.fileobj)  # type: ignore[arg-type]
            self._retransmit(now)

    def _retransmit(self, now: float) -> None:
        for phone in self.phones.values():
            if phone.registered_at is None and phone.sent_at and now - phone.sent_at > RETRANSMIT:
                if phone.tries >= 5:
                    self.failures.append(f"{phone.name}: no answer to REGISTER")
                    phone.sent_at = 0.0
                    continue
                phone.tries += 1
                phone.sent_at = now
                phone.sock.sendto(phone.last_request, phone.server)

    def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                data, source = sock.recvfrom(65535)
            except BlockingIOError:
                return
            arrived = time.time()
            try:
                message = parse(data)
            except (SipParseError, ValueError) as exc:
                self.failures.append(f"unparsable datagram from {source}: {exc}")
                continue
            if message.is_response:
                self._response(message)
            elif message.method == "NOTIFY":
                self._notify(message, arrived)
                sock.sendto(response_to(message, 200, "OK", None), source)
            else:
                sock.sendto(response_to(message, 501, "Not Implemented", None), source)

    def _response(self, message) -> None:  # noqa: ANN001 - tests.sipua.SipMessage
        phone = self.by_call_id.get(message.header("Call-ID") or "")
        if phone is None or message.cseq != (phone.cseq, "REGISTER"):
            return
        if message.status == 401 and not phone.authorization:
            challenge = parse_challenge(message.header("WWW-Authenticate") or "")
            host, port = phone.server
            uri = f"sip:{host}:{port}"
            phone.authorization = digest_authorization(
                challenge, "REGISTER", uri, phone.name, PASSWORD
            )
            self._register(phone, time.monotonic())
        elif message.status == 200:
            phone.registered_at = time.monotonic()
            phone.sent_at = 0.0
        elif message.status >= 300:
            self.failures.append(f"{phone.name}: REGISTER answered {message.start_line}")
            phone.sent_at = 0.0

    def _notify(self, message, arrived: float) -> None:  # noqa: ANN001
        user = message.start_line.split()[1].partition(":")[2].partition("@")[0]
        counts = ""
        for line in message.body.decode("ascii", "replace").splitlines():
            if line.lower().startswith("voice-message:"):
                counts = line.partition(":")[2].strip()
        with self.lock:
            self.notifies.append((arrived, user, counts))


@dataclass
class Result:
    phones: int
    registered: int
    registration_seconds: float
    notifies_at_registration: int
    idle_seconds: float
    idle_cpu_percent_a: float
    idle_cpu_percent_b: float
    idle_cpu_percent_postgres: float
    notifies_while_idle: int
    deposit_ms_to_a: list[float]
    deposit_ms_to_b: list[float]
    rss_mb_a: float
    rss_mb_b: float
    failures: list[str]
    general: str


def ticks_of(pids: list[int]) -> dict[int, int]:
    return {pid: t for pid in pids if (t := cpu_ticks(pid)) is not None}


def rss_mb(pid: int) -> float:
    return (proc_status_kb(pid, "VmRSS") or 0) / 1024


def start_servers(backend: Backend, workdir: Path, boxes: list[int], general: str):  # noqa: ANN201
    servers: list[RunningServer] = []
    for name in ("a", "b"):
        config = write_config(workdir / name, backend, general=general, mailboxes="")
        sip_conf = config / "sip.conf"
        sip_conf.write_text(sip_conf.read_text() + "floodexempt=127.0.0.1\n" + peers_conf(boxes))
        servers.append(start_server(config, timeout=120))
    return servers


async def deposits(
    backend: Backend, phones: Phones, on_a: list[str], on_b: list[str], count: int
) -> tuple[list[float], list[float]]:
    pool = OdbcPool(backend.connection_class(name="bench"), retry_timeout=10)
    await pool.start()
    store, committed = committing_store(pool)
    messages: dict[str, int] = {}
    to_a: list[float] = []
    to_b: list[float] = []
    try:
        for n in range(count):
            await asyncio.sleep(random.uniform(0.1, 0.4))
            name = random.choice(on_a if n % 2 == 0 else on_b)
            before = len(phones.notifies_of(name))
            await bench_deposit(store, name[1:])
            messages[name] = messages.get(name, 0) + 1
            deadline = time.monotonic() + NOTIFY_WAIT
            while len(got := phones.notifies_of(name)) <= before:
                if time.monotonic() > deadline:
                    phones.failures.append(f"{name}: no NOTIFY within {NOTIFY_WAIT} s")
                    break
                await asyncio.sleep(0.002)
            else:
                arrived, counts = got[before]
                if not counts.startswith(f"{messages[name]}/"):
                    phones.failures.append(f"{name}: NOTIFY says {counts!r}")
                (to_a if n % 2 == 0 else to_b).append(1000 * (arrived - committed[-1]))
    finally:
        await pool.close()
    return to_a, to_b


def run(args: argparse.Namespace, workdir: Path) -> Result:
    boxes = list(range(FIRST_MAILBOX, FIRST_MAILBOX + args.phones))
    with fresh_database("postgresql", workdir) as backend:
        servers = start_servers(backend, workdir, boxes, args.general.replace("\\n", "\n"))
        phones: Phones | None = None
        try:
            a, b = servers
            half = args.phones // 2
            names = [f"p{box}" for box in boxes]
            assignment = {n: (a.host, a.port) for n in names[:half]}
            assignment |= {n: (b.host, b.port) for n in names[half:]}
            phones = Phones(assignment, args.sockets, args.rate)
            started = time.monotonic()
            phones.start()
            deadline = started + args.phones / args.rate + 60
            while phones.registered() < args.phones and time.monotonic() < deadline:
                if len(phones.failures) > 100:
                    break
                time.sleep(0.2)
            registration = time.monotonic() - started
            time.sleep(args.settle)
            at_registration = len(phones.notifies)
            pids = postgres_backend_pids(backend.user)
            first = ticks_of([a.process.pid, b.process.pid, *pids])
            t0 = time.monotonic()
            time.sleep(args.idle)
            last = ticks_of([a.process.pid, b.process.pid, *pids])
            elapsed = time.monotonic() - t0

            def percent(pid_list: list[int]) -> float:
                ticks = sum(last[p] - first[p] for p in pid_list if p in first and p in last)
                return round(100 * ticks / CLK_TCK / elapsed, 2)

            idle_notifies = len(phones.notifies) - at_registration
            to_a, to_b = asyncio.run(
                deposits(backend, phones, names[:half], names[half:], args.deposits)
            )
            return Result(
                phones=args.phones,
                registered=phones.registered(),
                registration_seconds=round(registration, 1),
                notifies_at_registration=at_registration,
                idle_seconds=round(elapsed, 1),
                idle_cpu_percent_a=percent([a.process.pid]),
                idle_cpu_percent_b=percent([b.process.pid]),
                idle_cpu_percent_postgres=percent(pids),
                notifies_while_idle=idle_notifies,
                deposit_ms_to_a=[round(ms, 1) for ms in to_a],
                deposit_ms_to_b=[round(ms, 1) for ms in to_b],
                rss_mb_a=round(rss_mb(a.process.pid), 1),
                rss_mb_b=round(rss_mb(b.process.pid), 1),
                failures=phones.failures[:20],
                general=args.general,
            )
        finally:
            if phones is not None:
                phones.stopping.set()
                phones.join(5)
            for server in servers:
                server.stop()


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {percentile(values, 0.95):.1f} / {max(values):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=500, help="REGISTERs a second, in all")
    parser.add_argument("--sockets", type=int, default=50, help="UDP sockets the phones share")
    parser.add_argument(
        "--settle",
        type=float,
        default=40,
        help="after the last REGISTER: their transactions end (Timer J, 32 s)",
    )
    parser.add_argument("--idle", type=float, default=60)
    parser.add_argument("--deposits", type=int, default=40)
    parser.add_argument("--general", default="", help="lines added to voicemail.conf [general]")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-mwi-scale-") as folder:
        result = run(args, Path(folder))
    text = json.dumps(asdict(result), indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    print(
        "\n| phones | registered in s | idle CPU A / B / PostgreSQL % | NOTIFYs while idle "
        "| commit->NOTIFY ms median / p95 / max, phones on A | on B | RSS MB A / B |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {result.phones} ({result.registered} registered) | {result.registration_seconds} "
        f"| {result.idle_cpu_percent_a} / {result.idle_cpu_percent_b} / "
        f"{result.idle_cpu_percent_postgres} | {result.notifies_while_idle} "
        f"| {summary(result.deposit_ms_to_a)} | {summary(result.deposit_ms_to_b)} "
        f"| {result.rss_mb_a} / {result.rss_mb_b} |"
    )
    ok = result.registered == result.phones and not result.failures
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
