"""Federation relationships (SPIRE's federated_trust_domains table).

One row per trust domain this server federates with: where its bundle endpoint is
and how to authenticate it. The trust domain's bundle stays in ``bundles``.

Revision ID: 0003
Revises: 0002
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
AUTOINC: dict[str, Any] = {
    "sqlite_autoincrement": True, "mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    op.create_table(
        "federated_trust_domains",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("trust_domain", sa.String(255), nullable=False),
        sa.Column("bundle_endpoint_url", sa.String(2048), nullable=False),
        sa.Column("bundle_endpoint_profile", sa.String(64), nullable=False),
        sa.Column("endpoint_spiffe_id", sa.String(512), nullable=False),
        sa.Column("implicit", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("trust_domain", name="uix_federated_trust_domains_trust_domain"),
        **AUTOINC,
    )


def downgrade() -> None:
    op.drop_table("federated_trust_domains")
