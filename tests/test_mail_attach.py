"""The audio attachment: converted from the stored format with pydub/ffmpeg (or sox), sent
through a real aiosmtpd server, decoded back and checked for length, tone and level."""

from __future__ import annotations

import asyncio
import email
import io
import math
import warnings
from email import policy

import numpy as np
import pytest

from storage import audioformats
from voicemail.mail.attach import attachment_name, conversion, converted_attachment
from voicemail.mail.compose import MessageInfo, Recipient, build_email
from voicemail.mail.send import SENT, send
from voicemail.mail.settings import MailSettings

from . import mail_server
from .mail_server import Handler

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # pydub imports audioop
    from pydub import AudioSegment

pytestmark = pytest.mark.timeout(120)

smtp_server = pytest.fixture(mail_server.smtp_servers)

RATE = 8000
SECONDS = 2.5
TONE = 440.0
# One codec frame at 8 kHz: MP3 (MPEG-2.5 layer III) 576 samples, Vorbis long block 2048/2,
# Opus 20 ms; GSM 20 ms.
FRAME = {"wav": 1, "wav49": 320, "gsm": 160, "mp3": 576, "ogg": 1024, "opus": 160}
FFMPEG_NAME = {"mp3": "mp3", "ogg": "ogg", "opus": "ogg", "wav": "wav", "wav49": "wav"}


def make_attachment(stored: bytes, fmt: str, settings: MailSettings, msgnum: int):
    """The attachment the mail worker makes for a message stored as `stored` in `fmt`."""
    attachment, problem = converted_attachment(stored, fmt, *conversion(fmt, settings), msgnum)
    assert problem == ""
    return attachment


def tone_pcm(seconds: float = SECONDS, amplitude: int = 6000) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * math.pi * TONE * t)).astype("<i2").tobytes()


def decode(data: bytes, fmt: str) -> np.ndarray:
    """The attachment as 8 kHz samples, decoded by ffmpeg (or sox for gsm)."""
    if fmt == "gsm":
        pcm = audioformats.decode(data, "gsm")
    else:
        segment = AudioSegment.from_file(io.BytesIO(data), format=FFMPEG_NAME[fmt])
        segment = segment.set_channels(1).set_sample_width(2).set_frame_rate(RATE)
        pcm = segment.raw_data
    return np.frombuffer(pcm, dtype="<i2").astype(float)


def peak_frequency(samples: np.ndarray) -> float:
    middle = samples[len(samples) // 4 : 3 * len(samples) // 4]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    return float(np.argmax(spectrum) * RATE / len(middle))


def rms(samples: np.ndarray) -> float:
    middle = samples[len(samples) // 4 : 3 * len(samples) // 4]
    return float(np.sqrt(np.mean(middle**2)))


def correlation(samples: np.ndarray, reference: np.ndarray) -> float:
    """Best normalised correlation of the middle of `samples` with the reference tone."""
    part = samples[RATE // 2 : RATE // 2 + RATE // 2]
    best = 0.0
    for lag in range(-400, 401):
        ref = reference[RATE // 2 + lag : RATE // 2 + lag + len(part)]
        value = float(np.dot(part, ref) / (np.linalg.norm(part) * np.linalg.norm(ref) + 1e-9))
        best = max(best, value)
    return best


@pytest.mark.parametrize("fmt", ["wav", "mp3", "ogg", "opus", "wav49", "gsm"])
def test_attachment_converted_to_attachfmt_keeps_length_and_tone(fmt):
    stored = audioformats.encode(tone_pcm(), "wav")
    settings = MailSettings.from_general({}, {"attachfmt": fmt})
    attachment = make_attachment(stored, "wav", settings, msgnum=7)
    assert attachment.filename == f"msg0007.{'WAV' if fmt == 'wav49' else fmt}"
    samples = decode(attachment.data, fmt)
    expected = int(SECONDS * RATE)
    assert abs(len(samples) - expected) <= FRAME[fmt], (len(samples), expected)
    assert abs(peak_frequency(samples) - TONE) < 5
    reference = np.frombuffer(tone_pcm(SECONDS + 1), dtype="<i2").astype(float)
    assert correlation(samples, reference) > 0.9


@pytest.mark.parametrize("fmt", ["wav", "mp3", "ogg"])
def test_attachment_over_smtp_decodes_to_the_recording(fmt, smtp_server):
    handler = Handler()
    port = smtp_server(handler)
    general = {"smtphost": "127.0.0.1", "smtpport": str(port), "smtptimeout": "10"}
    settings = MailSettings.from_general(general, {"attachfmt": fmt})
    stored = audioformats.encode(tone_pcm(), "wav")
    attachment = make_attachment(stored, "wav", settings, msgnum=0)
    recipient = Recipient("1234", "default", "Zoë", "zoe@example.com")
    message = MessageInfo(msgnum=0, duration=3, cidnum="5551234", cidname="Alice")
    built = build_email(settings, recipient, message, attachment, now=1_700_000_000)
    assert asyncio.run(send(built, settings)).status == SENT
    received = email.message_from_bytes(handler.received[0][2], policy=policy.default)
    (part,) = list(received.iter_attachments())
    ext = {"wav": "wav", "mp3": "mp3", "ogg": "ogg"}[fmt]
    assert part.get_filename() == f"msg0000.{ext}"
    assert part.get_param("name") == f"msg0000.{ext}"
    assert part.get_content_type() == {"ogg": "application/ogg"}.get(fmt, f"audio/x-{fmt}")
    assert part["Content-Transfer-Encoding"] == "base64"
    samples = decode(part.get_content(), fmt)
    assert abs(len(samples) - SECONDS * RATE) <= FRAME[fmt]
    assert abs(peak_frequency(samples) - TONE) < 5


def test_stored_format_is_attached_unchanged_without_attachfmt_or_volgain():
    stored = audioformats.encode(tone_pcm(), "wav49")
    attachment = make_attachment(stored, "wav49", MailSettings.from_general({}, {}), 12)
    assert attachment.data == stored
    assert attachment.filename == "msg0012.WAV"
    assert attachment.mime_type == "audio/x-WAV"


def test_volgain_is_the_sox_v_factor():
    stored = audioformats.encode(tone_pcm(amplitude=4000), "wav")
    settings = MailSettings.from_general({"volgain": "2.0"}, {})
    louder = make_attachment(stored, "wav", settings, 0)
    assert louder.filename == "msg0000.wav"
    ratio = rms(decode(louder.data, "wav")) / rms(decode(stored, "wav"))
    assert abs(ratio - 2.0) < 0.01
    mailbox = MailSettings.from_general({"volgain": "2.0"}, {"volgain": "0.5", "attachfmt": "mp3"})
    quieter = make_attachment(stored, "wav", mailbox, 0)
    ratio = rms(decode(quieter.data, "mp3")) / rms(decode(stored, "wav"))
    assert abs(ratio - 0.5) < 0.05


def test_conversion_failure_sends_the_stored_audio_and_says_why():
    broken = b"RIFF\x00\x00\x00\x00WAVEjunk"  # not decodable as the stored wav
    settings = MailSettings.from_general({}, {"attachfmt": "mp3"})
    attachment, problem = converted_attachment(broken, "wav", *conversion("wav", settings), 3)
    assert attachment.data == broken
    assert attachment.filename == "msg0003.wav"
    assert attachment.mime_type == "audio/x-wav"
    assert "converting wav to mp3 failed" in problem
    assert "no data chunk" in problem


def test_ffmpeg_failure_falls_back_too(monkeypatch):
    monkeypatch.setattr(AudioSegment, "converter", "/nonexistent/ffmpeg")
    stored = audioformats.encode(tone_pcm(0.5), "wav")
    settings = MailSettings.from_general({}, {"attachfmt": "ogg"})
    attachment, problem = converted_attachment(stored, "wav", *conversion("wav", settings), 0)
    assert attachment.data == stored and attachment.filename == "msg0000.wav"
    assert "converting wav to ogg failed" in problem


def test_attachment_names():
    assert attachment_name(0, "wav") == "msg0000.wav"
    assert attachment_name(41, "wav49") == "msg0041.WAV"
    assert attachment_name(9998, "opus") == "msg9998.opus"
