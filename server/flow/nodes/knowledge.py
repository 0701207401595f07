"""Knowledge retrieval: {"kb_ids": [...], "query": template, "top_k", "mode": hybrid|vector|keyword,
"score_threshold", "rerank_model_id"}. Searches through the knowledge service with the rights the flow chose
(Flow.run_as): by default the rights of the user running it, so a published flow never reads, for someone, a base
that person may not read (a base they cannot read fails the node with PERMISSION_DENIED); or, when its owner
chose so, the owner's rights (the flow answers every runner from the bases its author chose). Outputs `chunks`
(hits), `citations` (Citation JSON), `context` (numbered passages ready for a prompt), `count` and `query`."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from typecase.server.flow.nodes.base import (
    NodeContext,
    NodeResult,
    NodeSpec,
    Problem,
    as_int,
    node_error,
    required,
    text_params,
)
from typecase.server.rpc.errors import TypecaseError
from typecase.v1 import common_pb2, flow_pb2, knowledge_pb2

MODES = {
    "": knowledge_pb2.SEARCH_MODE_UNSPECIFIED,
    "hybrid": knowledge_pb2.SEARCH_MODE_HYBRID,
    "vector": knowledge_pb2.SEARCH_MODE_VECTOR,
    "keyword": knowledge_pb2.SEARCH_MODE_KEYWORD,
}


def kb_ids(params: dict[str, Any]) -> list[str]:
    value = params.get("kb_ids") or []
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in value if v]


class KnowledgeRetrieval(NodeSpec):
    type = flow_pb2.NODE_TYPE_KNOWLEDGE_RETRIEVAL
    kind = "knowledge_retrieval"

    def validate(self, params):
        problems = required(params, "kb_ids", "query")
        if str(params.get("mode") or "").lower() not in MODES:
            problems.append(Problem("INVALID_PARAM", "mode must be hybrid, vector or keyword", "mode"))
        top_k = params.get("top_k")
        if top_k not in (None, "") and not (isinstance(top_k, (int, float)) and 1 <= top_k <= 100):
            problems.append(Problem("INVALID_PARAM", "top_k must be 1 to 100", "top_k"))
        return problems

    def outputs(self, params):
        return {"chunks", "citations", "context", "count", "query"}

    def template_params(self, params):
        return text_params(params, "query")

    async def run(self, ctx: NodeContext) -> NodeResult:
        knowledge = ctx.services.knowledge
        if knowledge is None:
            raise node_error("no knowledge service is running on this server", ctx.node_id, "UNAVAILABLE")
        query = (await ctx.render_async(ctx.params.get("query") or "")).strip()
        request = knowledge_pb2.SearchRequest(
            kb_ids=kb_ids(ctx.params),
            query=query,
            top_k=as_int(ctx.params.get("top_k"), 5),
            mode=MODES[str(ctx.params.get("mode") or "").lower()],
            score_threshold=float(ctx.params.get("score_threshold") or 0),
            rerank_model_id=str(ctx.params.get("rerank_model_id") or ""),
        )
        inputs = {"kb_ids": list(request.kb_ids), "query": query, "top_k": request.top_k}
        if not query:
            return NodeResult(
                outputs={"chunks": [], "citations": [], "context": "", "count": 0, "query": ""}, inputs=inputs
            )

        async def call():
            return await knowledge.search(request)

        if ctx.as_flow_owner is not None:
            found = await ctx.as_flow_owner(call)
        else:
            try:
                found = await call()
            except TypecaseError as exc:
                if exc.code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                    raise
                kb_id = exc.metadata.get("id", "")
                raise node_error(
                    f"knowledge base {kb_id!r} cannot be read by the user running this flow (it does not exist or "
                    "belongs to someone else): the flow searches with its caller's rights (run_as CALLER)",
                    ctx.node_id,
                    "PERMISSION_DENIED",
                    grpc.StatusCode.PERMISSION_DENIED,
                    kb_id=kb_id,
                ) from None
        chunks, citations, passages = [], [], []
        for i, hit in enumerate(found.hits, 1):
            citation = common_pb2.Citation(
                kb_id=hit.kb_id,
                file_id=hit.file_id,
                file_name=hit.file_name,
                chunk_id=hit.chunk_id,
                page=hit.page,
                text=hit.text,
                score=hit.score,
            )
            citations.append(
                json_format.MessageToDict(
                    citation, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
            )
            chunks.append(
                {
                    "chunk_id": hit.chunk_id,
                    "kb_id": hit.kb_id,
                    "file_id": hit.file_id,
                    "file_name": hit.file_name,
                    "text": hit.text,
                    "score": hit.score,
                    "page": hit.page,
                    "chunk_index": hit.chunk_index,
                }
            )
            passages.append(f"[{i}] {hit.file_name}: {hit.text}")
        usage = found.usage.prompt_tokens if found.HasField("usage") else 0
        return NodeResult(
            outputs={
                "chunks": chunks,
                "citations": citations,
                "context": "\n\n".join(passages),
                "count": len(chunks),
                "query": query,
            },
            inputs=inputs,
            prompt_tokens=usage,
        )
