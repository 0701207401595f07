from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_ARGUMENT: _ClassVar[ErrorReason]
    ERROR_REASON_UNAUTHENTICATED: _ClassVar[ErrorReason]
    ERROR_REASON_PERMISSION_DENIED: _ClassVar[ErrorReason]
    ERROR_REASON_RATE_LIMITED: _ClassVar[ErrorReason]
    ERROR_REASON_PAYLOAD_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
    ERROR_REASON_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_UPSTREAM_RATE_LIMITED: _ClassVar[ErrorReason]
    ERROR_REASON_UPSTREAM_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_UPSTREAM_TIMEOUT: _ClassVar[ErrorReason]
    ERROR_REASON_UPSTREAM_ERROR: _ClassVar[ErrorReason]
    ERROR_REASON_CIRCUIT_OPEN: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_OFFLINE: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_CONTEXT_TOO_LONG: _ClassVar[ErrorReason]
    ERROR_REASON_UNSUPPORTED_FILE_TYPE: _ClassVar[ErrorReason]
    ERROR_REASON_FILE_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_DUPLICATE_FILE: _ClassVar[ErrorReason]
    ERROR_REASON_PARSE_FAILED: _ClassVar[ErrorReason]
    ERROR_REASON_FLOW_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_FLOW_ONLINE_NOT_EDITABLE: _ClassVar[ErrorReason]
    ERROR_REASON_FLOW_NOT_PUBLISHED: _ClassVar[ErrorReason]
    ERROR_REASON_RUN_NOT_WAITING: _ClassVar[ErrorReason]
    ERROR_REASON_TURN_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_SESSION_DELETED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_CREDENTIALS: _ClassVar[ErrorReason]
    ERROR_REASON_TOKEN_EXPIRED: _ClassVar[ErrorReason]
    ERROR_REASON_CONFIG_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_TURN_IN_PROGRESS: _ClassVar[ErrorReason]
    ERROR_REASON_STREAM_EXPIRED: _ClassVar[ErrorReason]
    ERROR_REASON_USER_DISABLED: _ClassVar[ErrorReason]
    ERROR_REASON_RUN_LIMIT_EXCEEDED: _ClassVar[ErrorReason]
    ERROR_REASON_NODE_FAILED: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_CAPABILITY_MISSING: _ClassVar[ErrorReason]
    ERROR_REASON_TOOL_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_TOOL_ARGUMENTS_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_TOOL_TIMEOUT: _ClassVar[ErrorReason]
    ERROR_REASON_TOOL_FAILED: _ClassVar[ErrorReason]
    ERROR_REASON_REGISTRATION_CLOSED: _ClassVar[ErrorReason]
    ERROR_REASON_INVITE_CODE_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_ACCOUNT_LOCKED: _ClassVar[ErrorReason]
    ERROR_REASON_ASSISTANT_NOT_PUBLISHED: _ClassVar[ErrorReason]
    ERROR_REASON_TOOL_INTERRUPTED: _ClassVar[ErrorReason]
    ERROR_REASON_AGENT_MAX_STEPS: _ClassVar[ErrorReason]
    ERROR_REASON_SHARE_LEVEL_INSUFFICIENT: _ClassVar[ErrorReason]
    ERROR_REASON_SHARING_LIMIT_EXCEEDED: _ClassVar[ErrorReason]
    ERROR_REASON_API_KEY_RESTRICTED: _ClassVar[ErrorReason]
    ERROR_REASON_ROLE_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_ROLE_BUILT_IN: _ClassVar[ErrorReason]
    ERROR_REASON_ROLE_IN_USE: _ClassVar[ErrorReason]
    ERROR_REASON_WRONG_KNOWLEDGE_BASE_KIND: _ClassVar[ErrorReason]

class MessageRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_ROLE_UNSPECIFIED: _ClassVar[MessageRole]
    MESSAGE_ROLE_SYSTEM: _ClassVar[MessageRole]
    MESSAGE_ROLE_USER: _ClassVar[MessageRole]
    MESSAGE_ROLE_ASSISTANT: _ClassVar[MessageRole]
    MESSAGE_ROLE_TOOL: _ClassVar[MessageRole]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_CONTENT_FILTER: _ClassVar[FinishReason]
    FINISH_REASON_TOOL_CALLS: _ClassVar[FinishReason]
    FINISH_REASON_CANCELLED: _ClassVar[FinishReason]
    FINISH_REASON_ERROR: _ClassVar[FinishReason]
    FINISH_REASON_MAX_STEPS: _ClassVar[FinishReason]

class ToolStepStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_STEP_STATUS_UNSPECIFIED: _ClassVar[ToolStepStatus]
    TOOL_STEP_STATUS_RUNNING: _ClassVar[ToolStepStatus]
    TOOL_STEP_STATUS_SUCCEEDED: _ClassVar[ToolStepStatus]
    TOOL_STEP_STATUS_FAILED: _ClassVar[ToolStepStatus]
    TOOL_STEP_STATUS_CANCELLED: _ClassVar[ToolStepStatus]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_NOT_FOUND: ErrorReason
ERROR_REASON_ALREADY_EXISTS: ErrorReason
ERROR_REASON_INVALID_ARGUMENT: ErrorReason
ERROR_REASON_UNAUTHENTICATED: ErrorReason
ERROR_REASON_PERMISSION_DENIED: ErrorReason
ERROR_REASON_RATE_LIMITED: ErrorReason
ERROR_REASON_PAYLOAD_TOO_LARGE: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
ERROR_REASON_UNAVAILABLE: ErrorReason
ERROR_REASON_UPSTREAM_RATE_LIMITED: ErrorReason
ERROR_REASON_UPSTREAM_UNAVAILABLE: ErrorReason
ERROR_REASON_UPSTREAM_TIMEOUT: ErrorReason
ERROR_REASON_UPSTREAM_ERROR: ErrorReason
ERROR_REASON_CIRCUIT_OPEN: ErrorReason
ERROR_REASON_MODEL_OFFLINE: ErrorReason
ERROR_REASON_MODEL_NOT_FOUND: ErrorReason
ERROR_REASON_CONTEXT_TOO_LONG: ErrorReason
ERROR_REASON_UNSUPPORTED_FILE_TYPE: ErrorReason
ERROR_REASON_FILE_TOO_LARGE: ErrorReason
ERROR_REASON_DUPLICATE_FILE: ErrorReason
ERROR_REASON_PARSE_FAILED: ErrorReason
ERROR_REASON_FLOW_INVALID: ErrorReason
ERROR_REASON_FLOW_ONLINE_NOT_EDITABLE: ErrorReason
ERROR_REASON_FLOW_NOT_PUBLISHED: ErrorReason
ERROR_REASON_RUN_NOT_WAITING: ErrorReason
ERROR_REASON_TURN_NOT_FOUND: ErrorReason
ERROR_REASON_SESSION_DELETED: ErrorReason
ERROR_REASON_INVALID_CREDENTIALS: ErrorReason
ERROR_REASON_TOKEN_EXPIRED: ErrorReason
ERROR_REASON_CONFIG_INVALID: ErrorReason
ERROR_REASON_TURN_IN_PROGRESS: ErrorReason
ERROR_REASON_STREAM_EXPIRED: ErrorReason
ERROR_REASON_USER_DISABLED: ErrorReason
ERROR_REASON_RUN_LIMIT_EXCEEDED: ErrorReason
ERROR_REASON_NODE_FAILED: ErrorReason
ERROR_REASON_MODEL_CAPABILITY_MISSING: ErrorReason
ERROR_REASON_TOOL_NOT_FOUND: ErrorReason
ERROR_REASON_TOOL_ARGUMENTS_INVALID: ErrorReason
ERROR_REASON_TOOL_TIMEOUT: ErrorReason
ERROR_REASON_TOOL_FAILED: ErrorReason
ERROR_REASON_REGISTRATION_CLOSED: ErrorReason
ERROR_REASON_INVITE_CODE_INVALID: ErrorReason
ERROR_REASON_ACCOUNT_LOCKED: ErrorReason
ERROR_REASON_ASSISTANT_NOT_PUBLISHED: ErrorReason
ERROR_REASON_TOOL_INTERRUPTED: ErrorReason
ERROR_REASON_AGENT_MAX_STEPS: ErrorReason
ERROR_REASON_SHARE_LEVEL_INSUFFICIENT: ErrorReason
ERROR_REASON_SHARING_LIMIT_EXCEEDED: ErrorReason
ERROR_REASON_API_KEY_RESTRICTED: ErrorReason
ERROR_REASON_ROLE_NOT_FOUND: ErrorReason
ERROR_REASON_ROLE_BUILT_IN: ErrorReason
ERROR_REASON_ROLE_IN_USE: ErrorReason
ERROR_REASON_WRONG_KNOWLEDGE_BASE_KIND: ErrorReason
MESSAGE_ROLE_UNSPECIFIED: MessageRole
MESSAGE_ROLE_SYSTEM: MessageRole
MESSAGE_ROLE_USER: MessageRole
MESSAGE_ROLE_ASSISTANT: MessageRole
MESSAGE_ROLE_TOOL: MessageRole
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_CONTENT_FILTER: FinishReason
FINISH_REASON_TOOL_CALLS: FinishReason
FINISH_REASON_CANCELLED: FinishReason
FINISH_REASON_ERROR: FinishReason
FINISH_REASON_MAX_STEPS: FinishReason
TOOL_STEP_STATUS_UNSPECIFIED: ToolStepStatus
TOOL_STEP_STATUS_RUNNING: ToolStepStatus
TOOL_STEP_STATUS_SUCCEEDED: ToolStepStatus
TOOL_STEP_STATUS_FAILED: ToolStepStatus
TOOL_STEP_STATUS_CANCELLED: ToolStepStatus

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class Citation(_message.Message):
    __slots__ = ("kb_id", "file_id", "file_name", "chunk_id", "page", "text", "score")
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    file_id: str
    file_name: str
    chunk_id: str
    page: int
    text: str
    score: float
    def __init__(self, kb_id: _Optional[str] = ..., file_id: _Optional[str] = ..., file_name: _Optional[str] = ..., chunk_id: _Optional[str] = ..., page: _Optional[int] = ..., text: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class TokenDelta(_message.Message):
    __slots__ = ("text", "reasoning_text", "node_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REASONING_TEXT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    reasoning_text: str
    node_id: str
    def __init__(self, text: _Optional[str] = ..., reasoning_text: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class ToolStep(_message.Message):
    __slots__ = ("call_id", "tool_id", "name", "arguments", "step", "status", "result_preview", "result_size_bytes", "reason", "duration_ms")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_PREVIEW_FIELD_NUMBER: _ClassVar[int]
    RESULT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    tool_id: str
    name: str
    arguments: str
    step: int
    status: ToolStepStatus
    result_preview: str
    result_size_bytes: int
    reason: str
    duration_ms: int
    def __init__(self, call_id: _Optional[str] = ..., tool_id: _Optional[str] = ..., name: _Optional[str] = ..., arguments: _Optional[str] = ..., step: _Optional[int] = ..., status: _Optional[_Union[ToolStepStatus, str]] = ..., result_preview: _Optional[str] = ..., result_size_bytes: _Optional[int] = ..., reason: _Optional[str] = ..., duration_ms: _Optional[int] = ...) -> None: ...
