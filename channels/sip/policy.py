"""What the authorizer decides for one call: the peer's options the endpoint applies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipmessage import Request

from .transactions import ServerTransaction

if TYPE_CHECKING:
    from .transport import SipTransport

# chan_sip's dtmfmode values; shortinfo is SIP INFO with a shorter body, as info for us.
DTMF_MODES = ("rfc2833", "inband", "info", "shortinfo", "auto")
INFO_DTMF_MODES = ("info", "shortinfo", "auto")


@dataclass(frozen=True)
class CallPolicy:
    """A calling peer's sip.conf options for its call.

    `rtp_timeout` None keeps the endpoint's (sip.conf [general] rtptimeout); `caller_id`
    (name, number) replaces what the From header said (a peer's `callerid`).
    """

    context: str
    rtp_timeout: float | None = None
    dtmfmode: str = "auto"
    language: str = ""
    caller_id: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.dtmfmode not in DTMF_MODES:
            raise ValueError(f"dtmfmode {self.dtmfmode!r} is not one of {', '.join(DTMF_MODES)}")


# Who may call: the policy for the call, or None when it refused the INVITE (it has sent
# the 401/403 itself). A plain context string is still accepted and means CallPolicy(context).
Authorizer = Callable[
    ["SipTransport", Request, ServerTransaction], Awaitable["CallPolicy | str | None"]
]
