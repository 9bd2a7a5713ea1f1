"""The `Channel`: what an application sees of a call.

Applications answer, play, record, read digits and hang up; they never see SIP or RTP.
A remote hang-up makes every later call raise `ChannelHungUp`, except `record`, which
returns what it has (a caller hanging up is the normal end of a voicemail).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from .media import RtpSession
from .recording import RecordingBuffer
from .rtp import SAMPLE_RATE
from .silence import DEFAULT_SILENCE_THRESHOLD, SilenceDetector, trim_trailing_silence

log = logging.getLogger(__name__)

# The longest recording the channel makes when its caller gives no limit (seconds).
HARD_RECORD_LIMIT = 600.0


class ChannelHungUp(Exception):
    """The other side is gone."""


class StopReason(enum.Enum):
    DIGIT = "digit"
    HANGUP = "hangup"
    MAX_DURATION = "maxsecs"
    SILENCE = "maxsilence"


@dataclass
class Recording:
    pcm: bytes
    reason: StopReason
    digit: str | None = None

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE


class CallControl(Protocol):
    """The signalling side of a channel (implemented by the SIP endpoint)."""

    async def answer_call(self) -> None: ...
    async def ring(self) -> None: ...
    def end_call(self, code: int | None, reason: str) -> None: ...


@dataclass
class CallerInfo:
    exten: str
    context: str
    caller_id_name: str = ""
    caller_id_num: str = ""
    call_id: str = ""
    channel_name: str = ""
    # Set when a PBX forwarded the call (Diversion / History-Info): whose call it was and why.
    redirecting_from: str = ""
    redirect_reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # The prompts' language for this call ("" = the server's): a peer's `language` option.
    language: str = ""
    # The caller's signalling peer, "ip:port" ("[ip]:port" for IPv6; "" unknown): for audits.
    source_address: str = ""


class Channel:
    def __init__(self, info: CallerInfo, control: CallControl, media: RtpSession) -> None:
        self.info = info
        self._control = control
        self._media = media
        self._digits: asyncio.Queue[str] = asyncio.Queue()
        self._hangup = asyncio.Event()
        self.answered = False
        self.hangup_reason = ""
        self.started = time.time()
        media.on_dtmf = self.digit_received

    # -- events from the endpoint -------------------------------------------------------

    def digit_received(self, digit: str) -> None:
        self._digits.put_nowait(digit)

    def remote_hangup(self, reason: str) -> None:
        if not self._hangup.is_set():
            self.hangup_reason = reason
            self._hangup.set()
            self._media.stop_playing()

    @property
    def hung_up(self) -> bool:
        return self._hangup.is_set()

    def _check(self) -> None:
        if self._hangup.is_set():
            raise ChannelHungUp(self.hangup_reason)

    # -- application API ----------------------------------------------------------------

    async def ring(self) -> None:
        self._check()
        await self._control.ring()

    async def answer(self) -> None:
        self._check()
        if not self.answered:
            await self._control.answer_call()
            self.answered = True

    def flush_digits(self) -> None:
        while not self._digits.empty():
            self._digits.get_nowait()

    async def play(self, pcm: bytes, interrupt_digits: str = "") -> str | None:
        """Play audio; return the digit that interrupted it, or None when it played out.

        A digit that is not an interrupt digit is left queued for the next read.
        """
        self._check()
        done = self._media.play(pcm)
        try:
            while not done.done():
                digit = await self._wait_for_digit(interrupt_digits, done)
                if digit is not None:
                    return digit
        finally:
            self._media.stop_playing()
        return None

    async def wait(self, seconds: float, interrupt_digits: str = "") -> str | None:
        """Wait in silence, returning an interrupt digit if one is pressed."""
        self._check()
        timer = asyncio.get_running_loop().create_future()
        handle = asyncio.get_running_loop().call_later(seconds, timer.set_result, None)
        try:
            while not timer.done():
                digit = await self._wait_for_digit(interrupt_digits, timer)
                if digit is not None:
                    return digit
        finally:
            handle.cancel()
        return None

    async def _wait_for_digit(self, wanted: str, until: asyncio.Future[None]) -> str | None:
        """Wait for a wanted digit, the `until` future or a hang-up, whichever is first."""
        if wanted:
            kept: list[str] = []
            while not self._digits.empty():
                digit = self._digits.get_nowait()
                if digit in wanted:
                    for other in kept:
                        self._digits.put_nowait(other)
                    return digit
                kept.append(digit)
            for other in kept:
                self._digits.put_nowait(other)
        digit_task = asyncio.ensure_future(self._digits.get()) if wanted else None
        hangup_task = asyncio.ensure_future(self._hangup.wait())
        waiters: set[asyncio.Future[object]] = {until, hangup_task}  # type: ignore[arg-type]
        if digit_task is not None:
            waiters.add(digit_task)  # type: ignore[arg-type]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hangup_task.cancel()
            if digit_task is not None and not digit_task.done():
                digit_task.cancel()
        self._check()
        if digit_task is not None and digit_task.done() and not digit_task.cancelled():
            digit = digit_task.result()
            if digit in wanted:
                return digit
            self._digits.put_nowait(digit)
        return None

    async def read_digits(
        self, max_digits: int, first_timeout: float, timeout: float, terminators: str = "#"
    ) -> str:
        """Collect digits the way Asterisk's readstring does: up to a terminator or a pause."""
        self._check()
        collected = ""
        limit = first_timeout
        while len(collected) < max_digits:
            try:
                digit = await self._next_digit(limit)
            except TimeoutError:
                break
            if digit in terminators:
                break
            collected += digit
            limit = timeout
        return collected

    async def _next_digit(self, timeout: float) -> str:
        digit_task = asyncio.ensure_future(self._digits.get())
        hangup_task = asyncio.ensure_future(self._hangup.wait())
        try:
            done, _ = await asyncio.wait(
                {digit_task, hangup_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            hangup_task.cancel()
            if not digit_task.done():
                digit_task.cancel()
        if digit_task in done:
            return digit_task.result()
        self._check()
        raise TimeoutError

    async def record(
        self,
        max_seconds: float | None = HARD_RECORD_LIMIT,
        stop_digits: str = "#",
        *,
        on_chunk: Callable[[bytes], None] | None = None,
        max_silence: float = 0.0,
        silence_threshold: int = DEFAULT_SILENCE_THRESHOLD,
        gain_db: float = 0.0,
    ) -> Recording:
        """Record the caller until a stop digit, a hang-up, `max_seconds` of wall clock or
        `max_silence` seconds of silence.

        The limit holds even when no audio arrives. None or 0 means `HARD_RECORD_LIMIT`:
        the application passes its own limit (maxsecs, maxrecordsecs), the channel never
        records without one. `on_chunk` gets every piece of PCM as it becomes part of the
        recording (silence for lost packets included); together they are `Recording.pcm`,
        except that a recording stopped by silence keeps only 200 ms of it (as Asterisk's
        recorder does; the chunks already handed out are not taken back). `max_silence` 0 is
        off; `silence_threshold` is the mean absolute sample value below which a 20 ms frame
        is silent. `gain_db` amplifies (or attenuates) what the caller says, clipped.
        """
        self._check()
        limit = max_seconds if max_seconds is not None and max_seconds > 0 else HARD_RECORD_LIMIT
        loop = asyncio.get_running_loop()
        detector = SilenceDetector(silence_threshold) if max_silence > 0 else None
        silence_ms = int(max_silence * 1000)
        stopped_by_silence = False
        hook = on_chunk

        def chunk(pcm: bytes) -> None:
            nonlocal hook, stopped_by_silence
            if detector is not None:
                detector.feed(pcm)
                if detector.silent_ms > silence_ms and not stopped_by_silence:
                    stopped_by_silence = True
                    limit_reached()
            if hook is not None:
                try:
                    hook(pcm)
                except Exception:  # noqa: BLE001 - the recording goes on in memory
                    log.exception("recording hook failed; the rest is kept in memory only")
                    hook = None

        buffer = RecordingBuffer(limit, loop.time(), chunk)
        reached_limit = loop.create_future()
        factor = 10 ** (gain_db / 20) if gain_db else 1.0

        def limit_reached() -> None:
            if not reached_limit.done():
                reached_limit.set_result(None)

        def on_audio(pcm: bytes, gap_samples: int) -> None:
            if reached_limit.done():
                return  # stopped (silence): what arrives now is not part of it
            if factor != 1.0:
                pcm = audioop.mul(pcm, 2, factor)  # saturates at the 16-bit limits
            buffer.add(pcm, gap_samples, loop.time())
            if buffer.full:
                limit_reached()

        self.flush_digits()
        self._media.on_audio = on_audio
        timer = loop.call_later(limit, limit_reached)
        try:
            digit = await self._wait_for_digit(stop_digits, reached_limit)
            while digit is None and not reached_limit.done():
                digit = await self._wait_for_digit(stop_digits, reached_limit)
            if not stopped_by_silence:
                # What the jitter buffer holds arrived before the key (or the limit): it was
                # said before it, and belongs to the recording (Asterisk keeps frame order).
                self._media.flush_received()
        except ChannelHungUp:
            self._media.flush_received()
            return Recording(buffer.pcm, StopReason.HANGUP)
        finally:
            timer.cancel()
            self._media.on_audio = None
        if digit is not None:
            return Recording(buffer.pcm, StopReason.DIGIT, digit)
        if stopped_by_silence and detector is not None:
            pcm = trim_trailing_silence(buffer.pcm, detector.silent_samples)
            return Recording(pcm, StopReason.SILENCE)
        return Recording(buffer.pcm, StopReason.MAX_DURATION)

    def hangup(self, code: int | None = None, reason: str = "normal clearing") -> None:
        """End the call: BYE if answered, else a final response (`code`, default 480)."""
        if not self._hangup.is_set():
            self.hangup_reason = reason
            self._hangup.set()
        self._media.stop_playing()
        self._control.end_call(code, reason)
