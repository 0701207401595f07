# GENERATED from _async/admin.py by scripts/gen_sync.py: do not edit; edit that file, run `make sdk-gen`.
"""`client.admin`: platform statistics, configuration, logs and audit (AdminService; admin only)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from typecase.client import _requests as rq
from typecase.client._sync.resource import Resource
from typecase.v1 import admin_pb2, admin_pb2_grpc

if TYPE_CHECKING:
    from typecase.client._sync.client import Client


class Admin(Resource):
    """Platform statistics, configuration, logs and audit (AdminService; admin only)."""

    def __init__(self, client: Client, stub: admin_pb2_grpc.AdminServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    def stats(self, *, window: float | timedelta | None = None, recent_limit: int = 0,
              timeout: float | None = None) -> admin_pb2.GetStatsResponse:
        request = rq.get_stats(window, recent_limit)
        return self._unary(self.stub.GetStats, request, admin_pb2.GetStatsResponse, timeout)

    def config(self, *, category: str = "", timeout: float | None = None) -> admin_pb2.GetConfigResponse:
        request = admin_pb2.GetConfigRequest(category=category)
        return self._unary(self.stub.GetConfig, request, admin_pb2.GetConfigResponse, timeout)

    def update_config(self, values: Mapping[str, str], *, validate_only: bool = False,
                      timeout: float | None = None) -> admin_pb2.UpdateConfigResponse:
        request = admin_pb2.UpdateConfigRequest(values=dict(values), validate_only=validate_only)
        return self._unary(self.stub.UpdateConfig, request, admin_pb2.UpdateConfigResponse, timeout)

    def list_audit_events(self, *, actor_id: str = "", action: str = "", resource_type: str = "",
                          resource_id: str = "", page_size: int = 100,
                          timeout: float | None = None) -> Iterator[admin_pb2.AuditEvent]:
        request = admin_pb2.ListAuditEventsRequest(actor_id=actor_id, action=action, resource_type=resource_type,
                                                   resource_id=resource_id, page_size=page_size)
        return self._pages(self.stub.ListAuditEvents, request, "events", timeout)

    def stream_logs(self, *, query: str = "", tail: int = 0,
                    timeout: float | None = None) -> Iterator[admin_pb2.StreamLogsResponse]:
        """Follow the server's log lines (after the last `tail` ones) until cancelled or `timeout`."""
        request = admin_pb2.StreamLogsRequest(query=query, tail=tail)
        return self._stream(self.stub.StreamLogs(request, timeout=timeout))
