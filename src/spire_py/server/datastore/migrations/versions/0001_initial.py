"""Initial schema: bundles, entries (+selectors, DNS names, federation), entry
events, attested nodes (+selectors, events), join tokens, CA journals.

Revision ID: 0001
Revises:
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
BLOB = sa.LargeBinary(16777215)  # MEDIUMBLOB on MySQL
# InnoDB with a binary (case-sensitive) collation on MySQL; ignored elsewhere.
TABLE: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
AUTOINC: dict[str, Any] = {"sqlite_autoincrement": True, **TABLE}


def _id() -> "sa.Column[int]":
    return sa.Column("id", ID, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "bundles",
        _id(),
        sa.Column("trust_domain", sa.String(255), nullable=False),
        sa.Column("data", BLOB, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("trust_domain", name="uix_bundles_trust_domain"),
        **AUTOINC,
    )
    op.create_table(
        "registered_entries",
        _id(),
        sa.Column("entry_id", sa.String(255), nullable=False),
        sa.Column("spiffe_id", sa.String(512), nullable=False),
        sa.Column("parent_id", sa.String(512), nullable=False),
        sa.Column("x509_svid_ttl", sa.Integer, nullable=False),
        sa.Column("jwt_svid_ttl", sa.Integer, nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("downstream", sa.Boolean, nullable=False),
        sa.Column("store_svid", sa.Boolean, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("hint", sa.String(255), nullable=False),
        sa.Column("revision_number", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("entry_id", name="uix_registered_entries_entry_id"),
        **AUTOINC,
    )
    op.create_index("idx_registered_entries_spiffe_id", "registered_entries", ["spiffe_id"])
    op.create_index("idx_registered_entries_parent_id", "registered_entries", ["parent_id"])
    op.create_index("idx_registered_entries_expires_at", "registered_entries", ["expires_at"])
    op.create_index("idx_registered_entries_hint", "registered_entries", ["hint"])

    op.create_table(
        "selectors",
        _id(),
        sa.Column(
            "registered_entry_id",
            ID,
            sa.ForeignKey("registered_entries.id", ondelete="CASCADE", name="fk_selectors_entry"),
            nullable=False,
        ),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("value", sa.String(512), nullable=False),
        sa.UniqueConstraint("registered_entry_id", "type", "value", name="uix_selectors_entry"),
        **AUTOINC,
    )
    op.create_index("idx_selectors_type_value", "selectors", ["type", "value"])

    op.create_table(
        "dns_names",
        _id(),
        sa.Column(
            "registered_entry_id",
            ID,
            sa.ForeignKey("registered_entries.id", ondelete="CASCADE", name="fk_dns_names_entry"),
            nullable=False,
        ),
        sa.Column("value", sa.String(255), nullable=False),
        sa.UniqueConstraint("registered_entry_id", "value", name="uix_dns_names_entry"),
        **AUTOINC,
    )

    op.create_table(
        "federated_registration_entries",
        sa.Column(
            "registered_entry_id",
            ID,
            sa.ForeignKey("registered_entries.id", ondelete="CASCADE", name="fk_federated_entry"),
            nullable=False,
        ),
        sa.Column(
            "bundle_id",
            ID,
            sa.ForeignKey("bundles.id", name="fk_federated_bundle"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "registered_entry_id", "bundle_id", name="pk_federated_registration_entries"
        ),
        **TABLE,
    )
    op.create_index(
        "idx_federated_registration_entries_bundle_id",
        "federated_registration_entries",
        ["bundle_id"],
    )

    op.create_table(
        "registered_entries_events",
        _id(),
        sa.Column("entry_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        **AUTOINC,
    )
    op.create_index(
        "idx_registered_entries_events_created_at", "registered_entries_events", ["created_at"]
    )

    op.create_table(
        "attested_node_entries",
        _id(),
        sa.Column("spiffe_id", sa.String(512), nullable=False),
        sa.Column("data_type", sa.String(255), nullable=False),
        sa.Column("serial_number", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("new_serial_number", sa.String(255), nullable=False),
        sa.Column("new_expires_at", sa.BigInteger, nullable=False),
        sa.Column("can_reattest", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("spiffe_id", name="uix_attested_node_entries_spiffe_id"),
        **AUTOINC,
    )
    op.create_index(
        "idx_attested_node_entries_expires_at", "attested_node_entries", ["expires_at"]
    )

    op.create_table(
        "attested_node_entries_events",
        _id(),
        sa.Column("spiffe_id", sa.String(512), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        **AUTOINC,
    )
    op.create_index(
        "idx_attested_node_entries_events_created_at",
        "attested_node_entries_events",
        ["created_at"],
    )

    op.create_table(
        "node_resolver_map_entries",
        _id(),
        sa.Column("spiffe_id", sa.String(512), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("value", sa.String(512), nullable=False),
        **AUTOINC,
    )
    op.create_index(
        "idx_node_resolver_map_entries_spiffe_id", "node_resolver_map_entries", ["spiffe_id"]
    )
    op.create_index(
        "idx_node_resolver_map_entries_type_value",
        "node_resolver_map_entries",
        ["type", "value"],
    )

    op.create_table(
        "join_tokens",
        _id(),
        sa.Column("token", sa.String(255), nullable=False),
        sa.Column("expiry", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("token", name="uix_join_tokens_token"),
        **AUTOINC,
    )
    op.create_index("idx_join_tokens_expiry", "join_tokens", ["expiry"])

    op.create_table(
        "ca_journals",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("data", BLOB, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        **TABLE,
    )


def downgrade() -> None:
    for table in (
        "ca_journals",
        "join_tokens",
        "node_resolver_map_entries",
        "attested_node_entries_events",
        "attested_node_entries",
        "registered_entries_events",
        "federated_registration_entries",
        "dns_names",
        "selectors",
        "registered_entries",
        "bundles",
    ):
        op.drop_table(table)
