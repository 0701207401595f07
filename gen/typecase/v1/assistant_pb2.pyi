import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from typecase.v1 import llm_pb2 as _llm_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AssistantStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSISTANT_STATUS_UNSPECIFIED: _ClassVar[AssistantStatus]
    ASSISTANT_STATUS_DRAFT: _ClassVar[AssistantStatus]
    ASSISTANT_STATUS_ONLINE: _ClassVar[AssistantStatus]

class KnowledgeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KNOWLEDGE_MODE_UNSPECIFIED: _ClassVar[KnowledgeMode]
    KNOWLEDGE_MODE_TOOL: _ClassVar[KnowledgeMode]
    KNOWLEDGE_MODE_BEFORE_FIRST_STEP: _ClassVar[KnowledgeMode]

class AssistantScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSISTANT_SCOPE_UNSPECIFIED: _ClassVar[AssistantScope]
    ASSISTANT_SCOPE_MINE_AND_ONLINE: _ClassVar[AssistantScope]
    ASSISTANT_SCOPE_MINE: _ClassVar[AssistantScope]
    ASSISTANT_SCOPE_ONLINE: _ClassVar[AssistantScope]
ASSISTANT_STATUS_UNSPECIFIED: AssistantStatus
ASSISTANT_STATUS_DRAFT: AssistantStatus
ASSISTANT_STATUS_ONLINE: AssistantStatus
KNOWLEDGE_MODE_UNSPECIFIED: KnowledgeMode
KNOWLEDGE_MODE_TOOL: KnowledgeMode
KNOWLEDGE_MODE_BEFORE_FIRST_STEP: KnowledgeMode
ASSISTANT_SCOPE_UNSPECIFIED: AssistantScope
ASSISTANT_SCOPE_MINE_AND_ONLINE: AssistantScope
ASSISTANT_SCOPE_MINE: AssistantScope
ASSISTANT_SCOPE_ONLINE: AssistantScope

class AssistantVariable(_message.Message):
    __slots__ = ("name", "description", "default_value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    default_value: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., default_value: _Optional[str] = ...) -> None: ...

class Assistant(_message.Message):
    __slots__ = ("id", "owner_id", "name", "description", "logo_url", "model_id", "instructions", "variables", "tool_ids", "kb_ids", "knowledge_mode", "opening_message", "suggested_questions", "generation_config", "max_steps", "tool_timeout_ms", "tool_choice", "status", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LOGO_URL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    TOOL_IDS_FIELD_NUMBER: _ClassVar[int]
    KB_IDS_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_MODE_FIELD_NUMBER: _ClassVar[int]
    OPENING_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_CONFIG_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    TOOL_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner_id: str
    name: str
    description: str
    logo_url: str
    model_id: str
    instructions: str
    variables: _containers.RepeatedCompositeFieldContainer[AssistantVariable]
    tool_ids: _containers.RepeatedScalarFieldContainer[str]
    kb_ids: _containers.RepeatedScalarFieldContainer[str]
    knowledge_mode: KnowledgeMode
    opening_message: str
    suggested_questions: _containers.RepeatedScalarFieldContainer[str]
    generation_config: _llm_pb2.GenerationConfig
    max_steps: int
    tool_timeout_ms: int
    tool_choice: _llm_pb2.ToolChoiceMode
    status: AssistantStatus
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., owner_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., logo_url: _Optional[str] = ..., model_id: _Optional[str] = ..., instructions: _Optional[str] = ..., variables: _Optional[_Iterable[_Union[AssistantVariable, _Mapping]]] = ..., tool_ids: _Optional[_Iterable[str]] = ..., kb_ids: _Optional[_Iterable[str]] = ..., knowledge_mode: _Optional[_Union[KnowledgeMode, str]] = ..., opening_message: _Optional[str] = ..., suggested_questions: _Optional[_Iterable[str]] = ..., generation_config: _Optional[_Union[_llm_pb2.GenerationConfig, _Mapping]] = ..., max_steps: _Optional[int] = ..., tool_timeout_ms: _Optional[int] = ..., tool_choice: _Optional[_Union[_llm_pb2.ToolChoiceMode, str]] = ..., status: _Optional[_Union[AssistantStatus, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateAssistantRequest(_message.Message):
    __slots__ = ("assistant",)
    ASSISTANT_FIELD_NUMBER: _ClassVar[int]
    assistant: Assistant
    def __init__(self, assistant: _Optional[_Union[Assistant, _Mapping]] = ...) -> None: ...

class CreateAssistantResponse(_message.Message):
    __slots__ = ("assistant",)
    ASSISTANT_FIELD_NUMBER: _ClassVar[int]
    assistant: Assistant
    def __init__(self, assistant: _Optional[_Union[Assistant, _Mapping]] = ...) -> None: ...

class ListAssistantsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "scope", "keyword")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    scope: AssistantScope
    keyword: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., scope: _Optional[_Union[AssistantScope, str]] = ..., keyword: _Optional[str] = ...) -> None: ...

class ListAssistantsResponse(_message.Message):
    __slots__ = ("assistants", "next_page_token")
    ASSISTANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    assistants: _containers.RepeatedCompositeFieldContainer[Assistant]
    next_page_token: str
    def __init__(self, assistants: _Optional[_Iterable[_Union[Assistant, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAssistantRequest(_message.Message):
    __slots__ = ("assistant_id",)
    ASSISTANT_ID_FIELD_NUMBER: _ClassVar[int]
    assistant_id: str
    def __init__(self, assistant_id: _Optional[str] = ...) -> None: ...

class GetAssistantResponse(_message.Message):
    __slots__ = ("assistant",)
    ASSISTANT_FIELD_NUMBER: _ClassVar[int]
    assistant: Assistant
    def __init__(self, assistant: _Optional[_Union[Assistant, _Mapping]] = ...) -> None: ...

class UpdateAssistantRequest(_message.Message):
    __slots__ = ("assistant", "update_mask")
    ASSISTANT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    assistant: Assistant
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, assistant: _Optional[_Union[Assistant, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateAssistantResponse(_message.Message):
    __slots__ = ("assistant",)
    ASSISTANT_FIELD_NUMBER: _ClassVar[int]
    assistant: Assistant
    def __init__(self, assistant: _Optional[_Union[Assistant, _Mapping]] = ...) -> None: ...

class DeleteAssistantRequest(_message.Message):
    __slots__ = ("assistant_id",)
    ASSISTANT_ID_FIELD_NUMBER: _ClassVar[int]
    assistant_id: str
    def __init__(self, assistant_id: _Optional[str] = ...) -> None: ...

class DeleteAssistantResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishAssistantRequest(_message.Message):
    __slots__ = ("assistant_id",)
    ASSISTANT_ID_FIELD_NUMBER: _ClassVar[int]
    assistant_id: str
    def __init__(self, assistant_id: _Optional[str] = ...) -> None: ...

class PublishAssistantResponse(_message.Message):
    __slots__ = ("assistant",)
    ASSISTANT_FIELD_NUMBER: _ClassVar[int]
    assistant: Assistant
    def __init__(self, assistant: _Optional[_Union[Assistant, _Mapping]] = ...) -> None: ...

class UnpublishAssistantRequest(_message.Message):
    __slots__ = ("assistant_id",)
    ASSISTANT_ID_FIELD_NUMBER: _ClassVar[int]
    assistant_id: str
    def __init__(self, assistant_id: _Optional[str] = ...) -> None: ...

class UnpublishAssistantResponse(_message.Message):
    __slots__ = ("assistant",)
    ASSISTANT_FIELD_NUMBER: _ClassVar[int]
    assistant: Assistant
    def __init__(self, assistant: _Optional[_Union[Assistant, _Mapping]] = ...) -> None: ...
