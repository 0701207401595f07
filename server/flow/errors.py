"""Flow domain errors."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

from typecase.server.rpc.errors import TypecaseError
from typecase.v1 import flow_pb2


class FlowInvalid(TypecaseError):
    """FLOW_INVALID: its status details carry, beside the ErrorInfo, a google.rpc.BadRequest with one field
    violation per problem (field: nodes[<id>].params.<param> or edges[<id>], description: "CODE: message")."""

    def __init__(self, problems: list[flow_pb2.ValidationProblem], flow_id: str = ""):
        first = problems[0] if problems else None
        summary = (
            f"{first.code} at node {first.node_id!r}: {first.message}"
            if first and first.node_id
            else (f"{first.code}: {first.message}" if first else "")
        )
        super().__init__(
            grpc.StatusCode.FAILED_PRECONDITION,
            "FLOW_INVALID",
            f"the flow does not validate ({len(problems)} problem{'s' if len(problems) != 1 else ''}): {summary}",
            {
                "flow_id": flow_id,
                "problems": str(len(problems)),
                "first_node_id": first.node_id if first else "",
                "first_code": first.code if first else "",
            },
        )
        self.problems = problems

    def to_status(self):
        status = super().to_status()
        request = error_details_pb2.BadRequest()
        for p in self.problems:
            if p.node_id:
                where = f"nodes[{p.node_id}]" + (f".params.{p.param}" if p.param else "")
            elif p.edge_id:
                where = f"edges[{p.edge_id}]"
            else:
                where = "graph"
            request.field_violations.add(field=where, description=f"{p.code}: {p.message}")
        packed = any_pb2.Any()
        packed.Pack(request)
        status.details.append(packed)
        return status


def not_editable(flow_id: str) -> TypecaseError:
    return TypecaseError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "FLOW_ONLINE_NOT_EDITABLE",
        "the flow is online: unpublish it first, or edit another version and make it current",
        {"flow_id": flow_id},
    )


def not_waiting(run_id: str, why: str) -> TypecaseError:
    return TypecaseError(grpc.StatusCode.FAILED_PRECONDITION, "RUN_NOT_WAITING", why, {"run_id": run_id})


def limit_exceeded(run_id: str, message: str, limit: str, code=grpc.StatusCode.RESOURCE_EXHAUSTED) -> TypecaseError:
    return TypecaseError(code, "RUN_LIMIT_EXCEEDED", message, {"run_id": run_id, "limit": limit})
