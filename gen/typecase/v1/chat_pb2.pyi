import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from typecase.v1 import common_pb2 as _common_pb2
from typecase.v1 import flow_pb2 as _flow_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_KIND_UNSPECIFIED: _ClassVar[SessionKind]
    SESSION_KIND_MODEL: _ClassVar[SessionKind]
    SESSION_KIND_FLOW: _ClassVar[SessionKind]
    SESSION_KIND_ASSISTANT: _ClassVar[SessionKind]

class MessageCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_CATEGORY_UNSPECIFIED: _ClassVar[MessageCategory]
    MESSAGE_CATEGORY_QUESTION: _ClassVar[MessageCategory]
    MESSAGE_CATEGORY_ANSWER: _ClassVar[MessageCategory]
    MESSAGE_CATEGORY_GUIDE: _ClassVar[MessageCategory]
    MESSAGE_CATEGORY_INPUT_REQUEST: _ClassVar[MessageCategory]
    MESSAGE_CATEGORY_NOTICE: _ClassVar[MessageCategory]

class MessageStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_STATUS_UNSPECIFIED: _ClassVar[MessageStatus]
    MESSAGE_STATUS_COMPLETE: _ClassVar[MessageStatus]
    MESSAGE_STATUS_STREAMING: _ClassVar[MessageStatus]
    MESSAGE_STATUS_STOPPED: _ClassVar[MessageStatus]
    MESSAGE_STATUS_FAILED: _ClassVar[MessageStatus]

class MessageRating(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_RATING_UNSPECIFIED: _ClassVar[MessageRating]
    MESSAGE_RATING_LIKE: _ClassVar[MessageRating]
    MESSAGE_RATING_DISLIKE: _ClassVar[MessageRating]

class FeedbackAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_ACTION_UNSPECIFIED: _ClassVar[FeedbackAction]
    FEEDBACK_ACTION_LIKE: _ClassVar[FeedbackAction]
    FEEDBACK_ACTION_DISLIKE: _ClassVar[FeedbackAction]
    FEEDBACK_ACTION_CANCEL: _ClassVar[FeedbackAction]
    FEEDBACK_ACTION_COPIED: _ClassVar[FeedbackAction]
SESSION_KIND_UNSPECIFIED: SessionKind
SESSION_KIND_MODEL: SessionKind
SESSION_KIND_FLOW: SessionKind
SESSION_KIND_ASSISTANT: SessionKind
MESSAGE_CATEGORY_UNSPECIFIED: MessageCategory
MESSAGE_CATEGORY_QUESTION: MessageCategory
MESSAGE_CATEGORY_ANSWER: MessageCategory
MESSAGE_CATEGORY_GUIDE: MessageCategory
MESSAGE_CATEGORY_INPUT_REQUEST: MessageCategory
MESSAGE_CATEGORY_NOTICE: MessageCategory
MESSAGE_STATUS_UNSPECIFIED: MessageStatus
MESSAGE_STATUS_COMPLETE: MessageStatus
MESSAGE_STATUS_STREAMING: MessageStatus
MESSAGE_STATUS_STOPPED: MessageStatus
MESSAGE_STATUS_FAILED: MessageStatus
MESSAGE_RATING_UNSPECIFIED: MessageRating
MESSAGE_RATING_LIKE: MessageRating
MESSAGE_RATING_DISLIKE: MessageRating
FEEDBACK_ACTION_UNSPECIFIED: FeedbackAction
FEEDBACK_ACTION_LIKE: FeedbackAction
FEEDBACK_ACTION_DISLIKE: FeedbackAction
FEEDBACK_ACTION_CANCEL: FeedbackAction
FEEDBACK_ACTION_COPIED: FeedbackAction

class Attachment(_message.Message):
    __slots__ = ("name", "mime_type", "size_bytes", "url", "file_id", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    mime_type: str
    size_bytes: int
    url: str
    file_id: str
    data: bytes
    def __init__(self, name: _Optional[str] = ..., mime_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., url: _Optional[str] = ..., file_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("id", "owner_id", "title", "kind", "model_id", "flow_id", "flow_version_id", "system_prompt", "kb_ids", "app_name", "latest_message_preview", "latest_message_time", "message_count", "like_count", "dislike_count", "copied_count", "metadata", "create_time", "update_time", "delete_time", "assistant_id", "variables")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    KB_IDS_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    LATEST_MESSAGE_PREVIEW_FIELD_NUMBER: _ClassVar[int]
    LATEST_MESSAGE_TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LIKE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DISLIKE_COUNT_FIELD_NUMBER: _ClassVar[int]
    COPIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    ASSISTANT_ID_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner_id: str
    title: str
    kind: SessionKind
    model_id: str
    flow_id: str
    flow_version_id: str
    system_prompt: str
    kb_ids: _containers.RepeatedScalarFieldContainer[str]
    app_name: str
    latest_message_preview: str
    latest_message_time: _timestamp_pb2.Timestamp
    message_count: int
    like_count: int
    dislike_count: int
    copied_count: int
    metadata: _struct_pb2.Struct
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    assistant_id: str
    variables: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., owner_id: _Optional[str] = ..., title: _Optional[str] = ..., kind: _Optional[_Union[SessionKind, str]] = ..., model_id: _Optional[str] = ..., flow_id: _Optional[str] = ..., flow_version_id: _Optional[str] = ..., system_prompt: _Optional[str] = ..., kb_ids: _Optional[_Iterable[str]] = ..., app_name: _Optional[str] = ..., latest_message_preview: _Optional[str] = ..., latest_message_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message_count: _Optional[int] = ..., like_count: _Optional[int] = ..., dislike_count: _Optional[int] = ..., copied_count: _Optional[int] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., assistant_id: _Optional[str] = ..., variables: _Optional[_Mapping[str, str]] = ...) -> None: ...

class NodeEvent(_message.Message):
    __slots__ = ("run_id", "node", "tool")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    node: _flow_pb2.NodeRun
    tool: _common_pb2.ToolStep
    def __init__(self, run_id: _Optional[str] = ..., node: _Optional[_Union[_flow_pb2.NodeRun, _Mapping]] = ..., tool: _Optional[_Union[_common_pb2.ToolStep, _Mapping]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "session_id", "turn_id", "role", "category", "content", "citations", "attachments", "steps", "input_required", "status", "error", "finish_reason", "usage", "model_id", "rating", "feedback_comment", "copied_count", "metadata", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    INPUT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_COMMENT_FIELD_NUMBER: _ClassVar[int]
    COPIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    session_id: str
    turn_id: str
    role: _common_pb2.MessageRole
    category: MessageCategory
    content: str
    citations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Citation]
    attachments: _containers.RepeatedCompositeFieldContainer[Attachment]
    steps: _containers.RepeatedCompositeFieldContainer[NodeEvent]
    input_required: _flow_pb2.InputRequired
    status: MessageStatus
    error: _status_pb2.Status
    finish_reason: _common_pb2.FinishReason
    usage: _common_pb2.Usage
    model_id: str
    rating: MessageRating
    feedback_comment: str
    copied_count: int
    metadata: _struct_pb2.Struct
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., session_id: _Optional[str] = ..., turn_id: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.MessageRole, str]] = ..., category: _Optional[_Union[MessageCategory, str]] = ..., content: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[_common_pb2.Citation, _Mapping]]] = ..., attachments: _Optional[_Iterable[_Union[Attachment, _Mapping]]] = ..., steps: _Optional[_Iterable[_Union[NodeEvent, _Mapping]]] = ..., input_required: _Optional[_Union[_flow_pb2.InputRequired, _Mapping]] = ..., status: _Optional[_Union[MessageStatus, str]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., model_id: _Optional[str] = ..., rating: _Optional[_Union[MessageRating, str]] = ..., feedback_comment: _Optional[str] = ..., copied_count: _Optional[int] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MessagePair(_message.Message):
    __slots__ = ("question", "answer", "citations", "metadata")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    question: str
    answer: str
    citations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Citation]
    metadata: _struct_pb2.Struct
    def __init__(self, question: _Optional[str] = ..., answer: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[_common_pb2.Citation, _Mapping]]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class TurnStarted(_message.Message):
    __slots__ = ("turn_id", "session_id", "question_message_id", "answer_message_id", "model_id", "run_id")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    session_id: str
    question_message_id: str
    answer_message_id: str
    model_id: str
    run_id: str
    def __init__(self, turn_id: _Optional[str] = ..., session_id: _Optional[str] = ..., question_message_id: _Optional[str] = ..., answer_message_id: _Optional[str] = ..., model_id: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class CitationEvent(_message.Message):
    __slots__ = ("citations",)
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    citations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Citation]
    def __init__(self, citations: _Optional[_Iterable[_Union[_common_pb2.Citation, _Mapping]]] = ...) -> None: ...

class ContextBudget(_message.Message):
    __slots__ = ("budget_tokens", "used_tokens", "dropped_turns")
    BUDGET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    USED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_TURNS_FIELD_NUMBER: _ClassVar[int]
    budget_tokens: int
    used_tokens: int
    dropped_turns: int
    def __init__(self, budget_tokens: _Optional[int] = ..., used_tokens: _Optional[int] = ..., dropped_turns: _Optional[int] = ...) -> None: ...

class TurnEnded(_message.Message):
    __slots__ = ("answer", "usage", "finish_reason", "context")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    answer: Message
    usage: _common_pb2.Usage
    finish_reason: _common_pb2.FinishReason
    context: ContextBudget
    def __init__(self, answer: _Optional[_Union[Message, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., context: _Optional[_Union[ContextBudget, _Mapping]] = ...) -> None: ...

class TurnEvent(_message.Message):
    __slots__ = ("time", "started", "token", "citation", "node", "input_required", "ended", "error")
    TIME_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CITATION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    INPUT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    started: TurnStarted
    token: _common_pb2.TokenDelta
    citation: CitationEvent
    node: NodeEvent
    input_required: _flow_pb2.InputRequired
    ended: TurnEnded
    error: _status_pb2.Status
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started: _Optional[_Union[TurnStarted, _Mapping]] = ..., token: _Optional[_Union[_common_pb2.TokenDelta, _Mapping]] = ..., citation: _Optional[_Union[CitationEvent, _Mapping]] = ..., node: _Optional[_Union[NodeEvent, _Mapping]] = ..., input_required: _Optional[_Union[_flow_pb2.InputRequired, _Mapping]] = ..., ended: _Optional[_Union[TurnEnded, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "keyword", "flow_id", "model_id", "owner_id", "kind", "show_deleted")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    keyword: str
    flow_id: str
    model_id: str
    owner_id: str
    kind: SessionKind
    show_deleted: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., keyword: _Optional[str] = ..., flow_id: _Optional[str] = ..., model_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., kind: _Optional[_Union[SessionKind, str]] = ..., show_deleted: _Optional[bool] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token", "total_size")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    next_page_token: str
    total_size: int
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class UpdateSessionRequest(_message.Message):
    __slots__ = ("session", "update_mask")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    session: Session
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CopySessionRequest(_message.Message):
    __slots__ = ("session_id", "title")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    title: str
    def __init__(self, session_id: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class CopySessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("session_id", "page_size", "page_token", "newest_first", "turn_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NEWEST_FIRST_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    page_size: int
    page_token: str
    newest_first: bool
    turn_id: str
    def __init__(self, session_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., newest_first: _Optional[bool] = ..., turn_id: _Optional[str] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_page_token")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    next_page_token: str
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AddMessagesRequest(_message.Message):
    __slots__ = ("session_id", "pairs")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    pairs: _containers.RepeatedCompositeFieldContainer[MessagePair]
    def __init__(self, session_id: _Optional[str] = ..., pairs: _Optional[_Iterable[_Union[MessagePair, _Mapping]]] = ...) -> None: ...

class AddMessagesResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

class UpdateMessageRequest(_message.Message):
    __slots__ = ("message", "update_mask")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    message: Message
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateMessageResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: Message
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class DeleteMessageRequest(_message.Message):
    __slots__ = ("message_id",)
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    def __init__(self, message_id: _Optional[str] = ...) -> None: ...

class DeleteMessageResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetMessageFeedbackRequest(_message.Message):
    __slots__ = ("message_id", "action", "comment")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    action: FeedbackAction
    comment: str
    def __init__(self, message_id: _Optional[str] = ..., action: _Optional[_Union[FeedbackAction, str]] = ..., comment: _Optional[str] = ...) -> None: ...

class SetMessageFeedbackResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: Message
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class DownloadAttachmentRequest(_message.Message):
    __slots__ = ("message_id", "index", "inline")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    index: int
    inline: bool
    def __init__(self, message_id: _Optional[str] = ..., index: _Optional[int] = ..., inline: _Optional[bool] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("session_id", "content", "attachments", "model_id", "temperature", "max_tokens", "stop_on_disconnect", "input_node_id", "input", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    INPUT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    content: str
    attachments: _containers.RepeatedCompositeFieldContainer[Attachment]
    model_id: str
    temperature: float
    max_tokens: int
    stop_on_disconnect: bool
    input_node_id: str
    input: _struct_pb2.Struct
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., content: _Optional[str] = ..., attachments: _Optional[_Iterable[_Union[Attachment, _Mapping]]] = ..., model_id: _Optional[str] = ..., temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ..., stop_on_disconnect: _Optional[bool] = ..., input_node_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("seq", "turn_id", "event")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    turn_id: str
    event: TurnEvent
    def __init__(self, seq: _Optional[int] = ..., turn_id: _Optional[str] = ..., event: _Optional[_Union[TurnEvent, _Mapping]] = ...) -> None: ...

class StopTurnRequest(_message.Message):
    __slots__ = ("turn_id",)
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    def __init__(self, turn_id: _Optional[str] = ...) -> None: ...

class StopTurnResponse(_message.Message):
    __slots__ = ("stopped",)
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    stopped: bool
    def __init__(self, stopped: _Optional[bool] = ...) -> None: ...

class StreamTurnEventsRequest(_message.Message):
    __slots__ = ("turn_id", "after_seq")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    after_seq: int
    def __init__(self, turn_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class StreamTurnEventsResponse(_message.Message):
    __slots__ = ("seq", "turn_id", "event")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    turn_id: str
    event: TurnEvent
    def __init__(self, seq: _Optional[int] = ..., turn_id: _Optional[str] = ..., event: _Optional[_Union[TurnEvent, _Mapping]] = ...) -> None: ...
