import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ToolProviderKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_PROVIDER_KIND_UNSPECIFIED: _ClassVar[ToolProviderKind]
    TOOL_PROVIDER_KIND_BUILTIN: _ClassVar[ToolProviderKind]
    TOOL_PROVIDER_KIND_OPENAPI: _ClassVar[ToolProviderKind]
    TOOL_PROVIDER_KIND_MCP: _ClassVar[ToolProviderKind]

class McpTransport(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MCP_TRANSPORT_UNSPECIFIED: _ClassVar[McpTransport]
    MCP_TRANSPORT_STREAMABLE_HTTP: _ClassVar[McpTransport]
    MCP_TRANSPORT_SSE: _ClassVar[McpTransport]
    MCP_TRANSPORT_STDIO: _ClassVar[McpTransport]

class ToolAuthType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_AUTH_TYPE_UNSPECIFIED: _ClassVar[ToolAuthType]
    TOOL_AUTH_TYPE_API_KEY_HEADER: _ClassVar[ToolAuthType]
    TOOL_AUTH_TYPE_API_KEY_QUERY: _ClassVar[ToolAuthType]
    TOOL_AUTH_TYPE_BEARER: _ClassVar[ToolAuthType]
TOOL_PROVIDER_KIND_UNSPECIFIED: ToolProviderKind
TOOL_PROVIDER_KIND_BUILTIN: ToolProviderKind
TOOL_PROVIDER_KIND_OPENAPI: ToolProviderKind
TOOL_PROVIDER_KIND_MCP: ToolProviderKind
MCP_TRANSPORT_UNSPECIFIED: McpTransport
MCP_TRANSPORT_STREAMABLE_HTTP: McpTransport
MCP_TRANSPORT_SSE: McpTransport
MCP_TRANSPORT_STDIO: McpTransport
TOOL_AUTH_TYPE_UNSPECIFIED: ToolAuthType
TOOL_AUTH_TYPE_API_KEY_HEADER: ToolAuthType
TOOL_AUTH_TYPE_API_KEY_QUERY: ToolAuthType
TOOL_AUTH_TYPE_BEARER: ToolAuthType

class ToolAuth(_message.Message):
    __slots__ = ("type", "name", "credential", "credential_set")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_SET_FIELD_NUMBER: _ClassVar[int]
    type: ToolAuthType
    name: str
    credential: str
    credential_set: bool
    def __init__(self, type: _Optional[_Union[ToolAuthType, str]] = ..., name: _Optional[str] = ..., credential: _Optional[str] = ..., credential_set: _Optional[bool] = ...) -> None: ...

class OpenApiSource(_message.Message):
    __slots__ = ("document", "document_url", "base_url", "auth")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_URL_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    document: str
    document_url: str
    base_url: str
    auth: ToolAuth
    def __init__(self, document: _Optional[str] = ..., document_url: _Optional[str] = ..., base_url: _Optional[str] = ..., auth: _Optional[_Union[ToolAuth, _Mapping]] = ...) -> None: ...

class McpServer(_message.Message):
    __slots__ = ("transport", "url", "command", "args", "env")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    transport: McpTransport
    url: str
    command: str
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    def __init__(self, transport: _Optional[_Union[McpTransport, str]] = ..., url: _Optional[str] = ..., command: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ToolProvider(_message.Message):
    __slots__ = ("id", "owner_id", "name", "description", "kind", "shared", "headers", "timeout_ms", "openapi", "mcp", "tool_count", "last_error", "refresh_time", "create_time", "update_time")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    OPENAPI_FIELD_NUMBER: _ClassVar[int]
    MCP_FIELD_NUMBER: _ClassVar[int]
    TOOL_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner_id: str
    name: str
    description: str
    kind: ToolProviderKind
    shared: bool
    headers: _containers.ScalarMap[str, str]
    timeout_ms: int
    openapi: OpenApiSource
    mcp: McpServer
    tool_count: int
    last_error: str
    refresh_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., owner_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., kind: _Optional[_Union[ToolProviderKind, str]] = ..., shared: _Optional[bool] = ..., headers: _Optional[_Mapping[str, str]] = ..., timeout_ms: _Optional[int] = ..., openapi: _Optional[_Union[OpenApiSource, _Mapping]] = ..., mcp: _Optional[_Union[McpServer, _Mapping]] = ..., tool_count: _Optional[int] = ..., last_error: _Optional[str] = ..., refresh_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CatalogTool(_message.Message):
    __slots__ = ("id", "provider_id", "name", "description", "category", "parameters", "kind", "provider_name")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider_id: str
    name: str
    description: str
    category: str
    parameters: _struct_pb2.Struct
    kind: ToolProviderKind
    provider_name: str
    def __init__(self, id: _Optional[str] = ..., provider_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., category: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., kind: _Optional[_Union[ToolProviderKind, str]] = ..., provider_name: _Optional[str] = ...) -> None: ...

class CreateToolProviderRequest(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: ToolProvider
    def __init__(self, provider: _Optional[_Union[ToolProvider, _Mapping]] = ...) -> None: ...

class CreateToolProviderResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: ToolProvider
    def __init__(self, provider: _Optional[_Union[ToolProvider, _Mapping]] = ...) -> None: ...

class ListToolProvidersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "kind")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    kind: ToolProviderKind
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., kind: _Optional[_Union[ToolProviderKind, str]] = ...) -> None: ...

class ListToolProvidersResponse(_message.Message):
    __slots__ = ("providers", "next_page_token")
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ToolProvider]
    next_page_token: str
    def __init__(self, providers: _Optional[_Iterable[_Union[ToolProvider, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetToolProviderRequest(_message.Message):
    __slots__ = ("provider_id",)
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    def __init__(self, provider_id: _Optional[str] = ...) -> None: ...

class GetToolProviderResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: ToolProvider
    def __init__(self, provider: _Optional[_Union[ToolProvider, _Mapping]] = ...) -> None: ...

class UpdateToolProviderRequest(_message.Message):
    __slots__ = ("provider", "update_mask")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    provider: ToolProvider
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, provider: _Optional[_Union[ToolProvider, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateToolProviderResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: ToolProvider
    def __init__(self, provider: _Optional[_Union[ToolProvider, _Mapping]] = ...) -> None: ...

class DeleteToolProviderRequest(_message.Message):
    __slots__ = ("provider_id",)
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    def __init__(self, provider_id: _Optional[str] = ...) -> None: ...

class DeleteToolProviderResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RefreshToolProviderRequest(_message.Message):
    __slots__ = ("provider_id",)
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    def __init__(self, provider_id: _Optional[str] = ...) -> None: ...

class RefreshToolProviderResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: ToolProvider
    def __init__(self, provider: _Optional[_Union[ToolProvider, _Mapping]] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "provider_id", "category", "keyword")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    provider_id: str
    category: str
    keyword: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., provider_id: _Optional[str] = ..., category: _Optional[str] = ..., keyword: _Optional[str] = ...) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools", "next_page_token")
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[CatalogTool]
    next_page_token: str
    def __init__(self, tools: _Optional[_Iterable[_Union[CatalogTool, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetToolRequest(_message.Message):
    __slots__ = ("tool_id",)
    TOOL_ID_FIELD_NUMBER: _ClassVar[int]
    tool_id: str
    def __init__(self, tool_id: _Optional[str] = ...) -> None: ...

class GetToolResponse(_message.Message):
    __slots__ = ("tool",)
    TOOL_FIELD_NUMBER: _ClassVar[int]
    tool: CatalogTool
    def __init__(self, tool: _Optional[_Union[CatalogTool, _Mapping]] = ...) -> None: ...

class CallToolRequest(_message.Message):
    __slots__ = ("tool_id", "arguments", "timeout_ms")
    TOOL_ID_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    tool_id: str
    arguments: _struct_pb2.Struct
    timeout_ms: int
    def __init__(self, tool_id: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class CallToolResponse(_message.Message):
    __slots__ = ("text", "structured", "truncated", "duration_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STRUCTURED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    structured: _struct_pb2.Value
    truncated: bool
    duration_ms: int
    def __init__(self, text: _Optional[str] = ..., structured: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., truncated: _Optional[bool] = ..., duration_ms: _Optional[int] = ...) -> None: ...
