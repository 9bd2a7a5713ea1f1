"""End to end: the datagrams bench/soak_fuzz.py found breaking the running server.

A Via whose port no socket has (a flipped byte made `127.0.0.1:559199999999999999999`) used
to raise out of the UDP send: tracebacks in the log ("Unhandled exception in event loop",
"Task exception was never retrieved", "error in UDP SIP timer") and exit status 1 on stop.
Now the answer goes to the packet's source, the log stays clean and the server stops with 0.
"""

from __future__ import annotations

import pytest

from .server import RunningServer
from .test_hostile_e2e import RawUdp, assert_options_answered, invite_to_nobody
from .test_hostile_e2e import server as server  # noqa: F401 - the fixture

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

BAD_PORT = "559199999999999999999"


def test_via_port_out_of_range_is_answered_at_the_source_and_logs_no_traceback(
    server: RunningServer,  # noqa: F811
) -> None:
    udp = RawUdp(server)
    try:
        host = udp.local.split(":")[0]
        for index, port in enumerate((BAD_PORT, "65536", "99999")):
            via = f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK-badport{index}"
            options = (
                f"OPTIONS sip:{server.target} SIP/2.0\r\nVia: {via}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:fuzz@{udp.local}>;tag=f{index}\r\n"
                f"To: <sip:{server.target}>\r\nCall-ID: badport-o{index}\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            udp.send(options)
            assert udp.final_for(f"badport-o{index}", 5) == 200, server.log()[-3000:]
            # An INVITE: its 100 is sent at once, its 404 by the call's task.
            invite = invite_to_nobody(server.target, udp.local, f"badport-i{index}")
            invite = invite.replace(
                f"Via: SIP/2.0/UDP {udp.local};rport;".encode(),
                f"Via: SIP/2.0/UDP {host}:{port};".encode(),
            )
            assert f"{host}:{port}".encode() in invite
            udp.send(invite)
            assert udp.final_for(f"badport-i{index}", 5) == 404, server.log()[-3000:]
    finally:
        udp.close()
    assert_options_answered(server, "badport-after")
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    assert "exception was never retrieved" not in log, log[-4000:]
    assert server.stop() == 0, log[-4000:]
