"""The audio attachment: the stored audio converted to `attachfmt`, with `volgain` applied.

Asterisk attaches the recorded format `attachfmt` names (or the first format) and runs
`sox -v <volgain>` when volgain is not 0, so volgain is an amplitude FACTOR (2.0 doubles the
amplitude, +6 dB), not decibels; we apply it the same way, saturating like sox. Here the blob
holds only the stored format (fact sheet 1.4.1), so the other formats are made from it:
wav, wav49 and gsm by storage/audioformats.py, mp3, ogg (Vorbis) and opus (Opus in Ogg) by
pydub on ffmpeg. A conversion that fails leaves the mail with the stored audio as it is,
and the reason is logged.

The functions block (sox and ffmpeg subprocesses): the server runs them in worker processes
(voicemail/mail/converter.py), never on its event loop.
"""

from __future__ import annotations

import io
import logging
import warnings

from storage import audioformats

from .compose import Attachment
from .settings import MailSettings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

    from pydub import AudioSegment

log = logging.getLogger(__name__)

# Asterisk's add_email_attachment: "audio/x-<format>", "application/ogg" for ogg.
MIME_TYPES = {
    "wav": "audio/x-wav",
    "wav49": "audio/x-WAV",
    "gsm": "audio/x-gsm",
    "ulaw": "audio/x-ulaw",
    "alaw": "audio/x-alaw",
    "mp3": "audio/x-mp3",
    "ogg": "application/ogg",
    "opus": "audio/x-opus",
}
# ffmpeg muxer, codec and options per format pydub makes.
_FFMPEG = {
    "mp3": ("mp3", "libmp3lame", ["-b:a", "24k"]),
    "ogg": ("ogg", "libvorbis", ["-q:a", "4"]),
    "opus": ("opus", "libopus", ["-b:a", "24k"]),
}
_NO_GAIN = 0.001  # Asterisk: |volgain| <= .001 means none


def extension(fmt: str) -> str:
    """The file extension for an attachment format: wav49 is `WAV`, as Asterisk names it."""
    return fmt if fmt in _FFMPEG else audioformats.extension(fmt)


def attachment_name(msgnum: int, fmt: str) -> str:
    """msgNNNN.<ext>, NNNN the 0-based message number."""
    return f"msg{msgnum:04d}.{extension(fmt)}"


def conversion(stored_format: str, settings: MailSettings) -> tuple[str, float]:
    """(the attachment's format, the gain to apply: 0.0 for none). The stored format with no
    gain means the attachment is the blob itself, with nothing to convert."""
    target = settings.attachfmt or stored_format
    gain = settings.volgain if abs(settings.volgain) > _NO_GAIN else 0.0
    return target, gain


def converted_attachment(
    audio: bytes, stored_format: str, target: str, gain: float, msgnum: int
) -> tuple[Attachment, str]:
    """The attachment, and why the stored audio went out unconverted ("" when it did not).

    Plain values in and out, so that a worker process runs it (voicemail/mail/composer.py)
    and the server logs the problem in its own log."""
    if target == stored_format and not gain:
        return _attachment(audio, stored_format, msgnum), ""
    try:
        pcm = audioformats.decode(audio, stored_format)
        if gain:
            pcm = audioop.mul(pcm, 2, gain)
        data = convert(pcm, target)
    except Exception as exc:  # noqa: BLE001 - any failure: the stored audio still goes out
        problem = (
            f"attachment msg{msgnum:04d}: converting {stored_format} to {target}"
            f"{f' with volgain {gain:g}' if gain else ''} failed ({exc}); "
            f"attaching the stored {stored_format}"
        )
        return _attachment(audio, stored_format, msgnum), problem
    return _attachment(data, target, msgnum), ""


def convert(pcm: bytes, fmt: str) -> bytes:
    """8 kHz 16-bit mono PCM to an attachment format; raises on any failure."""
    if fmt in audioformats.FORMATS:
        return audioformats.encode(pcm, fmt)
    if fmt not in _FFMPEG:
        raise ValueError(f"unknown attachment format {fmt!r}")
    muxer, codec, parameters = _FFMPEG[fmt]
    segment = AudioSegment(
        data=pcm, sample_width=2, frame_rate=audioformats.SAMPLE_RATE, channels=1
    )
    buffer = io.BytesIO()
    segment.export(buffer, format=muxer, codec=codec, parameters=parameters)
    data = buffer.getvalue()
    if not data:
        raise RuntimeError(f"ffmpeg wrote no {fmt} data")
    return data


def _attachment(data: bytes, fmt: str, msgnum: int) -> Attachment:
    return Attachment(data, attachment_name(msgnum, fmt), MIME_TYPES[fmt])
