"""REGISTER handling: bindings, expiry, RFC 3261 10.3 ordering and chan_sip's realtime columns."""

from __future__ import annotations

import pytest
from sipmessage import Request

from channels.sip.messages import parse_message
from channels.sip.peers import Peer
from channels.sip.registrar import (
    Binding,
    RegisterAction,
    Registrar,
    binding_from_realtime,
    realtime_clear,
    realtime_update,
)

PHONE = ("203.0.113.5", 40112)  # the public address the REGISTER arrives from (NAT)


def register_request(
    *,
    contact: str | list[str] | None = "<sip:1001@192.168.1.20:5060;transport=udp>",
    expires: str | None = None,
    call_id: str = "reg-abc@192.168.1.20",
    cseq: int = 1,
    user: str = "1001",
    via_host: str = "192.168.1.20",
    extra: str = "",
) -> Request:
    contacts = [contact] if isinstance(contact, str) else contact or []
    lines = [
        "REGISTER sip:voicemail.example SIP/2.0",
        f"Via: SIP/2.0/UDP {via_host}:5060;branch=z9hG4bK-{cseq};rport",
        f"From: <sip:{user}@voicemail.example>;tag=f{cseq}",
        f"To: <sip:{user}@voicemail.example>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
        "User-Agent: Yealink SIP-T46S 66.86.0.15",
    ]
    lines += [f"Contact: {value}" for value in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    lines.append("Content-Length: 0")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def header(outcome, name: str) -> list[str]:
    return [value for key, value in outcome.headers if key.lower() == name.lower()]


@pytest.fixture
def peer() -> Peer:
    return Peer.from_options("1001", {"host": "dynamic", "secret": "s3cret"}, realtime=False)


@pytest.fixture
def registrar() -> Registrar:
    return Registrar(min_expires=60, max_expires=3600, default_expires=120)


# -- adding, refreshing, replacing ---------------------------------------------------------


def test_first_register_adds_a_binding_and_answers_with_contact_and_expires(
    registrar, peer
) -> None:
    outcome = registrar.register(register_request(expires="300"), PHONE, "UDP", peer, 1000.0)
    assert outcome.code == 200 and outcome.action is RegisterAction.ADDED and outcome.changed
    assert header(outcome, "Contact") == ["<sip:1001@192.168.1.20:5060;transport=udp>;expires=300"]
    assert header(outcome, "Expires") == ["300"]
    binding = registrar.binding("1001")
    assert binding is outcome.binding
    assert binding.contact == "sip:1001@192.168.1.20:5060;transport=udp"
    assert binding.source == PHONE
    assert binding.address == PHONE  # nat=force_rport (the default): answer the NAT
    assert binding.transport == "udp"
    assert binding.expires == 300 and binding.expires_at == 1300.0
    assert binding.user_agent == "Yealink SIP-T46S 66.86.0.15"
    assert (binding.call_id, binding.cseq) == ("reg-abc@192.168.1.20", 1)
    assert binding.defaultuser == "1001"
    assert registrar.bindings() == [binding]


def test_date_header_when_the_wall_clock_is_given(registrar, peer) -> None:
    outcome = registrar.register(
        register_request(), PHONE, "udp", peer, 5.0, wall_clock_now=1_700_000_000
    )
    assert header(outcome, "Date") == ["Tue, 14 Nov 2023 22:13:20 GMT"]


def test_without_nat_requests_go_to_the_contact(registrar) -> None:
    peer = Peer.from_options("1001", {"host": "dynamic", "nat": "no"}, realtime=False)
    registrar.register(register_request(contact="<sip:1001@192.168.1.20>"), PHONE, "udp", peer, 0)
    assert registrar.binding("1001").address == ("192.168.1.20", 5060)
    registrar.register(
        register_request(contact="<sips:1001@[2001:db8::7]>", cseq=2), PHONE, "tls", peer, 1
    )
    assert registrar.binding("1001").address == ("2001:db8::7", 5061)


def test_auto_force_rport_only_when_the_via_shows_a_nat(registrar) -> None:
    peer = Peer.from_options("1001", {"host": "dynamic", "nat": "auto_force_rport"}, False)
    registrar.register(register_request(), PHONE, "udp", peer, 0)
    assert registrar.binding("1001").address == PHONE
    direct = register_request(via_host="203.0.113.5", cseq=2, contact="<sip:1001@203.0.113.5:5070>")
    registrar.register(direct, PHONE, "udp", peer, 1)
    assert registrar.binding("1001").address == ("203.0.113.5", 5070)


def test_refresh_updates_the_expiry(registrar, peer) -> None:
    registrar.register(register_request(expires="120"), PHONE, "udp", peer, 0.0)
    outcome = registrar.register(register_request(expires="120", cseq=2), PHONE, "udp", peer, 100.0)
    assert outcome.action is RegisterAction.UPDATED
    assert outcome.previous.expires_at == 120.0
    assert registrar.binding("1001").expires_at == 220.0


def test_one_binding_per_peer_the_newest_wins(registrar, peer) -> None:
    registrar.register(register_request(), PHONE, "udp", peer, 0.0)
    desk = register_request(contact="<sip:1001@10.0.0.9:5062>", call_id="other-phone", cseq=1)
    outcome = registrar.register(desk, ("198.51.100.3", 5062), "udp", peer, 10.0)
    assert outcome.action is RegisterAction.UPDATED
    assert outcome.previous.contact == "sip:1001@192.168.1.20:5060;transport=udp"
    assert header(outcome, "Contact") == ["<sip:1001@10.0.0.9:5062>;expires=120"]
    assert [b.contact for b in registrar.bindings()] == ["sip:1001@10.0.0.9:5062"]


def test_only_the_first_contact_is_bound(registrar, peer) -> None:
    request = register_request(
        contact=["<sip:a@192.0.2.1>, <sip:b@192.0.2.2>", "<sip:c@x.example>"]
    )
    registrar.register(request, PHONE, "udp", peer, 0.0)
    assert registrar.binding("1001").contact == "sip:a@192.0.2.1"


def test_peer_names_are_case_insensitive(registrar) -> None:
    peer = Peer.from_options("Alice", {"host": "dynamic"}, realtime=False)
    registrar.register(register_request(), PHONE, "udp", peer, 0.0)
    assert registrar.binding("alice").peer_name == "Alice"


# -- expiry values -------------------------------------------------------------------------


def test_contact_expires_parameter_wins_over_the_expires_header(registrar, peer) -> None:
    request = register_request(contact="<sip:1001@192.0.2.20>;expires=600", expires="3000")
    outcome = registrar.register(request, PHONE, "udp", peer, 0.0)
    assert registrar.binding("1001").expires == 600
    assert header(outcome, "Expires") == ["600"]


def test_no_expiry_given_uses_default_expires(registrar, peer) -> None:
    registrar.register(register_request(), PHONE, "udp", peer, 0.0)
    assert registrar.binding("1001").expires == 120


def test_too_long_expiry_is_lowered_to_max_expires(registrar, peer) -> None:
    outcome = registrar.register(register_request(expires="86400"), PHONE, "udp", peer, 0.0)
    assert outcome.code == 200
    assert header(outcome, "Expires") == ["3600"]


def test_too_short_expiry_is_refused_with_min_expires(registrar, peer) -> None:
    outcome = registrar.register(register_request(expires="30"), PHONE, "udp", peer, 0.0)
    assert outcome.code == 423 and outcome.action is RegisterAction.REJECTED
    assert header(outcome, "Min-Expires") == ["60"]
    assert registrar.binding("1001") is None


@pytest.mark.parametrize(
    ("contact", "expires"),
    [
        ("<sip:1001@192.0.2.20>", "soon"),
        ("<mailto:a@example.com>", None),
        ("<tel:+15551234>", None),
        ("not a contact <", None),
        (["*", "<sip:1001@192.0.2.20>"], "0"),
        ("*", "60"),
        ("*", None),
    ],
)
def test_malformed_registers_are_bad_requests(registrar, peer, contact, expires) -> None:
    outcome = registrar.register(
        register_request(contact=contact, expires=expires), PHONE, "udp", peer, 0.0
    )
    assert outcome.code == 400 and outcome.action is RegisterAction.REJECTED
    assert outcome.reason
    assert registrar.binding("1001") is None


# -- removing --------------------------------------------------------------------------------


def test_expires_zero_removes_the_binding(registrar, peer) -> None:
    registrar.register(register_request(), PHONE, "udp", peer, 0.0)
    outcome = registrar.register(register_request(expires="0", cseq=2), PHONE, "udp", peer, 5.0)
    assert outcome.code == 200 and outcome.action is RegisterAction.REMOVED and outcome.changed
    assert outcome.previous.peer_name == "1001" and outcome.binding is None
    assert header(outcome, "Expires") == ["0"] and header(outcome, "Contact") == []
    assert registrar.binding("1001") is None and registrar.next_expiry() is None


def test_contact_expires_zero_removes_the_binding(registrar, peer) -> None:
    registrar.register(register_request(), PHONE, "udp", peer, 0.0)
    request = register_request(
        contact="<sip:1001@192.168.1.20:5060;transport=udp>;expires=0", cseq=2
    )
    assert registrar.register(request, PHONE, "udp", peer, 1.0).action is RegisterAction.REMOVED
    assert registrar.binding("1001") is None


def test_unregistering_another_contact_leaves_the_binding(registrar, peer) -> None:
    registrar.register(register_request(), PHONE, "udp", peer, 0.0)
    stale = register_request(contact="<sip:1001@10.9.9.9>", expires="0", call_id="old-phone")
    outcome = registrar.register(stale, PHONE, "udp", peer, 1.0)
    assert outcome.code == 200 and outcome.action is RegisterAction.IGNORED
    assert not outcome.changed
    assert registrar.binding("1001") is not None


def test_wildcard_with_expires_zero_removes_all(registrar, peer) -> None:
    registrar.register(register_request(), PHONE, "udp", peer, 0.0)
    outcome = registrar.register(
        register_request(contact="*", expires="0", call_id="any", cseq=9), PHONE, "udp", peer, 1.0
    )
    assert outcome.action is RegisterAction.REMOVED and outcome.previous is not None
    assert registrar.binding("1001") is None


def test_unregister_without_a_binding_is_ok(registrar, peer) -> None:
    outcome = registrar.register(
        register_request(contact="*", expires="0"), PHONE, "udp", peer, 1.0
    )
    assert outcome.code == 200 and outcome.action is RegisterAction.REMOVED
    assert not outcome.changed


def test_expires_zero_without_contact_unregisters_like_chan_sip(registrar, peer) -> None:
    registrar.register(register_request(), PHONE, "udp", peer, 0.0)
    outcome = registrar.register(
        register_request(contact=None, expires="0", cseq=2), PHONE, "udp", peer, 1.0
    )
    assert outcome.action is RegisterAction.REMOVED
    assert registrar.binding("1001") is None


# -- queries and ordering (RFC 3261 10.3 step 7) ---------------------------------------------


def test_register_without_contact_reports_the_binding(registrar, peer) -> None:
    registrar.register(register_request(expires="300"), PHONE, "udp", peer, 0.0)
    outcome = registrar.register(register_request(contact=None, cseq=2), PHONE, "udp", peer, 100.0)
    assert outcome.code == 200 and outcome.action is RegisterAction.QUERIED
    assert header(outcome, "Contact") == ["<sip:1001@192.168.1.20:5060;transport=udp>;expires=200"]
    assert header(outcome, "Expires") == ["200"]
    assert registrar.binding("1001").expires_at == 300.0


def test_query_without_binding_says_expires_zero(registrar, peer) -> None:
    outcome = registrar.register(register_request(contact=None), PHONE, "udp", peer, 0.0)
    assert outcome.action is RegisterAction.QUERIED
    assert header(outcome, "Expires") == ["0"] and header(outcome, "Contact") == []


def test_older_cseq_on_the_same_call_id_is_ignored(registrar, peer) -> None:
    registrar.register(register_request(cseq=5, expires="300"), PHONE, "udp", peer, 0.0)
    late = register_request(cseq=4, contact="<sip:1001@10.1.1.1>", expires="0")
    outcome = registrar.register(late, PHONE, "udp", peer, 1.0)
    assert outcome.code == 200 and outcome.action is RegisterAction.IGNORED
    assert not outcome.changed
    assert header(outcome, "Contact") == ["<sip:1001@192.168.1.20:5060;transport=udp>;expires=299"]
    same = register_request(cseq=5, contact="<sip:1001@10.1.1.1>")
    assert registrar.register(same, PHONE, "udp", peer, 2.0).action is RegisterAction.IGNORED
    assert registrar.binding("1001").contact == "sip:1001@192.168.1.20:5060;transport=udp"


def test_lower_cseq_on_another_call_id_is_applied(registrar, peer) -> None:
    registrar.register(register_request(cseq=50), PHONE, "udp", peer, 0.0)
    rebooted = register_request(cseq=1, call_id="after-reboot", contact="<sip:1001@10.1.1.1>")
    outcome = registrar.register(rebooted, PHONE, "udp", peer, 1.0)
    assert outcome.action is RegisterAction.UPDATED
    assert registrar.binding("1001").contact == "sip:1001@10.1.1.1"


def test_wildcard_with_an_older_cseq_is_ignored(registrar, peer) -> None:
    registrar.register(register_request(cseq=7), PHONE, "udp", peer, 0.0)
    outcome = registrar.register(
        register_request(contact="*", expires="0", cseq=6), PHONE, "udp", peer, 1.0
    )
    assert outcome.action is RegisterAction.IGNORED
    assert registrar.binding("1001") is not None


# -- Path (RFC 3327) and contact ACL -------------------------------------------------------


def test_path_is_kept_and_echoed_when_both_sides_support_it(registrar) -> None:
    peer = Peer.from_options("1001", {"host": "dynamic", "supportpath": "yes"}, realtime=False)
    request = register_request(extra="Path: <sip:edge.example;lr>\r\nSupported: path, outbound")
    outcome = registrar.register(request, PHONE, "udp", peer, 0.0)
    assert registrar.binding("1001").path == ("<sip:edge.example;lr>",)
    assert header(outcome, "Path") == ["<sip:edge.example;lr>"]
    assert header(outcome, "Supported") == ["path"]


def test_path_is_ignored_without_supportpath(registrar, peer) -> None:
    request = register_request(extra="Path: <sip:edge.example;lr>\r\nSupported: path")
    outcome = registrar.register(request, PHONE, "udp", peer, 0.0)
    assert registrar.binding("1001").path == () and header(outcome, "Path") == []


def test_contact_acl_denies_with_603(registrar) -> None:
    peer = Peer.from_options(
        "1001",
        [("host", "dynamic"), ("contactdeny", "0.0.0.0/0"), ("contactpermit", "10.0.0.0/8")],
        realtime=False,
    )
    outcome = registrar.register(register_request(), PHONE, "udp", peer, 0.0)
    assert outcome.code == 603 and registrar.binding("1001") is None


# -- expiry timer --------------------------------------------------------------------------


def test_bindings_expire_after_their_time_plus_ten_seconds(registrar, peer) -> None:
    other = Peer.from_options("1002", {"host": "dynamic"}, realtime=False)
    registrar.register(register_request(expires="60"), PHONE, "udp", peer, 0.0)
    registrar.register(
        register_request(expires="300", user="1002", call_id="c2"), PHONE, "udp", other, 0.0
    )
    assert registrar.next_expiry() == 70.0
    assert registrar.expire(69.9) == []
    removed = registrar.expire(70.0)
    assert [b.peer_name for b in removed] == ["1001"]
    assert registrar.next_expiry() == 310.0
    assert [b.peer_name for b in registrar.bindings()] == ["1002"]


def test_refresh_moves_the_expiry(registrar, peer) -> None:
    registrar.register(register_request(expires="60"), PHONE, "udp", peer, 0.0)
    registrar.register(register_request(expires="60", cseq=2), PHONE, "udp", peer, 50.0)
    assert registrar.expire(75.0) == []
    assert registrar.next_expiry() == 120.0
    assert len(registrar.expire(120.0)) == 1
    assert registrar.next_expiry() is None


def test_many_refreshes_keep_the_timer_heap_small(registrar, peer) -> None:
    for n in range(1, 1000):
        registrar.register(register_request(expires="60", cseq=n), PHONE, "udp", peer, float(n))
    assert len(registrar._deadlines) <= 2 * len(registrar.bindings()) + 64
    assert registrar.next_expiry() == 999.0 + 70.0


# -- realtime write-back -------------------------------------------------------------------


def test_realtime_update_has_exactly_chan_sips_columns(registrar, peer) -> None:
    registrar.register(register_request(expires="300"), PHONE, "udp", peer, 10.0)
    row = realtime_update(registrar.binding("1001"), 1_700_000_000, regserver="vm1")
    assert row == {
        "ipaddr": "203.0.113.5",
        "port": "40112",
        "regseconds": "1700000300",
        "defaultuser": "1001",
        "fullcontact": "sip:1001@192.168.1.20:5060;transport=udp",
        "useragent": "Yealink SIP-T46S 66.86.0.15",
        "lastms": "0",
        "regserver": "vm1",
    }


def test_realtime_update_brackets_ipv6_and_prefers_configured_defaultuser(registrar) -> None:
    peer = Peer.from_options("1001", {"host": "dynamic", "defaultuser": "desk"}, realtime=True)
    registrar.register(register_request(), ("2001:db8::5", 5060), "udp", peer, 0.0)
    row = realtime_update(registrar.binding("1001"), 100)
    assert (row["ipaddr"], row["port"], row["defaultuser"]) == ("[2001:db8::5]", "5060", "desk")
    assert row["regserver"] == ""


def test_realtime_clear_blanks_the_registration() -> None:
    assert realtime_clear() == {
        "fullcontact": "",
        "ipaddr": "",
        "port": "0",
        "regseconds": "0",
        "regserver": "",
        "useragent": "",
        "lastms": "0",
    }


def test_binding_round_trips_through_a_realtime_row(registrar, peer) -> None:
    registrar.register(register_request(expires="300"), PHONE, "udp", peer, 10.0)
    row = realtime_update(registrar.binding("1001"), 1_000_000)
    restored = binding_from_realtime("1001", row, now_wall=1_000_100, now_mono=500.0)
    assert restored is not None
    assert restored.contact == "sip:1001@192.168.1.20:5060;transport=udp"
    assert restored.address == PHONE and restored.transport == "udp"
    assert restored.expires == 200 and restored.expires_at == 700.0
    assert restored.user_agent == "Yealink SIP-T46S 66.86.0.15"
    assert restored.call_id == "" and restored.cseq == 0
    other = Registrar()
    other.restore(restored)
    assert other.binding("1001") is restored
    assert other.next_expiry() == 710.0


def test_expired_or_empty_realtime_rows_give_no_binding() -> None:
    row = {"ipaddr": "192.0.2.9", "port": "5060", "regseconds": "999", "fullcontact": ""}
    assert binding_from_realtime("p", row, now_wall=1000, now_mono=0.0) is None
    assert binding_from_realtime("p", realtime_clear(), now_wall=1000, now_mono=0.0) is None
    assert binding_from_realtime("p", {}, now_wall=1000, now_mono=0.0) is None


def test_realtime_row_without_fullcontact_uses_ipaddr_and_port() -> None:
    row = {"ipaddr": "[2001:db8::9]", "port": "5070", "regseconds": "2000", "defaultuser": "u"}
    binding = binding_from_realtime("p", row, now_wall=1000, now_mono=50.0)
    assert binding is not None
    assert binding.contact == "sip:u@[2001:db8::9]:5070"
    assert binding.address == ("2001:db8::9", 5070)
    assert binding.expires_at == 1050.0


def test_next_registration_after_restore_replaces_it(peer) -> None:
    registrar = Registrar()
    registrar.restore(
        Binding(
            "1001", "sip:1001@10.0.0.1", ("10.0.0.1", 5060), ("10.0.0.1", 5060), "udp", 100, 100.0
        )
    )
    outcome = registrar.register(register_request(cseq=1), PHONE, "udp", peer, 1.0)
    assert outcome.action is RegisterAction.UPDATED
    assert registrar.binding("1001").source == PHONE
