"""The rules by which a realtime row is refused (storage/realtime_rows.py), one by one.

The end-to-end side (the server logs the row and goes on serving) is
tests/test_fault_bad_rows_e2e.py; here each rule is pinned, good rows included, so that a
rule too strict for rows Asterisk sites really have shows up as a failure too.
"""

from __future__ import annotations

import pytest

from storage.realtime_rows import Row, row_key, row_kind, row_problem


def test_row_kinds_follow_the_family_and_the_lookup() -> None:
    assert row_kind("voicemail", {"mailbox", "context"}) == "voicemail"
    assert row_kind("sippeers", {"name"}) == "peer"
    assert row_kind("extensions", {"context"}) == "extension"
    assert row_kind("mydialplan", {"exten", "context"}) == "extension"  # a switch's family
    assert row_kind("iaxpeers", {"name"}) is None  # unchecked


@pytest.mark.parametrize(
    "row",
    [
        {"context": "default", "mailbox": "1000", "password": "1234"},
        {"context": "default", "mailbox": "alice.smith", "maxmsg": "0", "email": "a@b.example"},
        {"context": "sales-east", "mailbox": "+15551234", "maxmsg": "9999", "fullname": "A\tB"},
    ],
)
def test_good_mailbox_rows_pass(row: dict[str, str]) -> None:
    assert row_problem("voicemail", Row(row)) is None


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"mailbox": "1000"}, "column context is NULL or empty"),
        ({"context": "default"}, "column mailbox is NULL or empty"),
        ({"context": "../x", "mailbox": "1"}, "column context '../x' is not a valid name"),
        ({"context": "a/b", "mailbox": "1"}, "column context 'a/b' is not a valid name"),
        ({"context": "default", "mailbox": ".."}, "column mailbox '..' is not a valid name"),
        ({"context": "default", "mailbox": "1", "maxmsg": "lots"}, "not a whole number"),
        ({"context": "default", "mailbox": "1", "maxmsg": "10000"}, "outside 0..9999"),
        ({"context": "default", "mailbox": "1", "maxsecs": "-1"}, "outside 0..86400"),
        ({"context": "default", "mailbox": "1", "email": "a@b\r\nBcc: c"}, "control characters"),
        ({"context": "default", "mailbox": "1", "pager": "x" * 5000}, "5000 characters long"),
    ],
)
def test_bad_mailbox_rows_are_refused_with_the_reason(row: dict[str, str], problem: str) -> None:
    found = row_problem("voicemail", Row(row))
    assert found is not None and problem in found, found


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"name": "6001", "host": "dynamic", "port": "5060"}, None),
        ({"name": "trunk", "host": "pbx.example.com"}, None),
        ({"name": "v6", "host": "[2001:db8::1]"}, None),
        ({"name": "50%", "host": "10.0.0.2"}, None),
        ({"host": "dynamic"}, "column name is NULL or empty"),
        ({"name": "x", "host": "a host"}, "is not a host name or address"),
        ({"name": "x", "port": "0"}, "outside 1..65535"),
        ({"name": "x", "port": "sip"}, "not a whole number"),
        ({"name": "x", "context": "../etc"}, "is not a valid name"),
    ],
)
def test_peer_rows(row: dict[str, str], problem: str | None) -> None:
    found = row_problem("peer", Row(row))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"context": "d", "exten": "_8XXXX", "priority": "1", "app": "VoiceMail"}, None),
        ({"context": "d", "exten": "s", "priority": "2", "app": "Hangup"}, None),
        ({"context": "d", "exten": "1", "app": "Hangup"}, "priority is NULL or empty"),
        ({"context": "d", "exten": "1", "priority": "0", "app": "Hangup"}, "outside 1..100000"),
        ({"context": "d", "exten": "1", "priority": "n", "app": "Hangup"}, "not a whole number"),
        ({"context": "d", "exten": "1", "priority": "1"}, "is not an application name"),
        ({"context": "d", "exten": "1", "priority": "1", "app": "A;B"}, "not an application"),
        ({"context": "d", "exten": "a b", "priority": "1", "app": "X"}, "not a valid extension"),
        ({"exten": "1", "priority": "1", "app": "X"}, "context or exten is NULL or empty"),
    ],
)
def test_extension_rows(row: dict[str, str], problem: str | None) -> None:
    found = row_problem("extension", Row(row))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_the_log_names_a_row_by_its_key_columns() -> None:
    row = Row({"uniqueid": "7", "context": "../x", "mailbox": "2004", "password": "1"})
    assert row_key("voicemail", row) == "uniqueid='7' context='../x' mailbox='2004'"
    assert row_key("peer", Row({"host": "h"})) == "(no key columns)"
