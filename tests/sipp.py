"""sipp as the SIP peer of the end-to-end tests: scenario XML and a bounded runner.

Scenarios are built here from small pieces, because each test needs its own timings (the
caller must start talking after the greeting and the beep, whose length depends on the
prompt set in use).
"""

from __future__ import annotations

import itertools
import os
import random
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape

# Each pytest-xdist worker has its own slice of ports (so that two workers never pick the
# same one), all below the kernel's ephemeral range (so that no socket bound to port 0, the
# server's own among them, takes one), above the server's RTP range (10000-20000) and
# below the media tests' (30000 up).
_SLOTS_PER_WORKER = 250
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 3
_PORTS = itertools.count(random.randrange(_SLOTS_PER_WORKER))


def _next_ports() -> tuple[int, int, int]:
    """(SIP, media, control) ports for one sipp run: 2, 8 and 1 ports a slot, no overlap."""
    slot = _WORKER * _SLOTS_PER_WORKER + next(_PORTS) % _SLOTS_PER_WORKER
    return 20100 + slot * 2, 22000 + slot * 8, 28100 + slot


SDP_OFFER = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP {formats}
{rtpmaps}a=ptime:20
a=sendrecv
"""

RTPMAPS = {
    0: "a=rtpmap:0 PCMU/8000\n",
    8: "a=rtpmap:8 PCMA/8000\n",
    101: "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16\n",
    3: "a=rtpmap:3 GSM/8000\n",
    18: "a=rtpmap:18 G729/8000\n",
}

HEADERS = """Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}
From: "Test Caller" <sip:5551234@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{user}@[remote_ip]:[remote_port]>{to_tag}
Call-ID: [call_id]
CSeq: {cseq}
Contact: <sip:5551234@[local_ip]:[local_port]>
Max-Forwards: 70
"""

INVITE_BRANCH = "z9hG4bK-inv-[pid]-[call_number]"


def offer(formats: list[int]) -> str:
    return SDP_OFFER.format(
        formats=" ".join(str(f) for f in formats),
        rtpmaps="".join(RTPMAPS[f] for f in formats),
    )


def _message(
    start_line: str,
    user: str,
    cseq: str,
    branch: str,
    body: str = "",
    to_tag: bool = False,
    extra_headers: tuple[str, ...] = (),
) -> str:
    text = start_line + "\n"
    text += HEADERS.format(
        branch=branch, user=user, cseq=cseq, to_tag="[peer_tag_param]" if to_tag else ""
    )
    text += "".join(header + "\n" for header in extra_headers)
    if body:
        text += "Content-Type: application/sdp\nContent-Length: [len]\n\n" + body
    else:
        text += "Content-Length: 0\n\n"
    return text


def send(text: str, retrans: int | None = 500, extra: str = "") -> str:
    attr = f' retrans="{retrans}"' if retrans else ""
    return f"<send{attr}{extra}><![CDATA[\n{text}\n]]></send>\n"


def send_once(step: str) -> str:
    """The same message without sipp's own retransmissions."""
    return step.replace(' retrans="500"', "", 1)


def invite(user: str, formats: list[int], extra_headers: tuple[str, ...] = ()) -> str:
    return send(
        _message(
            f"INVITE sip:{user}@[remote_ip]:[remote_port] SIP/2.0",
            user,
            "1 INVITE",
            INVITE_BRANCH,
            offer(formats),
            extra_headers=extra_headers,
        )
    )


def ack(user: str) -> str:
    return send(
        _message(
            f"ACK sip:{user}@[remote_ip]:[remote_port] SIP/2.0",
            user,
            "1 ACK",
            "[branch]",
            to_tag=True,
        ),
        retrans=None,
    )


def ack_non2xx(user: str) -> str:
    """ACK for a non-2xx final answer: same branch as the INVITE (RFC 3261 17.1.1.3)."""
    return send(
        _message(
            f"ACK sip:{user}@[remote_ip]:[remote_port] SIP/2.0",
            user,
            "1 ACK",
            INVITE_BRANCH,
            to_tag=True,
        ),
        retrans=None,
    )


def bye(user: str) -> str:
    return send(
        _message(
            f"BYE sip:{user}@[remote_ip]:[remote_port] SIP/2.0",
            user,
            "2 BYE",
            "[branch]",
            to_tag=True,
        )
    )


def cancel(user: str) -> str:
    return send(
        _message(
            f"CANCEL sip:{user}@[remote_ip]:[remote_port] SIP/2.0",
            user,
            "1 CANCEL",
            INVITE_BRANCH,
        )
    )


def recv(response: int, optional: bool = False, extra: str = "") -> str:
    opt = ' optional="true"' if optional else ""
    return f'<recv response="{response}"{opt}{extra}/>\n'


def recv_request(method: str) -> str:
    return f'<recv request="{method}"/>\n'


def answer_request() -> str:
    """200 OK to a request the server sent (its BYE)."""
    return send(
        """SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:5551234@[local_ip]:[local_port]>
Content-Length: 0
""",
        retrans=None,
    )


def pause(ms: int) -> str:
    return f'<pause milliseconds="{int(ms)}"/>\n'


def play_pcap(path: Path) -> str:
    return f'<nop><action><exec play_pcap_audio="{escape(str(path))}"/></action></nop>\n'


def scenario(name: str, *steps: str) -> str:
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        f'<scenario name="{escape(name)}">\n' + "".join(steps) + "</scenario>\n"
    )


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    errors: str
    messages: str = ""  # the -trace_msg log, when asked for

    def check(self) -> None:
        assert self.returncode == 0, (
            f"sipp failed ({self.returncode}):\n{self.errors}\n{self.stdout[-3000:]}\n"
            f"{self.stderr[-2000:]}"
        )


def sipp_command(
    target: str,
    scenario_path: Path,
    *,
    port: int,
    media_port: int,
    control_port: int,
    calls: int = 1,
    timeout: float = 60,
    trace_msg: bool = False,
    out_of_call_path: Path | None = None,
    rate: int | None = None,
    concurrency: int | None = None,
) -> list[str]:
    """The one sipp command line of the tests: a UAC on 127.0.0.1, bounded by -timeout.

    Error and message traces go to sipp's default files in its working directory,
    `<scenario>_<pid>_errors.log` and `<scenario>_<pid>_messages.log`.
    """
    cmd = [
        "sipp",
        target,
        "-sf",
        str(scenario_path),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(media_port),
        "-cp",
        str(control_port),
        "-m",
        str(calls),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-trace_err",
        "-nostdin",
        "-max_recv_loops",
        "1000",
    ]
    if trace_msg:
        cmd.append("-trace_msg")
    if out_of_call_path is not None:
        cmd += ["-oocsf", str(out_of_call_path)]
    if rate is not None:
        cmd += ["-r", str(rate)]
    if concurrency is not None:
        cmd += ["-l", str(concurrency)]
    return cmd


def _write_scenarios(
    workdir: Path, name: str, xml: str, out_of_call: str | None
) -> tuple[Path, Path | None]:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.xml"
    path.write_text(xml)
    ooc_path = None
    if out_of_call is not None:
        ooc_path = workdir / f"{name}_out_of_call.xml"
        ooc_path.write_text(out_of_call)
    return path, ooc_path


def _read_logs(workdir: Path, name: str, kind: str) -> str:
    return "".join(
        p.read_bytes().decode("utf-8", "replace")
        for p in sorted(workdir.glob(f"{name}_*_{kind}.log"))
    )


def run_sipp(
    workdir: Path,
    xml: str,
    target: str,
    *,
    calls: int = 1,
    rate: int | None = None,
    concurrency: int | None = None,
    timeout: float = 60,
    name: str = "scenario",
    port: int | None = None,
    trace_msg: bool = False,
    out_of_call: str | None = None,
) -> SippResult:
    """Run one sipp UAC scenario against `target` (host:port), bounded in time.

    `port` fixes sipp's SIP port (a phone's registered address); else one is picked.
    `trace_msg` keeps every message in `SippResult.messages`; `out_of_call` is a scenario
    for requests outside the calls (an OPTIONS or NOTIFY from the server).
    """
    path, ooc_path = _write_scenarios(workdir, name, xml, out_of_call)
    if trace_msg:
        for stale in workdir.glob(f"{name}_*_messages.log"):
            stale.unlink()  # an earlier run of the same scenario name
    for _attempt in range(3):
        sip_port, media_port, control_port = _next_ports()
        cmd = sipp_command(
            target,
            path,
            port=port if port is not None else sip_port,
            media_port=media_port,
            control_port=control_port,
            calls=calls,
            timeout=timeout,
            trace_msg=trace_msg,
            out_of_call_path=ooc_path,
            rate=rate,
            concurrency=concurrency,
        )
        proc = subprocess.run(
            cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30, check=False
        )
        # sipp stops before its first message when a port is taken (by a process outside
        # this test run): only then is running it again on other ports safe.
        output = proc.stdout + proc.stderr
        if not re.search(r"Unable to bind .*errno = 98", output) or port is not None:
            break
    return SippResult(
        proc.returncode,
        proc.stdout,
        proc.stderr,
        _read_logs(workdir, name, "errors"),
        _read_logs(workdir, name, "messages") if trace_msg else "",
    )


# -- a sipp in the background (a phone waiting for NOTIFYs) --------------------------------


@dataclass
class BackgroundSipp:
    process: subprocess.Popen[str]
    workdir: Path
    name: str
    port: int

    def wait(self, timeout: float) -> SippResult:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
        errors = _read_logs(self.workdir, self.name, "errors")
        return SippResult(self.process.returncode, stdout, stderr, errors)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()

    def received(self) -> list[tuple[float, str]]:
        """The messages sipp received so far, with the time it logged for each."""
        return received_messages(_read_logs(self.workdir, self.name, "messages"))


def start_sipp(
    workdir: Path,
    xml: str,
    target: str,
    *,
    name: str,
    calls: int = 1,
    timeout: int = 30,
    out_of_call: str | None = None,
) -> BackgroundSipp:
    """Start sipp on a port of its own (for a Contact to point at) and do not wait for it."""
    from .server import free_port

    path, ooc_path = _write_scenarios(workdir, name, xml, out_of_call)
    port = free_port()
    cmd = sipp_command(
        target,
        path,
        port=port,
        media_port=free_port(),
        control_port=free_port(),
        calls=calls,
        timeout=timeout,
        trace_msg=True,
        out_of_call_path=ooc_path,
    )
    process = subprocess.Popen(
        cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return BackgroundSipp(process, workdir, name, port)


# -- sipp's -trace_msg log -----------------------------------------------------------------


def received_messages(log: str) -> list[tuple[float, str]]:
    """The messages sipp logged as received, CRLFs kept, with the time it logged each."""
    found = []
    for match in re.finditer(
        r"^-{10,} ([\d-]+ [\d:.]+)\n\S+ message received \[\d+\] bytes :\n\n"
        r"(.*?)\n(?=-{10,} |\Z)",
        log,
        re.S | re.M,
    ):
        when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        found.append((when, match.group(2)))
    return found


def traced_messages(log: str) -> list[str]:
    """Every SIP message of a -trace_msg log, sent and received, in order (LF line ends)."""
    messages = []
    for chunk in re.split(r"^-{10,}.*$", log, flags=re.MULTILINE):
        lines = chunk.strip("\r\n").splitlines()
        while lines and not re.match(r"(SIP/2\.0 |[A-Z]+ \S+ SIP/2\.0)", lines[0]):
            lines = lines[1:]
        if lines:
            messages.append("\n".join(lines))
    return messages
