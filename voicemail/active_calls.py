"""The calls in progress and the application each one is in, for `core show channels`,
AMI's CoreShowChannels and the calls metrics.

The dial plan runner is the one place that knows which application a call is running, so
it reports here; readers never touch a Channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from channels.channel import Channel

# How an application's run ended, for `voicemail_calls_total{result}`: VoiceMail's
# VMSTATUS (SUCCESS, USEREXIT, FAILED), else SUCCESS, or FAILED when it raised.
AppFinished = Callable[["ActiveCall", str, str], None]


@dataclass
class ActiveCall:
    channel: str
    call_id: str
    caller: str
    context: str
    exten: str
    started: float = field(default_factory=time.monotonic)
    application: str = ""
    application_data: str = ""
    mailbox: str = ""

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


class ActiveCalls:
    def __init__(self) -> None:
        self._calls: dict[int, tuple[ActiveCall, Channel]] = {}
        self.app_finished: list[AppFinished] = []

    def __iter__(self) -> Iterator[ActiveCall]:
        return iter([call for call, _channel in self._calls.values()])

    def __len__(self) -> int:
        return len(self._calls)

    def channels(self) -> list[Channel]:
        return [channel for _call, channel in self._calls.values()]

    def begin(self, channel: Channel) -> ActiveCall:
        info = channel.info
        caller = info.caller_id_num
        if info.caller_id_name:
            caller = f'"{info.caller_id_name}" <{info.caller_id_num}>'
        call = ActiveCall(
            channel=info.channel_name or f"SIP/{info.call_id}",
            call_id=info.call_id,
            caller=caller,
            context=info.context,
            exten=info.exten,
        )
        self._calls[id(channel)] = (call, channel)
        return call

    def end(self, channel: Channel) -> None:
        self._calls.pop(id(channel), None)

    def entering(self, call: ActiveCall, application: str, arguments: list[str]) -> None:
        call.application = application
        call.application_data = ",".join(arguments)
        if application.lower() in ("voicemail", "voicemailmain") and arguments:
            call.mailbox = arguments[0]

    def finished(self, call: ActiveCall, application: str, result: str) -> None:
        for listener in self.app_finished:
            listener(call, application, result)
