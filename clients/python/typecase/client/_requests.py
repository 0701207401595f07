"""Request builders shared by the sync and asyncio clients: keyword arguments in, request messages out."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2, timestamp_pb2

from typecase.client._upload import to_struct
from typecase.v1 import admin_pb2, auth_pb2, chat_pb2, common_pb2, flow_pb2, knowledge_pb2, llm_pb2

Role = Literal["system", "user", "assistant", "tool"]
MessageLike = llm_pb2.ChatMessage | Mapping[str, str] | tuple[str, str]
Messages = str | Sequence[MessageLike]
Struct = Mapping[str, Any] | struct_pb2.Struct

_ROLES: dict[str, common_pb2.MessageRole] = {
    "system": common_pb2.MESSAGE_ROLE_SYSTEM,
    "user": common_pb2.MESSAGE_ROLE_USER,
    "assistant": common_pb2.MESSAGE_ROLE_ASSISTANT,
    "tool": common_pb2.MESSAGE_ROLE_TOOL,
}
_USER_ROLES: dict[str, auth_pb2.UserRole] = {"admin": auth_pb2.USER_ROLE_ADMIN, "user": auth_pb2.USER_ROLE_USER}
_FEEDBACK: dict[str, chat_pb2.FeedbackAction] = {
    "like": chat_pb2.FEEDBACK_ACTION_LIKE,
    "dislike": chat_pb2.FEEDBACK_ACTION_DISLIKE,
    "cancel": chat_pb2.FEEDBACK_ACTION_CANCEL,
    "copied": chat_pb2.FEEDBACK_ACTION_COPIED,
}
_SEARCH_MODES: dict[str, knowledge_pb2.SearchMode] = {
    "vector": knowledge_pb2.SEARCH_MODE_VECTOR,
    "keyword": knowledge_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": knowledge_pb2.SEARCH_MODE_HYBRID,
}


def new_request_id() -> str:
    return uuid.uuid4().hex


def mask(**fields: object) -> tuple[list[str], dict[str, Any]]:
    """The update_mask paths and values of the keyword arguments that were given (not None)."""
    given = {name: value for name, value in fields.items() if value is not None}
    return sorted(given), given


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def duration(value: float | timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    result = duration_pb2.Duration()
    result.FromTimedelta(value if isinstance(value, timedelta) else timedelta(seconds=value))
    return result


def chat_messages(messages: Messages) -> list[llm_pb2.ChatMessage]:
    """A prompt string (one user message), or messages as ChatMessage, {"role", "content"} or (role, content)."""
    if isinstance(messages, str):
        return [llm_pb2.ChatMessage(role=common_pb2.MESSAGE_ROLE_USER, content=messages)]
    result = []
    for item in messages:
        if isinstance(item, llm_pb2.ChatMessage):
            result.append(item)
            continue
        role, content = (item["role"], item.get("content", "")) if isinstance(item, Mapping) else item
        if role not in _ROLES:
            raise ValueError(f"unknown role {role!r}: use one of {', '.join(_ROLES)}")
        result.append(llm_pb2.ChatMessage(role=_ROLES[role], content=content))
    return result


def generation_config(
    temperature: float | None, max_tokens: int | None, stop: Sequence[str] | None, top_p: float | None = None,
    seed: int | None = None,
) -> llm_pb2.GenerationConfig:
    config = llm_pb2.GenerationConfig(stop=list(stop or ()))
    if temperature is not None:
        config.temperature = temperature
    if max_tokens is not None:
        config.max_tokens = max_tokens
    if top_p is not None:
        config.top_p = top_p
    if seed is not None:
        config.seed = seed
    return config


# -- auth -------------------------------------------------------------------------------------------------------
def create_user(username: str, password: str, role: str, display_name: str, email: str) -> auth_pb2.CreateUserRequest:
    if role not in _USER_ROLES:
        raise ValueError(f"role must be one of {', '.join(_USER_ROLES)}")
    return auth_pb2.CreateUserRequest(user=auth_pb2.User(
        username=username, password=password, role=_USER_ROLES[role], display_name=display_name, email=email,
    ))


def create_api_key(name: str, owner_id: str, expire_time: datetime | None,
                   scopes: Sequence[str] = ()) -> auth_pb2.CreateApiKeyRequest:
    return auth_pb2.CreateApiKeyRequest(
        api_key=auth_pb2.ApiKey(name=name, owner_id=owner_id, expire_time=timestamp(expire_time), scopes=scopes),
    )


def create_invite_code(note: str, max_uses: int, role: str,
                       expire_time: datetime | None) -> auth_pb2.CreateInviteCodeRequest:
    if role not in _USER_ROLES:
        raise ValueError(f"role must be one of {', '.join(_USER_ROLES)}")
    return auth_pb2.CreateInviteCodeRequest(invite_code=auth_pb2.InviteCode(
        note=note, max_uses=max_uses, role=_USER_ROLES[role], expire_time=timestamp(expire_time),
    ))


# -- llm --------------------------------------------------------------------------------------------------------
def list_models(model_type: str | None, online: bool | None, provider_id: str, keyword: str,
                page_size: int) -> llm_pb2.ListModelsRequest:
    types = {"llm": llm_pb2.MODEL_TYPE_LLM, "embedding": llm_pb2.MODEL_TYPE_EMBEDDING, "rerank": llm_pb2.MODEL_TYPE_RERANK}
    if model_type is not None and model_type not in types:
        raise ValueError(f"model_type must be one of {', '.join(types)}")
    request = llm_pb2.ListModelsRequest(
        type=types[model_type] if model_type else llm_pb2.MODEL_TYPE_UNSPECIFIED, provider_id=provider_id,
        keyword=keyword, page_size=page_size,
    )
    if online is not None:
        request.online = online
    return request


# -- chat -------------------------------------------------------------------------------------------------------
def create_session(
    title: str, model_id: str, flow_id: str, system_prompt: str, kb_ids: Iterable[str], metadata: Struct | None,
    assistant_id: str = "", variables: dict[str, str] | None = None,
) -> chat_pb2.CreateSessionRequest:
    return chat_pb2.CreateSessionRequest(session=chat_pb2.Session(
        title=title, model_id=model_id, flow_id=flow_id, system_prompt=system_prompt, kb_ids=list(kb_ids),
        metadata=to_struct(metadata), assistant_id=assistant_id, variables=dict(variables or {}),
    ))


def update_session(session_id: str, **fields: object) -> chat_pb2.UpdateSessionRequest:
    paths, values = mask(**fields)
    if not paths:
        raise ValueError("nothing to update")
    session = chat_pb2.Session(id=session_id)
    for name, value in values.items():
        if name == "kb_ids":
            session.kb_ids.extend(value)
        elif name == "metadata":
            session.metadata.CopyFrom(to_struct(value) or struct_pb2.Struct())
        else:
            setattr(session, name, value)
    return chat_pb2.UpdateSessionRequest(session=session, update_mask=field_mask_pb2.FieldMask(paths=paths))


def chat(
    session_id: str, content: str, *, model_id: str | None, temperature: float | None, max_tokens: int | None,
    request_id: str | None, stop_on_disconnect: bool, attachments: Sequence[chat_pb2.Attachment],
    input_node_id: str, input: Struct | None,
) -> chat_pb2.ChatRequest:
    request = chat_pb2.ChatRequest(
        session_id=session_id, content=content, attachments=list(attachments), stop_on_disconnect=stop_on_disconnect,
        input_node_id=input_node_id, input=to_struct(input), request_id=request_id or new_request_id(),
    )
    if model_id is not None:
        request.model_id = model_id
    if temperature is not None:
        request.temperature = temperature
    if max_tokens is not None:
        request.max_tokens = max_tokens
    return request


def feedback(message_id: str, action: str, comment: str) -> chat_pb2.SetMessageFeedbackRequest:
    if action not in _FEEDBACK:
        raise ValueError(f"action must be one of {', '.join(_FEEDBACK)}")
    return chat_pb2.SetMessageFeedbackRequest(message_id=message_id, action=_FEEDBACK[action], comment=comment)


def message_pairs(pairs: Iterable[tuple[str, str] | chat_pb2.MessagePair]) -> list[chat_pb2.MessagePair]:
    return [p if isinstance(p, chat_pb2.MessagePair) else chat_pb2.MessagePair(question=p[0], answer=p[1])
            for p in pairs]


# -- knowledge --------------------------------------------------------------------------------------------------
def create_knowledge_base(
    name: str, description: str, embedding_model_id: str, chunking_rule: knowledge_pb2.ChunkingRule | None,
    kind: str = "documents",
) -> knowledge_pb2.CreateKnowledgeBaseRequest:
    kinds = {"documents": knowledge_pb2.KNOWLEDGE_BASE_KIND_DOCUMENTS, "qa": knowledge_pb2.KNOWLEDGE_BASE_KIND_QA}
    if kind not in kinds:
        raise ValueError(f"kind must be one of {', '.join(kinds)}")
    return knowledge_pb2.CreateKnowledgeBaseRequest(knowledge_base=knowledge_pb2.KnowledgeBase(
        name=name, description=description, embedding_model_id=embedding_model_id, chunking_rule=chunking_rule,
        kind=kinds[kind],
    ))


def search(
    kb_ids: str | Iterable[str], query: str, *, top_k: int, mode: str | None, score_threshold: float,
    vector_weight: float | None, file_ids: Iterable[str], tags: Iterable[str], metadata: Struct | None,
    rerank_model_id: str,
) -> knowledge_pb2.SearchRequest:
    if mode is not None and mode not in _SEARCH_MODES:
        raise ValueError(f"mode must be one of {', '.join(_SEARCH_MODES)}")
    request = knowledge_pb2.SearchRequest(
        kb_ids=[kb_ids] if isinstance(kb_ids, str) else list(kb_ids), query=query, top_k=top_k,
        mode=_SEARCH_MODES[mode] if mode else knowledge_pb2.SEARCH_MODE_UNSPECIFIED, score_threshold=score_threshold,
        filter=knowledge_pb2.SearchFilter(file_ids=list(file_ids), tags=list(tags), metadata=to_struct(metadata)),
        rerank_model_id=rerank_model_id,
    )
    if vector_weight is not None:
        request.vector_weight = vector_weight
    return request


def add_text(
    kb_id: str, name: str, text: str, chunking_rule: knowledge_pb2.ChunkingRule | None, tags: Iterable[str],
    metadata: Struct | None,
) -> knowledge_pb2.AddTextFileRequest:
    return knowledge_pb2.AddTextFileRequest(
        kb_id=kb_id, name=name, text=text, chunking_rule=chunking_rule, tags=list(tags), metadata=to_struct(metadata),
    )


# -- flows ------------------------------------------------------------------------------------------------------
def create_flow(name: str, description: str, graph: flow_pb2.Graph | None) -> flow_pb2.CreateFlowRequest:
    return flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=name, description=description, graph=graph))


def run_flow(flow_id: str, inputs: Struct | None, version_id: str, session_id: str,
             stop_on_disconnect: bool) -> flow_pb2.RunFlowRequest:
    return flow_pb2.RunFlowRequest(
        flow_id=flow_id, inputs=to_struct(inputs), version_id=version_id, session_id=session_id,
        stop_on_disconnect=stop_on_disconnect,
    )


def resume_run(run_id: str, node_id: str, input: Struct | None, stop_on_disconnect: bool) -> flow_pb2.ResumeRunRequest:
    return flow_pb2.ResumeRunRequest(run_id=run_id, node_id=node_id, input=to_struct(input),
                                     stop_on_disconnect=stop_on_disconnect)


# -- admin ------------------------------------------------------------------------------------------------------
def get_stats(window: float | timedelta | None, recent_limit: int) -> admin_pb2.GetStatsRequest:
    return admin_pb2.GetStatsRequest(window=duration(window), recent_limit=recent_limit)
