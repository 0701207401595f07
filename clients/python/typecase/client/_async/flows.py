"""`client.flows`: flows, their runs and resumable run streams (FlowService)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from typecase.client import _requests as rq
from typecase.client._async.resource import AsyncResource
from typecase.client._async.streams import AsyncRunStream
from typecase.v1 import flow_pb2, flow_pb2_grpc

if TYPE_CHECKING:
    from typecase.client._async.client import AsyncClient


class AsyncFlows(AsyncResource):
    """Flows, their runs and resumable run streams (FlowService)."""

    def __init__(self, client: AsyncClient, stub: flow_pb2_grpc.FlowServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    async def create_flow(self, name: str, *, graph: flow_pb2.Graph | None = None, description: str = "",
                          timeout: float | None = None) -> flow_pb2.Flow:
        request = rq.create_flow(name, description, graph)
        return (await self._unary(self.stub.CreateFlow, request, flow_pb2.CreateFlowResponse, timeout)).flow

    async def get_flow(self, flow_id: str, *, timeout: float | None = None) -> flow_pb2.Flow:
        request = flow_pb2.GetFlowRequest(flow_id=flow_id)
        return (await self._unary(self.stub.GetFlow, request, flow_pb2.GetFlowResponse, timeout)).flow

    def list_flows(self, *, keyword: str = "", page_size: int = 100,
                   timeout: float | None = None) -> AsyncIterator[flow_pb2.Flow]:
        request = flow_pb2.ListFlowsRequest(keyword=keyword, page_size=page_size)
        return self._pages(self.stub.ListFlows, request, "flows", timeout)

    async def delete_flow(self, flow_id: str, *, timeout: float | None = None) -> None:
        request = flow_pb2.DeleteFlowRequest(flow_id=flow_id)
        await self._unary(self.stub.DeleteFlow, request, flow_pb2.DeleteFlowResponse, timeout)

    async def publish(self, flow_id: str, *, version_id: str = "", timeout: float | None = None) -> flow_pb2.Flow:
        request = flow_pb2.PublishFlowRequest(flow_id=flow_id, version_id=version_id)
        return (await self._unary(self.stub.PublishFlow, request, flow_pb2.PublishFlowResponse, timeout)).flow

    async def unpublish(self, flow_id: str, *, timeout: float | None = None) -> flow_pb2.Flow:
        request = flow_pb2.UnpublishFlowRequest(flow_id=flow_id)
        return (await self._unary(self.stub.UnpublishFlow, request, flow_pb2.UnpublishFlowResponse, timeout)).flow

    def run(self, flow_id: str, inputs: rq.Struct | None = None, *, version_id: str = "", session_id: str = "",
            stop_on_disconnect: bool = False, timeout: float | None = None) -> AsyncRunStream:
        """Start a run and stream its events; reconnects from the last seq once the run id is known."""
        request = rq.run_flow(flow_id, inputs, version_id, session_id, stop_on_disconnect)
        return AsyncRunStream(self, lambda t: self.stub.RunFlow(request, timeout=t), timeout=timeout)

    def resume(self, run_id: str, after_seq: int = 0, *, timeout: float | None = None) -> AsyncRunStream:
        """Follow a run again from after `after_seq` (0: from its start)."""
        if after_seq < 0:
            raise ValueError("after_seq must not be negative")
        return AsyncRunStream(self, None, stream_id=run_id, after_seq=after_seq, timeout=timeout)

    def submit_input(self, run_id: str, node_id: str, input: rq.Struct | None = None, *,
                     stop_on_disconnect: bool = False, timeout: float | None = None) -> AsyncRunStream:
        """Answer a run's pending input request (ResumeRun) and stream its further events."""
        request = rq.resume_run(run_id, node_id, input, stop_on_disconnect)
        return AsyncRunStream(self, lambda t: self.stub.ResumeRun(request, timeout=t), timeout=timeout)

    async def get_run(self, run_id: str, *, timeout: float | None = None) -> flow_pb2.Run:
        request = flow_pb2.GetRunRequest(run_id=run_id)
        return (await self._unary(self.stub.GetRun, request, flow_pb2.GetRunResponse, timeout)).run

    async def stop_run(self, run_id: str, *, timeout: float | None = None) -> flow_pb2.Run:
        request = flow_pb2.StopRunRequest(run_id=run_id)
        return (await self._unary(self.stub.StopRun, request, flow_pb2.StopRunResponse, timeout)).run
