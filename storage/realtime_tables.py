"""Realtime tables besides `voicemail`: chan_sip's `sippeers` and the realtime switch's
`extensions`, as Asterisk's alembic scripts create them (later widenings included).

Asterisk's ENUM columns become short strings: they read the same through ODBC and need no
CREATE TYPE on PostgreSQL. Columns with a dash (`call-limit`, `session-timers`) are quoted
by SQLAlchemy's DDL; realtime.py quotes them in its SQL too.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, UniqueConstraint

from storage.identifiers import split_table_name

__all__ = ["extensions_table", "sippeers_table"]

_MYSQL_OPTIONS = {"mysql_engine": "InnoDB", "mysql_default_charset": "utf8mb4"}

# SQLite assigns keys only to an INTEGER PRIMARY KEY, not a BIGINT one.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

# (name, length) of Asterisk's enum columns: the longest allowed value.
_YES_NO = 3

# sippeers columns after id and name, in alembic order: (name, length or None for Integer).
_SIPPEERS_COLUMNS: tuple[tuple[str, int | None], ...] = (
    ("ipaddr", 45),
    ("port", None),
    ("regseconds", None),
    ("defaultuser", 40),
    ("fullcontact", 80),
    ("regserver", 20),
    ("useragent", 255),  # 20 in 4da0c5f79a9c, widened by 1758e8bbf6b
    ("lastms", None),
    ("host", 40),
    ("type", 6),  # friend/user/peer
    ("context", 40),
    ("permit", 95),
    ("deny", 95),
    ("secret", 40),
    ("md5secret", 40),
    ("remotesecret", 40),
    ("transport", 7),  # udp, tcp, tls, ws, wss, udp,tcp, tcp,udp
    ("dtmfmode", 9),  # rfc2833, info, shortinfo, inband, auto
    ("directmedia", 8),  # yes, no, nonat, update, outgoing
    ("nat", 29),
    ("callgroup", 40),
    ("pickupgroup", 40),
    ("language", 40),
    ("disallow", 200),
    ("allow", 200),
    ("insecure", 40),
    ("trustrpid", _YES_NO),
    ("progressinband", 5),  # yes, no, never
    ("promiscredir", _YES_NO),
    ("useclientcode", _YES_NO),
    ("accountcode", 80),  # 40, widened by 339a3bdf53fc
    ("setvar", 200),
    ("callerid", 40),
    ("amaflags", 40),
    ("callcounter", _YES_NO),
    ("busylevel", None),
    ("allowoverlap", _YES_NO),
    ("allowsubscribe", _YES_NO),
    ("videosupport", _YES_NO),
    ("maxcallbitrate", None),
    ("rfc2833compensate", _YES_NO),
    ("mailbox", 40),
    ("session-timers", 9),  # accept, refuse, originate
    ("session-expires", None),
    ("session-minse", None),
    ("session-refresher", 3),  # uac, uas
    ("t38pt_usertpsource", 40),
    ("regexten", 40),
    ("fromdomain", 40),
    ("fromuser", 40),
    ("qualify", 40),
    ("defaultip", 45),
    ("rtptimeout", None),
    ("rtpholdtimeout", None),
    ("sendrpid", _YES_NO),
    ("outboundproxy", 40),
    ("callbackextension", 40),
    ("timert1", None),
    ("timerb", None),
    ("qualifyfreq", None),
    ("constantssrc", _YES_NO),
    ("contactpermit", 95),
    ("contactdeny", 95),
    ("usereqphone", _YES_NO),
    ("textsupport", _YES_NO),
    ("faxdetect", _YES_NO),
    ("buggymwi", _YES_NO),
    ("auth", 40),
    ("fullname", 40),
    ("trunkname", 40),
    ("cid_number", 40),
    ("callingpres", 21),  # allowed_not_screened ... prohib
    ("mohinterpret", 40),
    ("mohsuggest", 40),
    ("parkinglot", 40),
    ("hasvoicemail", _YES_NO),
    ("subscribemwi", _YES_NO),
    ("vmexten", 40),
    ("autoframing", _YES_NO),
    ("rtpkeepalive", None),
    ("call-limit", None),
    ("g726nonstandard", _YES_NO),
    ("ignoresdpversion", _YES_NO),
    ("allowtransfer", _YES_NO),
    ("dynamic", _YES_NO),
    ("path", 256),
    ("supportpath", _YES_NO),
)


def sippeers_table(metadata: MetaData | None = None, name: str = "sippeers") -> Table:
    """chan_sip's realtime peer table (family `sippeers`), with Asterisk's four indexes."""
    schema, table_name = split_table_name(name)
    columns = [
        Column(column, Integer if length is None else String(length))
        for column, length in _SIPPEERS_COLUMNS
    ]
    table = Table(
        table_name,
        metadata if metadata is not None else MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(40), nullable=False, unique=True),
        *columns,
        schema=schema,
        quote=False,
        **_MYSQL_OPTIONS,
    )
    Index(f"{table_name}_name", table.c.name)
    Index(f"{table_name}_name_host", table.c.name, table.c.host)
    Index(f"{table_name}_ipaddr_port", table.c.ipaddr, table.c.port)
    Index(f"{table_name}_host_port", table.c.host, table.c.port)
    return table


def extensions_table(metadata: MetaData | None = None, name: str = "extensions") -> Table:
    """The realtime switch's dialplan table: one row per (context, exten, priority)."""
    schema, table_name = split_table_name(name)
    return Table(
        table_name,
        metadata if metadata is not None else MetaData(),
        Column("id", _BigId, primary_key=True, autoincrement=True),
        Column("context", String(40), nullable=False),
        Column("exten", String(40), nullable=False),
        Column("priority", Integer, nullable=False),
        Column("app", String(40), nullable=False),
        Column("appdata", String(256), nullable=False),
        UniqueConstraint(
            "context", "exten", "priority", name=f"{table_name}_context_exten_priority"
        ),
        schema=schema,
        quote=False,
        **_MYSQL_OPTIONS,
    )
