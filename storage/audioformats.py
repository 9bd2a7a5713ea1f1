"""The audio formats app_voicemail stores, named as in voicemail.conf's `format=`.

Asterisk records every listed format but ODBC storage keeps only the first one (fact sheet
1.4.1), so a row shared with Asterisk must hold exactly the bytes Asterisk's format module would
write: `wav` (8 kHz 16-bit PCM WAV, 44-byte header), `wav49` (Microsoft GSM 6.10 in WAV, stored
with the extension `WAV`), `gsm` (raw 33-byte GSM 06.10 frames), `ulaw` and `alaw` (raw G.711).

Inside the server audio is always 8 kHz 16-bit signed little-endian mono PCM ("slin"). G.711
uses the standard library's audioop; GSM goes through the `sox` program (no maintained GSM 06.10
codec exists on PyPI), one short subprocess per call over stdin/stdout. The functions block:
call them from a worker thread (asyncio.to_thread) in async code.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import warnings
import wave

with warnings.catch_warnings():
    # audioop is stdlib on 3.11/3.12 (deprecated); audioop-lts provides it from 3.13 on.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FORMATS = ("wav", "wav49", "gsm", "ulaw", "alaw")
SAMPLE_RATE = 8000

_EXTENSIONS = {"wav": "wav", "wav49": "WAV", "gsm": "gsm", "ulaw": "ulaw", "alaw": "alaw"}

GSM_FRAME_BYTES = 33  # one GSM 06.10 frame: 20 ms, 160 samples
GSM_FRAME_SAMPLES = 160
MSGSM_BLOCK_BYTES = 65  # Microsoft's packing of two GSM frames: 40 ms, 320 samples
MSGSM_BLOCK_SAMPLES = 320

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_GSM610 = 0x0031
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

# Asterisk's format_wav_gsm header: RIFF, fmt (20 bytes: tag 49, mono, 8000 Hz, 1625 bytes/s,
# block align 65, 0 bits per sample, 2 extra bytes = 320 samples per block), fact, data.
_WAV49_HEADER = struct.Struct("<4sI4s4sIHHIIHHHH4sII4sI")
_WAV49_HEADER_BYTES = 60

_SOX_TIMEOUT = 10.0  # seconds, plus a tenth of the audio's duration


class TranscodeError(RuntimeError):
    """The sox program is missing, failed or took too long."""


def extension(fmt: str) -> str:
    """The file extension Asterisk gives a format: `WAV` (upper case) for wav49."""
    _check_format(fmt)
    return _EXTENSIONS[fmt]


def stored_format(format_option: str) -> str:
    """The format ODBC storage keeps for voicemail.conf `format=wav49|gsm|wav`: the first one."""
    first = format_option.split("|", 1)[0].strip()
    if first.lower() == "wav49" or first == "WAV":
        first = "wav49"
    _check_format(first)
    return first


def encode(pcm: bytes, fmt: str) -> bytes:
    """8 kHz 16-bit mono PCM to a stored format (GSM pads the last frame with silence)."""
    _check_format(fmt)
    if len(pcm) % 2:
        raise ValueError("PCM must be 16-bit samples (an even number of bytes)")
    if fmt == "wav":
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(SAMPLE_RATE)
            writer.writeframes(pcm)
        return buffer.getvalue()
    if fmt == "ulaw":
        return audioop.lin2ulaw(pcm, 2)
    if fmt == "alaw":
        return audioop.lin2alaw(pcm, 2)
    seconds = len(pcm) / 2 / SAMPLE_RATE
    if fmt == "gsm":
        frames = _sox(_RAW_PCM, pcm, ["-t", "gsm"], seconds)
        return frames[: len(frames) - len(frames) % GSM_FRAME_BYTES]
    # wav49: sox writes the GSM blocks; the header is rebuilt the way Asterisk writes it.
    produced = _sox(_RAW_PCM, pcm, ["-t", "wav", "-e", "gsm-full-rate"], seconds)
    _, payload = _riff_fmt_and_data(produced)
    return _wav49_file(payload[: len(payload) - len(payload) % MSGSM_BLOCK_BYTES])


def decode(data: bytes, fmt: str) -> bytes:
    """A stored format to 8 kHz 16-bit mono PCM; ValueError if the data is not that format.

    A `wav` may be any PCM width (8, 16, 24 or 32 bit) and mono or stereo, but must be 8 kHz.
    A trailing partial GSM frame or block is ignored, as Asterisk's readers do.
    """
    _check_format(fmt)
    if fmt == "wav":
        return _decode_pcm_wav(data)
    if fmt == "ulaw":
        return audioop.ulaw2lin(data, 2)
    if fmt == "alaw":
        return audioop.alaw2lin(data, 2)
    if fmt == "gsm":
        frames = data[: len(data) - len(data) % GSM_FRAME_BYTES]
        if not frames:
            return b""
        seconds = len(frames) / GSM_FRAME_BYTES * GSM_FRAME_SAMPLES / SAMPLE_RATE
        return _sox(["-t", "gsm"], frames, _RAW_PCM, seconds)
    fmt_chunk, payload = _riff_fmt_and_data(data)
    tag = _format_tag(fmt_chunk)
    if tag != WAVE_FORMAT_GSM610:
        raise ValueError(f"not a wav49 (GSM 6.10) WAV: format tag {tag:#06x}, expected 0x0031")
    rate = struct.unpack_from("<I", fmt_chunk, 4)[0]
    if rate != SAMPLE_RATE:
        raise ValueError(f"wav49 is {rate} Hz; voicemail audio must be {SAMPLE_RATE} Hz")
    blocks = payload[: len(payload) - len(payload) % MSGSM_BLOCK_BYTES]
    if not blocks:
        return b""
    seconds = len(blocks) / MSGSM_BLOCK_BYTES * MSGSM_BLOCK_SAMPLES / SAMPLE_RATE
    # Hand sox a clean header: lengths written by a crashed or streaming writer may be wrong.
    return _sox(["-t", "wav"], _wav49_file(blocks), _RAW_PCM, seconds)


def detect_format(data: bytes) -> str | None:
    """Which stored format these bytes are: wav, wav49 or gsm; None when unknown.

    Raw G.711 has no header or signature, so ulaw and alaw are never detected.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            fmt_chunk, _ = _riff_fmt_and_data(data)
        except ValueError:
            return None
        tag = _format_tag(fmt_chunk)
        if tag == WAVE_FORMAT_PCM:
            return "wav"
        if tag == WAVE_FORMAT_GSM610:
            return "wav49"
        return None
    # Every GSM 06.10 frame starts with the 4-bit signature 0xD.
    if data and len(data) % GSM_FRAME_BYTES == 0:
        if all(byte >> 4 == 0xD for byte in data[::GSM_FRAME_BYTES]):
            return "gsm"
    return None


# --- helpers ---------------------------------------------------------------------------------

_RAW_PCM = ["-t", "raw", "-r", str(SAMPLE_RATE), "-e", "signed", "-b", "16", "-c", "1"]


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _sox(input_type: list[str], data: bytes, output_type: list[str], seconds: float) -> bytes:
    """Run sox once from stdin to stdout; the timeout grows with the audio's length."""
    program = shutil.which("sox")
    if program is None:
        raise TranscodeError("the sox program is needed for GSM audio: apt-get install sox")
    # -D: no dither, so the same input always gives the same bytes.
    command = [program, "-D", "-V1", *input_type, "-", *output_type, "-"]
    try:
        done = subprocess.run(
            command, input=data, capture_output=True, timeout=_SOX_TIMEOUT + seconds / 10
        )
    except subprocess.TimeoutExpired as exc:
        raise TranscodeError(f"sox took longer than {exc.timeout:.0f} s") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
        raise TranscodeError(f"sox failed: {message}")
    return done.stdout


def _wav49_file(blocks: bytes) -> bytes:
    """A WAV49 file as Asterisk's format_wav_gsm writes it, padded to an even length."""
    padded = len(blocks) + len(blocks) % 2
    header = _WAV49_HEADER.pack(
        b"RIFF",
        _WAV49_HEADER_BYTES - 8 + padded,
        b"WAVE",
        b"fmt ",
        20,
        WAVE_FORMAT_GSM610,
        1,
        SAMPLE_RATE,
        1625,
        MSGSM_BLOCK_BYTES,
        0,
        2,
        MSGSM_BLOCK_SAMPLES,
        b"fact",
        4,
        len(blocks) // MSGSM_BLOCK_BYTES * MSGSM_BLOCK_SAMPLES,
        b"data",
        padded,
    )
    return header + blocks + b"\0" * (padded - len(blocks))


def _riff_fmt_and_data(data: bytes) -> tuple[bytes, bytes]:
    """The `fmt ` chunk body and the audio of a RIFF WAVE file.

    A data chunk whose length runs past the end (or is 0 or 0xFFFFFFFF, as streaming writers
    leave it) is taken to the end of the file.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file (no RIFF/WAVE header)")
    fmt_chunk: bytes | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        size = struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk_id == b"data":
            if fmt_chunk is None:
                raise ValueError("WAV file has its data chunk before the fmt chunk")
            end = len(data) if size in (0, 0xFFFFFFFF) else min(len(data), body + size)
            return fmt_chunk, data[body:end]
        if chunk_id == b"fmt ":
            fmt_chunk = data[body : body + size]
            if len(fmt_chunk) < 16:
                raise ValueError("WAV fmt chunk is truncated")
        offset = body + size + size % 2
    raise ValueError("WAV file has no data chunk")


def _format_tag(fmt_chunk: bytes) -> int:
    """The format tag, looking through WAVE_FORMAT_EXTENSIBLE to its sub-format."""
    tag = struct.unpack_from("<H", fmt_chunk, 0)[0]
    if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt_chunk) >= 26:
        tag = struct.unpack_from("<H", fmt_chunk, 24)[0]  # first two bytes of the GUID
    return tag


def _decode_pcm_wav(data: bytes) -> bytes:
    fmt_chunk, payload = _riff_fmt_and_data(data)
    tag = _format_tag(fmt_chunk)
    channels, rate, _, _, bits = struct.unpack_from("<HIIHH", fmt_chunk, 2)
    if tag != WAVE_FORMAT_PCM:
        hint = " (that is wav49: GSM 6.10)" if tag == WAVE_FORMAT_GSM610 else ""
        raise ValueError(f"WAV format tag {tag:#06x}{hint} is not PCM; wav must be PCM")
    if rate != SAMPLE_RATE:
        raise ValueError(
            f"WAV is {rate} Hz; voicemail audio must be {SAMPLE_RATE} Hz (resample it first)"
        )
    width = (bits + 7) // 8
    if width not in (1, 2, 3, 4):
        raise ValueError(f"WAV samples of {bits} bits are not supported (8 to 32 bits are)")
    if channels not in (1, 2):
        raise ValueError(f"WAV has {channels} channels; only mono and stereo can be read")
    frame = width * channels
    pcm = payload[: len(payload) - len(payload) % frame]
    if width == 1:
        pcm = audioop.bias(pcm, 1, -128)  # 8-bit WAV samples are unsigned
    if channels == 2:
        pcm = audioop.tomono(pcm, width, 0.5, 0.5)
    return pcm if width == 2 else audioop.lin2lin(pcm, width, 2)
