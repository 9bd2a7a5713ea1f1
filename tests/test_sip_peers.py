"""SIP peers from sip.conf sections and sippeers rows, and Asterisk's permit/deny ACLs."""

from __future__ import annotations

import pytest

from channels.sip.peers import Acl, Peer, parse_mailboxes

# -- ACL (ast_append_ha / ast_apply_ha) ----------------------------------------------------


def test_no_rules_allow_everyone() -> None:
    acl = Acl.parse([])
    assert not acl
    assert acl.allows("192.0.2.1")
    assert acl.allows("2001:db8::1")
    assert acl.allows("phone.example")


def test_deny_all_then_permit_a_lan_with_a_dotted_netmask() -> None:
    acl = Acl.parse([("deny", "0.0.0.0/0.0.0.0"), ("permit", "192.168.0.0/255.255.0.0")])
    assert acl.allows("192.168.44.7")
    assert not acl.allows("10.1.2.3")


def test_last_matching_rule_wins() -> None:
    # A later deny overrides the earlier permit for the host it covers, not for the rest.
    acl = Acl.parse([("permit", "10.0.0.0/8"), ("deny", "10.1.2.3"), ("deny", "172.16.0.0/12")])
    assert acl.allows("10.9.9.9")
    assert not acl.allows("10.1.2.3")
    assert not acl.allows("172.20.0.1")
    assert acl.allows("192.0.2.1")  # matched by nothing: allowed


def test_order_matters_permit_before_deny_all_denies_everything() -> None:
    acl = Acl.parse([("permit", "192.168.1.0/24"), ("deny", "0.0.0.0/0")])
    assert not acl.allows("192.168.1.10")


def test_cidr_and_netmask_forms_are_equivalent() -> None:
    cidr = Acl.parse([("deny", "0.0.0.0/0"), ("permit", "10.0.0.0/8")])
    mask = Acl.parse([("deny", "0.0.0.0/0.0.0.0"), ("permit", "10.0.0.0/255.0.0.0")])
    for address in ("10.200.1.1", "11.0.0.1", "9.255.255.255"):
        assert cidr.allows(address) == mask.allows(address)


def test_rule_address_is_masked_like_asterisk() -> None:
    # 192.168.1.77/24 is stored as 192.168.1.0/24.
    acl = Acl.parse([("deny", "0.0.0.0/0"), ("permit", "192.168.1.77/24")])
    assert acl.allows("192.168.1.1")
    assert not acl.allows("192.168.2.1")


def test_non_contiguous_netmask() -> None:
    acl = Acl.parse([("deny", "0.0.0.0/0"), ("permit", "10.0.5.0/255.0.255.0")])
    assert acl.allows("10.77.5.9")
    assert not acl.allows("10.77.6.9")


def test_comma_list_and_negation() -> None:
    acl = Acl.parse([("deny", "0.0.0.0/0"), ("permit", "10.0.0.0/8, 192.168.0.0/16")])
    assert acl.allows("192.168.3.3") and acl.allows("10.3.3.3")
    inverted = Acl.parse([("permit", "!192.0.2.0/24")])  # i.e. deny 192.0.2.0/24
    assert not inverted.allows("192.0.2.5")
    assert inverted.allows("198.51.100.5")


def test_ipv6_rules_do_not_match_ipv4_and_mapped_addresses_count_as_ipv4() -> None:
    acl = Acl.parse([("deny", "::/0"), ("permit", "2001:db8::/32")])
    assert acl.allows("2001:db8:1::5")
    assert acl.allows("[2001:db8::9]")
    assert not acl.allows("2001:db9::1")
    assert acl.allows("192.0.2.1")  # the IPv6 deny-all does not cover IPv4
    v4 = Acl.parse([("deny", "0.0.0.0/0"), ("permit", "192.0.2.0/24")])
    assert v4.allows("::ffff:192.0.2.9")
    assert v4.allows("::1")  # ast_apply_ha starts from allow; IPv4 rules never match IPv6


def test_host_names_pass_only_an_empty_list() -> None:
    assert not Acl.parse([("permit", "10.0.0.0/8")]).allows("phone.example")


@pytest.mark.parametrize(
    "entry",
    [
        ("permit", "10.0.0.0/33"),
        ("permit", "10.0.0/8"),
        ("deny", "phone.example"),
        ("deny", "2001:db8::/ffff::"),
        ("allow", "10.0.0.0/8"),
        ("permit", "10.0.0.0/255.0.0.256"),
    ],
)
def test_bad_acl_entries_are_errors(entry) -> None:
    with pytest.raises(ValueError):
        Acl.parse([entry])


# -- mailbox lists -------------------------------------------------------------------------


def test_mailbox_list_with_default_context() -> None:
    assert parse_mailboxes("1234@default, 1233@sales,1200") == [
        ("1234", "default"),
        ("1233", "sales"),
        ("1200", "default"),
    ]
    assert parse_mailboxes("1234&1235@other") == [("1234", "default"), ("1235", "other")]
    assert parse_mailboxes("") == []


# -- Peer.from_options ---------------------------------------------------------------------


def test_peer_from_a_sip_conf_section() -> None:
    items = [
        ("type", "friend"),
        ("host", "dynamic"),
        ("secret", "s3cret"),
        ("context", "internal"),
        ("mailbox", "1001@default,1002@default"),
        ("deny", "0.0.0.0/0.0.0.0"),
        ("permit", "192.168.0.0/255.255.0.0"),
        ("permit", "10.0.0.0/8"),
        ("nat", "force_rport,comedia"),
        ("qualify", "yes"),
        ("subscribemwi", "yes"),
        ("buggymwi", "on"),
        ("insecure", "port,invite"),
        ("vmexten", "*97"),
        ("callerid", '"Alice" <1001>'),
        ("language", "fr"),
        ("dtmfmode", "INFO"),
        ("rtptimeout", "60"),
    ]
    peer = Peer.from_options("1001", items, realtime=False)
    assert peer.name == "1001" and not peer.realtime
    assert peer.can_register and peer.requires_auth
    assert peer.context == "internal"
    assert peer.mailbox == [("1001", "default"), ("1002", "default")]
    assert peer.acl.allows("10.2.3.4") and peer.acl.allows("192.168.1.1")
    assert not peer.acl.allows("203.0.113.1")
    assert peer.nat == {"force_rport", "comedia"}
    assert peer.qualify == 2000
    assert peer.subscribemwi and peer.buggymwi
    assert peer.insecure == {"port", "invite"}
    assert peer.vmexten == "*97"
    assert peer.callerid == '"Alice" <1001>'
    assert (peer.language, peer.dtmfmode, peer.rtptimeout) == ("fr", "info", 60)
    assert peer.options["secret"] == "s3cret"


def test_chan_sip_defaults() -> None:
    peer = Peer.from_options("2000", {}, realtime=True)
    assert peer.type == "friend"
    assert peer.context == "default"
    assert peer.nat == {"force_rport"}
    assert peer.qualify == 0 and peer.qualifyfreq == 60
    assert peer.vmexten == "asterisk"
    assert peer.dtmfmode == "rfc2833"
    assert peer.transport == ("udp",)
    assert not peer.subscribemwi and not peer.buggymwi and not peer.insecure
    assert not peer.acl and peer.mailbox == []
    assert not peer.dynamic and not peer.can_register and not peer.requires_auth


def test_peer_from_a_realtime_row_with_empty_columns() -> None:
    row = {
        "name": "3001",
        "type": "peer",
        "host": "dynamic",
        "md5secret": "0123456789abcdef0123456789abcdef",
        "context": "",
        "mailbox": "3001",
        "nat": "no",
        "qualify": "150",
        "qualifyfreq": "30",
        "defaultuser": "",
        "username": "legacy",
        "transport": "tcp,udp",
    }
    peer = Peer.from_options("3001", row, realtime=True)
    assert peer.realtime and peer.can_register and peer.requires_auth
    assert peer.context == "default"  # an empty column is not a value
    assert peer.mailbox == [("3001", "default")]
    assert peer.nat == frozenset()
    assert (peer.qualify, peer.qualifyfreq) == (150, 30)
    assert peer.defaultuser == "legacy"  # old `username` column
    assert peer.transport == ("tcp", "udp")


class MultiRow(dict):
    """What storage's realtime Row looks like: `a;b` columns read through getall()."""

    def getall(self, name: str) -> list[str]:
        return [part for part in self[name].split(";") if part]


def test_realtime_multi_value_acl_columns_apply_in_column_order() -> None:
    # sippeers has `permit` before `deny`: chan_sip appends in that order, so a deny-all in
    # the deny column overrides the permits (a classic realtime surprise, kept on purpose).
    row = MultiRow(permit="10.0.0.0/8;192.168.0.0/16", deny="0.0.0.0/0")
    assert not Peer.from_options("x", row, realtime=True).acl.allows("10.1.1.1")
    row = MultiRow(deny="0.0.0.0/0", permit="10.0.0.0/8;192.168.0.0/16")
    peer = Peer.from_options("x", row, realtime=True)
    assert peer.acl.allows("192.168.9.9") and not peer.acl.allows("172.16.0.1")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("yes", {"force_rport", "comedia"}),
        ("no", set()),
        ("never", set()),
        ("force_rport", {"force_rport"}),
        ("comedia", {"comedia"}),
        ("auto_force_rport,auto_comedia", {"auto_force_rport", "auto_comedia"}),
        ("force_rport, bogus", {"force_rport"}),
    ],
)
def test_nat_words(value, expected) -> None:
    assert Peer.from_options("p", {"nat": value}, realtime=False).nat == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("very", {"port", "invite"}), ("yes", {"port"}), ("no", set()), ("invite", {"invite"})],
)
def test_insecure_words(value, expected) -> None:
    assert Peer.from_options("p", {"insecure": value}, realtime=False).insecure == expected


@pytest.mark.parametrize(("value", "expected"), [("yes", 2000), ("no", 0), ("500", 500), ("x", 0)])
def test_qualify_values(value, expected) -> None:
    assert Peer.from_options("p", {"qualify": value}, realtime=False).qualify == expected


def test_general_section_supplies_defaults_but_not_acls() -> None:
    general = [
        ("context", "from-phones"),
        ("nat", "no"),
        ("vmexten", "8500"),
        ("deny", "0.0.0.0/0"),
    ]
    peer = Peer.from_options("p", [("nat", "comedia")], realtime=False, defaults=general)
    assert peer.context == "from-phones"
    assert peer.vmexten == "8500"
    assert peer.nat == {"comedia"}
    assert not peer.acl
    assert "context" not in peer.options  # options are the peer's own lines


def test_contact_acl_is_separate_from_the_source_acl() -> None:
    peer = Peer.from_options(
        "p", [("contactdeny", "0.0.0.0/0"), ("contactpermit", "192.0.2.0/24")], realtime=False
    )
    assert not peer.acl
    assert peer.contactacl.allows("192.0.2.4") and not peer.contactacl.allows("10.0.0.1")


def test_bad_acl_makes_the_peer_unusable() -> None:
    with pytest.raises(ValueError):
        Peer.from_options("p", {"permit": "10.0.0.300"}, realtime=True)


def test_force_rport_decision() -> None:
    forced = Peer.from_options("p", {}, realtime=False)
    never = Peer.from_options("p", {"nat": "no"}, realtime=False)
    auto = Peer.from_options("p", {"nat": "auto_force_rport"}, realtime=False)
    assert forced.force_rport_for("192.168.1.5", "203.0.113.9")
    assert not never.force_rport_for("192.168.1.5", "203.0.113.9")
    assert auto.force_rport_for("192.168.1.5", "203.0.113.9")  # behind a NAT
    assert not auto.force_rport_for("203.0.113.9", "203.0.113.9")


def test_options_keep_the_whole_column_text() -> None:
    row = MultiRow(permit="10.0.0.0/8;192.168.0.0/16", Secret="x")
    assert Peer.from_options("p", row, realtime=True).options == {
        "permit": "10.0.0.0/8;192.168.0.0/16",
        "secret": "x",
    }
