"""Reordered and lost RTP still gives a recording as long as the audio that was sent."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from . import sipp
from .audio import pcap_pcm, wav_pcm
from .dbbackends import Backend
from .server import start_server, write_config
from .test_deposit_e2e import DATA, assert_recording_is, deposit_scenario, rows

pytestmark = pytest.mark.timeout(120)


def pcap_records(path: Path) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    data = path.read_bytes()
    header, offset, records = data[:24], 24, []
    while offset < len(data):
        record_header = data[offset : offset + 16]
        length = struct.unpack("<IIII", record_header)[2]
        records.append((record_header, data[offset + 16 : offset + 16 + length]))
        offset += 16 + length
    return header, records


def disordered_copy(source: Path, target: Path, swaps: list[int], losses: list[int]) -> None:
    """The same stream with packets i and i+1 exchanged, and some packets never sent;
    capture times stay where they were, so the swapped packets arrive out of order."""
    header, records = pcap_records(source)
    frames = [frame for _header, frame in records]
    for index in swaps:
        frames[index], frames[index + 1] = frames[index + 1], frames[index]
    out = bytearray(header)
    for index, ((record_header, _frame), frame) in enumerate(zip(records, frames, strict=True)):
        if index not in losses:
            out += record_header + frame
    target.write_bytes(bytes(out))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_reordered_and_lost_packets_keep_the_recording_length(
    backend: Backend, tmp_path: Path
) -> None:
    original = DATA / "signal5s_pcmu.pcap"
    sent = tmp_path / "disordered.pcap"
    disordered_copy(original, sent, swaps=[30, 90, 170, 230], losses=[60, 140])
    server = start_server(write_config(tmp_path / "etc", backend))
    try:
        xml = deposit_scenario(
            "1000", sent, [0, 101], [sipp.pause(5300), sipp.bye("1000"), sipp.recv(200)]
        )
        sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
        stored = rows(backend)
        assert len(stored) == 1, server.log()
        # 5 s were sent, two packets of them lost on the way: still 5 s, in order.
        assert_recording_is(stored[0], original, 5.0)
        # The swapped packets are back in their places, sample for sample; lost ones are
        # silence of their length.
        _rate, _width, _channels, recorded = wav_pcm(bytes(stored[0]["recording"]))
        _pt, expected = pcap_pcm(original)
        frame = 320
        for index in (30, 31, 90, 91, 170, 171, 230, 231):
            part = slice(index * frame, (index + 1) * frame)
            assert recorded[part] == expected[part], f"packet {index} out of place"
        for index in (60, 140):
            assert recorded[index * frame : (index + 1) * frame] == b"\x00" * frame
    finally:
        assert server.stop() == 0, server.log()
