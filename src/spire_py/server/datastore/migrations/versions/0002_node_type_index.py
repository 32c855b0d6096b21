"""Index attested nodes by attestation type.

ListAgents / CountAgents filter by attestation type (``spire-server agent list
-attestationType``); without an index every database walks the whole table to
fill a page. Found by tests/unit/server/datastore/test_datastore_query_plans.py.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("idx_attested_node_entries_data_type", "attested_node_entries", ["data_type"])


def downgrade() -> None:
    op.drop_index("idx_attested_node_entries_data_type", table_name="attested_node_entries")
