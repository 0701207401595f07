"""flow: flows, versions, runs and node executions

Revision ID: 0002_flow
Revises: 0001_foundation
Create Date: 2025-01-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from typecase.server.infra import sql

revision: str = "0002_flow"
down_revision: str | Sequence[str] | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = ("flow",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("owner_id", sa.String(26), nullable=False),
        sa.Column("owner_role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("logo", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_version_id", sa.String(26), nullable=False),
        sa.Column("publish_time", sql.UTCDateTime(), nullable=True),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flows")),
        sa.UniqueConstraint("owner_id", "name", name="uq_flows_owner_id_name"),
    )
    op.create_index("ix_flows_update", "flows", ["update_time", "id"])
    op.create_index("ix_flows_status", "flows", ["status"])

    op.create_table(
        "flow_versions",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("flow_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("graph", sql.JSONType, nullable=False),
        sa.Column("from_version_id", sa.String(26), nullable=False),
        sa.Column("owner_id", sa.String(26), nullable=False),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_versions")),
        sa.UniqueConstraint("flow_id", "name", name="uq_flow_versions_flow_id_name"),
    )
    op.create_index("ix_flow_versions_flow_id_id", "flow_versions", ["flow_id", "id"])

    op.create_table(
        "flow_runs",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("flow_id", sa.String(26), nullable=False),
        sa.Column("version_id", sa.String(26), nullable=False),
        sa.Column("owner_id", sa.String(26), nullable=False),
        sa.Column("owner_role", sa.String(16), nullable=False),
        sa.Column("flow_owner_id", sa.String(26), nullable=False),
        sa.Column("flow_owner_role", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(26), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("inputs", sql.JSONType, nullable=False),
        sa.Column("outputs", sql.JSONType, nullable=False),
        sa.Column("graph", sql.JSONType, nullable=False),
        sa.Column("state", sql.JSONType, nullable=False),
        sa.Column("pending_input", sql.JSONType, nullable=True),
        sa.Column("error", sql.JSONType, nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("elapsed_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("replica", sa.String(128), nullable=False),
        sa.Column("lease_expire_time", sql.UTCDateTime(), nullable=True),
        sa.Column("create_time", sql.UTCDateTime(), nullable=False),
        sa.Column("update_time", sql.UTCDateTime(), nullable=False),
        sa.Column("end_time", sql.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_runs")),
    )
    op.create_index("ix_flow_runs_flow_id_id", "flow_runs", ["flow_id", "id"])
    op.create_index("ix_flow_runs_status_lease", "flow_runs", ["status", "lease_expire_time"])
    op.create_index("ix_flow_runs_session_id", "flow_runs", ["session_id"])

    op.create_table(
        "flow_run_nodes",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("run_id", sa.String(26), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("node_type", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("inputs", sql.JSONType, nullable=False),
        sa.Column("outputs", sql.JSONType, nullable=False),
        sa.Column("error", sql.JSONType, nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("start_time", sql.UTCDateTime(), nullable=True),
        sa.Column("end_time", sql.UTCDateTime(), nullable=True),
        sa.Column("elapsed_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_run_nodes")),
        sa.UniqueConstraint("run_id", "node_id", "attempt", name="uq_flow_run_nodes_run_id_node_id_attempt"),
    )
    op.create_index("ix_flow_run_nodes_run_id_id", "flow_run_nodes", ["run_id", "id"])


def downgrade() -> None:
    op.drop_table("flow_run_nodes")
    op.drop_table("flow_runs")
    op.drop_table("flow_versions")
    op.drop_table("flows")
