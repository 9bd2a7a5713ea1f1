"""PeerDirectory.watching: the peers in memory whose mailbox= lists a mailbox, the phones a
deposit's unsolicited NOTIFY goes to. It is an index (issue 12: a scan of 10 000 peers per
deposit), so it must follow every way a peer enters or leaves memory: sip.conf loaded or
reloaded, a realtime friend cached (rtcachefriends), replaced by a fresh row, dropped on
expiry, and the static peer of the same name seen again once the cached one is gone."""

from __future__ import annotations

from channels.sip.peers import Peer
from channels.sip.registration import PeerDirectory, RealtimeOptions


def peer(name: str, mailbox: str, realtime: bool = False) -> Peer:
    return Peer.from_options(name, {"type": "friend", "host": "dynamic", "mailbox": mailbox},
                             realtime=realtime)  # fmt: skip


def names(directory: PeerDirectory, mailbox: str, context: str = "default") -> list[str]:
    return sorted(p.name for p in directory.watching(mailbox, context))


def brute_force(directory: PeerDirectory, mailbox: str, context: str = "default") -> list[str]:
    """What the index replaces: every peer in memory, looked at."""
    return sorted(p.name for p in directory.in_memory() if (mailbox, context) in p.mailbox)


def test_watching_follows_every_way_a_peer_comes_and_goes() -> None:
    static = {"a": peer("a", "100"), "b": peer("b", "100&200@sales"), "c": peer("c", "300")}
    directory = PeerDirectory(static, None, RealtimeOptions(rtcachefriends=True))
    assert names(directory, "100") == ["a", "b"]
    assert names(directory, "200", "sales") == ["b"]
    assert names(directory, "200") == []

    directory.keep(peer("r", "100&300", realtime=True), now=0.0)  # a realtime friend
    assert names(directory, "100") == ["a", "b", "r"]
    directory.keep(peer("r", "400", realtime=True), now=1.0)  # its row changed
    assert names(directory, "100") == ["a", "b"]
    assert names(directory, "400") == ["r"]
    directory.drop("r")
    assert names(directory, "400") == []

    directory.static = {"a": peer("a", "500")}  # sip.conf reloaded
    assert names(directory, "100") == []
    assert names(directory, "500") == ["a"]

    directory.keep(peer("a", "600", realtime=True), now=2.0)  # a cached twin of a static peer
    directory.drop("a")
    assert names(directory, "500") == ["a"]  # the static one is still in memory
    assert names(directory, "600") == []
    for box, context in [("100", "default"), ("500", "default"), ("200", "sales")]:
        assert names(directory, box, context) == brute_force(directory, box, context)


def test_a_friend_not_cached_is_not_indexed() -> None:
    directory = PeerDirectory({}, None, RealtimeOptions(rtcachefriends=False))
    assert names(directory, "100") == []
    directory.keep(peer("r", "100", realtime=True), now=0.0)
    assert names(directory, "100") == [] == brute_force(directory, "100")
