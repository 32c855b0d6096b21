"""Table definitions used by the queries (SQLAlchemy Core).

The migrations in ``migrations/versions`` create the same schema by hand; a unit
test compares the two so they cannot drift. Table names follow SPIRE's.

String lengths are chosen so every index fits MySQL/InnoDB's 3072-byte key limit
with utf8mb4 (4 bytes a character); the store checks lengths itself so sqlite3,
which does not enforce them, behaves like the other databases.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects.mysql import MEDIUMBLOB

# sqlite only makes "INTEGER PRIMARY KEY" an alias of the rowid.
ID = BigInteger().with_variant(Integer(), "sqlite")

SPIFFE_ID_LEN = 512
ENTRY_ID_LEN = 255
SELECTOR_TYPE_LEN = 128
SELECTOR_VALUE_LEN = 512
TRUST_DOMAIN_LEN = 255
HINT_LEN = 255
DNS_NAME_LEN = 255
SERIAL_LEN = 255
ATTESTATION_TYPE_LEN = 255
TOKEN_LEN = 255
CA_JOURNAL_ID_LEN = 255
URL_LEN = 2048
PROFILE_LEN = 64
# MySQL: BLOB(16777215) is a MEDIUMBLOB; bytea/BLOB elsewhere.
BLOB_LEN = 16777215
# Spelled as MySQL reflects it, so comparing the metadata with a migrated database finds no drift.
BLOB = LargeBinary(BLOB_LEN).with_variant(MEDIUMBLOB(), "mysql", "mariadb")

metadata = MetaData()

# MySQL: InnoDB, and a binary collation because SPIFFE IDs, selectors and join
# tokens compare case-sensitively (the default utf8mb4 collations do not).
_TABLE: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
# sqlite_autoincrement: never reuse an id, so event ids and page tokens only grow.
_AUTOINC: dict[str, Any] = {"sqlite_autoincrement": True, **_TABLE}

bundles = Table(
    "bundles",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("trust_domain", String(TRUST_DOMAIN_LEN), nullable=False),
    Column("data", BLOB, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("trust_domain", name="uix_bundles_trust_domain"),
    **_AUTOINC,
)

registered_entries = Table(
    "registered_entries",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("entry_id", String(ENTRY_ID_LEN), nullable=False),
    Column("spiffe_id", String(SPIFFE_ID_LEN), nullable=False),
    Column("parent_id", String(SPIFFE_ID_LEN), nullable=False),
    Column("x509_svid_ttl", Integer, nullable=False),
    Column("jwt_svid_ttl", Integer, nullable=False),
    Column("admin", Boolean, nullable=False),
    Column("downstream", Boolean, nullable=False),
    Column("store_svid", Boolean, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("hint", String(HINT_LEN), nullable=False),
    Column("revision_number", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("entry_id", name="uix_registered_entries_entry_id"),
    Index("idx_registered_entries_spiffe_id", "spiffe_id"),
    Index("idx_registered_entries_parent_id", "parent_id"),
    Index("idx_registered_entries_expires_at", "expires_at"),
    Index("idx_registered_entries_hint", "hint"),
    **_AUTOINC,
)

selectors = Table(
    "selectors",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column(
        "registered_entry_id",
        ID,
        ForeignKey("registered_entries.id", ondelete="CASCADE", name="fk_selectors_entry"),
        nullable=False,
    ),
    Column("type", String(SELECTOR_TYPE_LEN), nullable=False),
    Column("value", String(SELECTOR_VALUE_LEN), nullable=False),
    # Leads with the entry id, so it also serves "selectors of entry X".
    UniqueConstraint("registered_entry_id", "type", "value", name="uix_selectors_entry"),
    Index("idx_selectors_type_value", "type", "value"),
    **_AUTOINC,
)

dns_names = Table(
    "dns_names",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column(
        "registered_entry_id",
        ID,
        ForeignKey("registered_entries.id", ondelete="CASCADE", name="fk_dns_names_entry"),
        nullable=False,
    ),
    Column("value", String(DNS_NAME_LEN), nullable=False),
    UniqueConstraint("registered_entry_id", "value", name="uix_dns_names_entry"),
    **_AUTOINC,
)

federated_registration_entries = Table(
    "federated_registration_entries",
    metadata,
    Column(
        "registered_entry_id",
        ID,
        ForeignKey("registered_entries.id", ondelete="CASCADE", name="fk_federated_entry"),
        nullable=False,
    ),
    Column(
        "bundle_id",
        ID,
        ForeignKey("bundles.id", name="fk_federated_bundle"),
        nullable=False,
    ),
    PrimaryKeyConstraint("registered_entry_id", "bundle_id", name="pk_federated_registration_entries"),
    Index("idx_federated_registration_entries_bundle_id", "bundle_id"),
    **_TABLE,
)

registered_entries_events = Table(
    "registered_entries_events",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("entry_id", String(ENTRY_ID_LEN), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("idx_registered_entries_events_created_at", "created_at"),
    **_AUTOINC,
)

attested_node_entries = Table(
    "attested_node_entries",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("spiffe_id", String(SPIFFE_ID_LEN), nullable=False),
    Column("data_type", String(ATTESTATION_TYPE_LEN), nullable=False),
    Column("serial_number", String(SERIAL_LEN), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("new_serial_number", String(SERIAL_LEN), nullable=False),
    Column("new_expires_at", BigInteger, nullable=False),
    Column("can_reattest", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("spiffe_id", name="uix_attested_node_entries_spiffe_id"),
    Index("idx_attested_node_entries_expires_at", "expires_at"),
    Index("idx_attested_node_entries_data_type", "data_type"),  # migration 0002
    **_AUTOINC,
)

attested_node_entries_events = Table(
    "attested_node_entries_events",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("spiffe_id", String(SPIFFE_ID_LEN), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("idx_attested_node_entries_events_created_at", "created_at"),
    **_AUTOINC,
)

# Node selectors are keyed by SPIFFE ID (as in SPIRE) and may be set before the
# node row exists. (spiffe_id, type, value) would exceed MySQL's key limit, so
# uniqueness is kept by the store, which replaces the whole set at once.
node_resolver_map_entries = Table(
    "node_resolver_map_entries",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("spiffe_id", String(SPIFFE_ID_LEN), nullable=False),
    Column("type", String(SELECTOR_TYPE_LEN), nullable=False),
    Column("value", String(SELECTOR_VALUE_LEN), nullable=False),
    Index("idx_node_resolver_map_entries_spiffe_id", "spiffe_id"),
    Index("idx_node_resolver_map_entries_type_value", "type", "value"),
    **_AUTOINC,
)

join_tokens = Table(
    "join_tokens",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("token", String(TOKEN_LEN), nullable=False),
    Column("expiry", BigInteger, nullable=False),
    UniqueConstraint("token", name="uix_join_tokens_token"),
    Index("idx_join_tokens_expiry", "expiry"),
    **_AUTOINC,
)

ca_journals = Table(
    "ca_journals",
    metadata,
    Column("id", String(CA_JOURNAL_ID_LEN), primary_key=True),
    Column("data", BLOB, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    **_TABLE,
)

# Federation relationships (SPIRE's federated_trust_domains; migration 0003). The
# relationship's bundle lives in ``bundles`` under the same trust domain.
federated_trust_domains = Table(
    "federated_trust_domains",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("trust_domain", String(TRUST_DOMAIN_LEN), nullable=False),
    Column("bundle_endpoint_url", String(URL_LEN), nullable=False),
    Column("bundle_endpoint_profile", String(PROFILE_LEN), nullable=False),
    Column("endpoint_spiffe_id", String(SPIFFE_ID_LEN), nullable=False),
    Column("implicit", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("trust_domain", name="uix_federated_trust_domains_trust_domain"),
    **_AUTOINC,
)
