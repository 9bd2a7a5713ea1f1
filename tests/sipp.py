"""sipp as the SIP peer of the end-to-end tests: scenario XML and a bounded runner.

Scenarios are built here from small pieces, because each test needs its own timings (the
caller must start talking after the greeting and the beep, whose length depends on the
prompt set in use).
"""

from __future__ import annotations

import itertools
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

# Start at a random offset so that two test runs on one machine rarely pick the same ports.
_PORTS = itertools.count(random.randrange(500))

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

    def check(self) -> None:
        assert self.returncode == 0, (
            f"sipp failed ({self.returncode}):\n{self.errors}\n{self.stdout[-3000:]}\n"
            f"{self.stderr[-2000:]}"
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
) -> SippResult:
    """Run one sipp UAC scenario against `target` (host:port), bounded in time."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.xml"
    path.write_text(xml)
    offset = next(_PORTS) % 500
    sip_port = 25060 + offset * 2
    media_port = 36000 + offset * 8
    cmd = [
        "sipp",
        target,
        "-sf",
        str(path),
        "-i",
        "127.0.0.1",
        "-p",
        str(sip_port),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(media_port),
        "-m",
        str(calls),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-trace_err",
        "-nostdin",
        "-cp",
        str(38000 + offset),
        "-max_recv_loops",
        "1000",
    ]
    if rate is not None:
        cmd += ["-r", str(rate)]
    if concurrency is not None:
        cmd += ["-l", str(concurrency)]
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30, check=False
    )
    errors = "".join(p.read_text(errors="replace") for p in workdir.glob(f"{name}_*_errors.log"))
    return SippResult(proc.returncode, proc.stdout, proc.stderr, errors)
