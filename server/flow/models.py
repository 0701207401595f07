"""SQL tables of the flow domain: flows, their versions, runs and the node executions of runs.

A run's row is its checkpoint: the graph it runs (a snapshot, so editing the version never changes a run in
progress), the scheduler state (node outputs, ready and waiting nodes, edge arrivals) and the pending input
request are rewritten after every node, so that any replica can continue the run from there. No foreign keys to
other domains' tables (users, sessions): domains reach each other through their services.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from typecase.server.infra.sql import Base, JSONType, id_column, utcnow

# Flow statuses as stored.
DRAFT, ONLINE = "draft", "online"
# Run statuses as stored (the RunStatus enum without its prefix, lower case).
RUNNING, WAITING, FINISHED, FAILED, STOPPED = "running", "waiting_input", "finished", "failed", "stopped"
# Whose rights runs search knowledge bases with (the FlowRunAs enum without its prefix, lower case).
RUN_AS_CALLER, RUN_AS_OWNER = "caller", "owner"
ENDED = (FINISHED, FAILED, STOPPED)


class FlowRow(Base):
    __tablename__ = "flows"
    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_flows_owner_id_name"),
        Index("ix_flows_update", "update_time", "id"),
        Index("ix_flows_status", "status"),
    )

    id: Mapped[str] = id_column()
    owner_id: Mapped[str] = mapped_column(String(26))
    # The owner's role when the flow was created: the rights of runs that run as the owner.
    owner_role: Mapped[str] = mapped_column(String(16), default="user")
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    logo: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=DRAFT)
    current_version_id: Mapped[str] = mapped_column(String(26), default="")
    run_as: Mapped[str] = mapped_column(String(16), default=RUN_AS_CALLER)
    publish_time: Mapped[datetime | None]
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)


class FlowVersionRow(Base):
    __tablename__ = "flow_versions"
    __table_args__ = (
        UniqueConstraint("flow_id", "name", name="uq_flow_versions_flow_id_name"),
        Index("ix_flow_versions_flow_id_id", "flow_id", "id"),
    )

    id: Mapped[str] = id_column()
    flow_id: Mapped[str] = mapped_column(String(26))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    graph: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # Graph as proto JSON
    from_version_id: Mapped[str] = mapped_column(String(26), default="")
    owner_id: Mapped[str] = mapped_column(String(26))
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)


class FlowRunRow(Base):
    """One execution of a flow version. While `running`, the replica executing it renews `lease_expire_time`;
    a running run whose lease lapsed lost its replica and is continued by whichever replica claims it first."""

    __tablename__ = "flow_runs"
    __table_args__ = (
        Index("ix_flow_runs_flow_id_id", "flow_id", "id"),
        Index("ix_flow_runs_status_lease", "status", "lease_expire_time"),
        Index("ix_flow_runs_session_id", "session_id"),
    )

    id: Mapped[str] = id_column()
    flow_id: Mapped[str] = mapped_column(String(26))
    version_id: Mapped[str] = mapped_column(String(26))
    owner_id: Mapped[str] = mapped_column(String(26))
    owner_role: Mapped[str] = mapped_column(String(16), default="user")
    flow_owner_id: Mapped[str] = mapped_column(String(26), default="")
    flow_owner_role: Mapped[str] = mapped_column(String(16), default="user")
    run_as: Mapped[str] = mapped_column(String(16), default=RUN_AS_CALLER)  # the flow's, when the run started
    session_id: Mapped[str] = mapped_column(String(26), default="")
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    graph: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # snapshot of the version's graph
    state: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # scheduler checkpoint (engine/state.py)
    pending_input: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # InputRequired as proto JSON
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # google.rpc.Status as proto JSON
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    elapsed_ms: Mapped[int] = mapped_column(BigInteger, default=0)  # active time, excluding waits for input
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    replica: Mapped[str] = mapped_column(String(128), default="")
    lease_expire_time: Mapped[datetime | None]
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)
    end_time: Mapped[datetime | None]


class FlowRunNodeRow(Base):
    """One execution of one node in a run (a node re-entered by a loop has one row per attempt)."""

    __tablename__ = "flow_run_nodes"
    __table_args__ = (
        UniqueConstraint("run_id", "node_id", "attempt", name="uq_flow_run_nodes_run_id_node_id_attempt"),
        Index("ix_flow_run_nodes_run_id_id", "run_id", "id"),
    )

    id: Mapped[str] = id_column()
    run_id: Mapped[str] = mapped_column(String(26))
    node_id: Mapped[str] = mapped_column(String(64))
    node_type: Mapped[int] = mapped_column(Integer, default=0)
    node_name: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16))  # running | waiting_input | succeeded | failed | skipped | stopped
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    start_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]
    elapsed_ms: Mapped[int] = mapped_column(BigInteger, default=0)
