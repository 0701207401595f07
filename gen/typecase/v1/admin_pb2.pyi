import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import code_pb2 as _code_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_SOURCE_UNSPECIFIED: _ClassVar[RequestSource]
    REQUEST_SOURCE_API: _ClassVar[RequestSource]
    REQUEST_SOURCE_OPENAI: _ClassVar[RequestSource]
    REQUEST_SOURCE_PROXY: _ClassVar[RequestSource]

class ConfigValueType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONFIG_VALUE_TYPE_UNSPECIFIED: _ClassVar[ConfigValueType]
    CONFIG_VALUE_TYPE_STRING: _ClassVar[ConfigValueType]
    CONFIG_VALUE_TYPE_NUMBER: _ClassVar[ConfigValueType]
    CONFIG_VALUE_TYPE_BOOLEAN: _ClassVar[ConfigValueType]
    CONFIG_VALUE_TYPE_JSON: _ClassVar[ConfigValueType]

class ConfigSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONFIG_SOURCE_UNSPECIFIED: _ClassVar[ConfigSource]
    CONFIG_SOURCE_DEFAULT: _ClassVar[ConfigSource]
    CONFIG_SOURCE_ENV: _ClassVar[ConfigSource]
    CONFIG_SOURCE_FILE: _ClassVar[ConfigSource]
    CONFIG_SOURCE_RUNTIME: _ClassVar[ConfigSource]

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_LEVEL_UNSPECIFIED: _ClassVar[LogLevel]
    LOG_LEVEL_DEBUG: _ClassVar[LogLevel]
    LOG_LEVEL_INFO: _ClassVar[LogLevel]
    LOG_LEVEL_WARNING: _ClassVar[LogLevel]
    LOG_LEVEL_ERROR: _ClassVar[LogLevel]
    LOG_LEVEL_CRITICAL: _ClassVar[LogLevel]
REQUEST_SOURCE_UNSPECIFIED: RequestSource
REQUEST_SOURCE_API: RequestSource
REQUEST_SOURCE_OPENAI: RequestSource
REQUEST_SOURCE_PROXY: RequestSource
CONFIG_VALUE_TYPE_UNSPECIFIED: ConfigValueType
CONFIG_VALUE_TYPE_STRING: ConfigValueType
CONFIG_VALUE_TYPE_NUMBER: ConfigValueType
CONFIG_VALUE_TYPE_BOOLEAN: ConfigValueType
CONFIG_VALUE_TYPE_JSON: ConfigValueType
CONFIG_SOURCE_UNSPECIFIED: ConfigSource
CONFIG_SOURCE_DEFAULT: ConfigSource
CONFIG_SOURCE_ENV: ConfigSource
CONFIG_SOURCE_FILE: ConfigSource
CONFIG_SOURCE_RUNTIME: ConfigSource
LOG_LEVEL_UNSPECIFIED: LogLevel
LOG_LEVEL_DEBUG: LogLevel
LOG_LEVEL_INFO: LogLevel
LOG_LEVEL_WARNING: LogLevel
LOG_LEVEL_ERROR: LogLevel
LOG_LEVEL_CRITICAL: LogLevel

class ModelStats(_message.Message):
    __slots__ = ("request_count", "failure_count", "prompt_tokens", "completion_tokens", "avg_ttft", "avg_latency")
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AVG_TTFT_FIELD_NUMBER: _ClassVar[int]
    AVG_LATENCY_FIELD_NUMBER: _ClassVar[int]
    request_count: int
    failure_count: int
    prompt_tokens: int
    completion_tokens: int
    avg_ttft: _duration_pb2.Duration
    avg_latency: _duration_pb2.Duration
    def __init__(self, request_count: _Optional[int] = ..., failure_count: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., avg_ttft: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., avg_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RequestRecord(_message.Message):
    __slots__ = ("trace_id", "time", "source", "method", "path", "model", "status_code", "ttfb", "latency", "request_bytes", "response_bytes", "stream", "user_id", "error_reason")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    TTFB_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    time: _timestamp_pb2.Timestamp
    source: RequestSource
    method: str
    path: str
    model: str
    status_code: int
    ttfb: _duration_pb2.Duration
    latency: _duration_pb2.Duration
    request_bytes: int
    response_bytes: int
    stream: bool
    user_id: str
    error_reason: str
    def __init__(self, trace_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[_Union[RequestSource, str]] = ..., method: _Optional[str] = ..., path: _Optional[str] = ..., model: _Optional[str] = ..., status_code: _Optional[int] = ..., ttfb: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_bytes: _Optional[int] = ..., response_bytes: _Optional[int] = ..., stream: _Optional[bool] = ..., user_id: _Optional[str] = ..., error_reason: _Optional[str] = ...) -> None: ...

class ErrorRecord(_message.Message):
    __slots__ = ("trace_id", "time", "source", "method", "path", "model", "status_code", "reason", "message", "upstream_status_code", "upstream_body", "latency")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_BODY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    time: _timestamp_pb2.Timestamp
    source: RequestSource
    method: str
    path: str
    model: str
    status_code: int
    reason: str
    message: str
    upstream_status_code: int
    upstream_body: str
    latency: _duration_pb2.Duration
    def __init__(self, trace_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[_Union[RequestSource, str]] = ..., method: _Optional[str] = ..., path: _Optional[str] = ..., model: _Optional[str] = ..., status_code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., upstream_status_code: _Optional[int] = ..., upstream_body: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ConfigEntry(_message.Message):
    __slots__ = ("key", "value", "type", "editable", "requires_restart", "secret", "description", "category", "example", "default_value", "source")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EDITABLE_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_RESTART_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    type: ConfigValueType
    editable: bool
    requires_restart: bool
    secret: bool
    description: str
    category: str
    example: str
    default_value: str
    source: ConfigSource
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ..., type: _Optional[_Union[ConfigValueType, str]] = ..., editable: _Optional[bool] = ..., requires_restart: _Optional[bool] = ..., secret: _Optional[bool] = ..., description: _Optional[str] = ..., category: _Optional[str] = ..., example: _Optional[str] = ..., default_value: _Optional[str] = ..., source: _Optional[_Union[ConfigSource, str]] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("seq", "time", "level", "logger", "message", "trace_id", "fields")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    LOGGER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    level: LogLevel
    logger: str
    message: str
    trace_id: str
    fields: _struct_pb2.Struct
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., level: _Optional[_Union[LogLevel, str]] = ..., logger: _Optional[str] = ..., message: _Optional[str] = ..., trace_id: _Optional[str] = ..., fields: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("id", "time", "actor_id", "actor_name", "api_key_id", "action", "resource_type", "resource_id", "code", "trace_id", "client_ip", "user_agent", "detail")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    time: _timestamp_pb2.Timestamp
    actor_id: str
    actor_name: str
    api_key_id: str
    action: str
    resource_type: str
    resource_id: str
    code: _code_pb2.Code
    trace_id: str
    client_ip: str
    user_agent: str
    detail: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor_id: _Optional[str] = ..., actor_name: _Optional[str] = ..., api_key_id: _Optional[str] = ..., action: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., code: _Optional[_Union[_code_pb2.Code, str]] = ..., trace_id: _Optional[str] = ..., client_ip: _Optional[str] = ..., user_agent: _Optional[str] = ..., detail: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("window", "source", "recent_limit")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RECENT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    window: _duration_pb2.Duration
    source: RequestSource
    recent_limit: int
    def __init__(self, window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., source: _Optional[_Union[RequestSource, str]] = ..., recent_limit: _Optional[int] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("start_time", "total_requests", "success_count", "failure_count", "in_flight", "by_status", "by_path", "by_model", "prompt_tokens", "completion_tokens", "avg_ttfb", "avg_latency", "p95_latency", "request_bytes", "response_bytes", "recent_requests")
    class ByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByPathEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByModelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ModelStats
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ModelStats, _Mapping]] = ...) -> None: ...
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    BY_PATH_FIELD_NUMBER: _ClassVar[int]
    BY_MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AVG_TTFB_FIELD_NUMBER: _ClassVar[int]
    AVG_LATENCY_FIELD_NUMBER: _ClassVar[int]
    P95_LATENCY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    total_requests: int
    success_count: int
    failure_count: int
    in_flight: int
    by_status: _containers.ScalarMap[str, int]
    by_path: _containers.ScalarMap[str, int]
    by_model: _containers.MessageMap[str, ModelStats]
    prompt_tokens: int
    completion_tokens: int
    avg_ttfb: _duration_pb2.Duration
    avg_latency: _duration_pb2.Duration
    p95_latency: _duration_pb2.Duration
    request_bytes: int
    response_bytes: int
    recent_requests: _containers.RepeatedCompositeFieldContainer[RequestRecord]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., total_requests: _Optional[int] = ..., success_count: _Optional[int] = ..., failure_count: _Optional[int] = ..., in_flight: _Optional[int] = ..., by_status: _Optional[_Mapping[str, int]] = ..., by_path: _Optional[_Mapping[str, int]] = ..., by_model: _Optional[_Mapping[str, ModelStats]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., avg_ttfb: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., avg_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p95_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_bytes: _Optional[int] = ..., response_bytes: _Optional[int] = ..., recent_requests: _Optional[_Iterable[_Union[RequestRecord, _Mapping]]] = ...) -> None: ...

class ListErrorsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "source", "reason", "model", "start_time")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    source: RequestSource
    reason: str
    model: str
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., source: _Optional[_Union[RequestSource, str]] = ..., reason: _Optional[str] = ..., model: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListErrorsResponse(_message.Message):
    __slots__ = ("errors", "next_page_token", "total_size")
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    errors: _containers.RepeatedCompositeFieldContainer[ErrorRecord]
    next_page_token: str
    total_size: int
    def __init__(self, errors: _Optional[_Iterable[_Union[ErrorRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ("category",)
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    category: str
    def __init__(self, category: _Optional[str] = ...) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("entries", "restart_required", "read_only")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RESTART_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[ConfigEntry]
    restart_required: bool
    read_only: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[ConfigEntry, _Mapping]]] = ..., restart_required: _Optional[bool] = ..., read_only: _Optional[bool] = ...) -> None: ...

class UpdateConfigRequest(_message.Message):
    __slots__ = ("values", "validate_only", "restart")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, str]
    validate_only: bool
    restart: bool
    def __init__(self, values: _Optional[_Mapping[str, str]] = ..., validate_only: _Optional[bool] = ..., restart: _Optional[bool] = ...) -> None: ...

class UpdateConfigResponse(_message.Message):
    __slots__ = ("applied", "restart_required", "restart_scheduled")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    RESTART_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    RESTART_SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    applied: _containers.RepeatedCompositeFieldContainer[ConfigEntry]
    restart_required: bool
    restart_scheduled: bool
    def __init__(self, applied: _Optional[_Iterable[_Union[ConfigEntry, _Mapping]]] = ..., restart_required: _Optional[bool] = ..., restart_scheduled: _Optional[bool] = ...) -> None: ...

class RestartServerRequest(_message.Message):
    __slots__ = ("delay", "reason")
    DELAY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    delay: _duration_pb2.Duration
    reason: str
    def __init__(self, delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class RestartServerResponse(_message.Message):
    __slots__ = ("restart_time",)
    RESTART_TIME_FIELD_NUMBER: _ClassVar[int]
    restart_time: _timestamp_pb2.Timestamp
    def __init__(self, restart_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StreamLogsRequest(_message.Message):
    __slots__ = ("min_level", "query", "trace_id", "after_seq", "tail")
    MIN_LEVEL_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    min_level: LogLevel
    query: str
    trace_id: str
    after_seq: int
    tail: int
    def __init__(self, min_level: _Optional[_Union[LogLevel, str]] = ..., query: _Optional[str] = ..., trace_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., tail: _Optional[int] = ...) -> None: ...

class StreamLogsResponse(_message.Message):
    __slots__ = ("seq", "line", "dropped_count")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    line: LogLine
    dropped_count: int
    def __init__(self, seq: _Optional[int] = ..., line: _Optional[_Union[LogLine, _Mapping]] = ..., dropped_count: _Optional[int] = ...) -> None: ...

class ListLogsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "min_level", "query", "trace_id", "start_time", "end_time")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MIN_LEVEL_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    min_level: LogLevel
    query: str
    trace_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., min_level: _Optional[_Union[LogLevel, str]] = ..., query: _Optional[str] = ..., trace_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListLogsResponse(_message.Message):
    __slots__ = ("lines", "next_page_token")
    LINES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[LogLine]
    next_page_token: str
    def __init__(self, lines: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ClearLogsRequest(_message.Message):
    __slots__ = ("before_time",)
    BEFORE_TIME_FIELD_NUMBER: _ClassVar[int]
    before_time: _timestamp_pb2.Timestamp
    def __init__(self, before_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ClearLogsResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "actor_id", "action", "resource_type", "resource_id", "start_time", "end_time")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    actor_id: str
    action: str
    resource_type: str
    resource_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., actor_id: _Optional[str] = ..., action: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token", "total_size")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    total_size: int
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...
