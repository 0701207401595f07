import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from typecase.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FlowStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLOW_STATUS_UNSPECIFIED: _ClassVar[FlowStatus]
    FLOW_STATUS_DRAFT: _ClassVar[FlowStatus]
    FLOW_STATUS_ONLINE: _ClassVar[FlowStatus]

class FlowRunAs(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLOW_RUN_AS_UNSPECIFIED: _ClassVar[FlowRunAs]
    FLOW_RUN_AS_CALLER: _ClassVar[FlowRunAs]
    FLOW_RUN_AS_OWNER: _ClassVar[FlowRunAs]

class NodeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_TYPE_UNSPECIFIED: _ClassVar[NodeType]
    NODE_TYPE_START: _ClassVar[NodeType]
    NODE_TYPE_INPUT: _ClassVar[NodeType]
    NODE_TYPE_PROMPT: _ClassVar[NodeType]
    NODE_TYPE_LLM: _ClassVar[NodeType]
    NODE_TYPE_KNOWLEDGE_RETRIEVAL: _ClassVar[NodeType]
    NODE_TYPE_CONDITION: _ClassVar[NodeType]
    NODE_TYPE_HTTP_REQUEST: _ClassVar[NodeType]
    NODE_TYPE_CODE: _ClassVar[NodeType]
    NODE_TYPE_OUTPUT: _ClassVar[NodeType]
    NODE_TYPE_END: _ClassVar[NodeType]
    NODE_TYPE_AGENT: _ClassVar[NodeType]
    NODE_TYPE_TOOL: _ClassVar[NodeType]

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_WAITING_INPUT: _ClassVar[RunStatus]
    RUN_STATUS_FINISHED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_STOPPED: _ClassVar[RunStatus]

class NodeRunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_RUN_STATUS_UNSPECIFIED: _ClassVar[NodeRunStatus]
    NODE_RUN_STATUS_RUNNING: _ClassVar[NodeRunStatus]
    NODE_RUN_STATUS_WAITING_INPUT: _ClassVar[NodeRunStatus]
    NODE_RUN_STATUS_SUCCEEDED: _ClassVar[NodeRunStatus]
    NODE_RUN_STATUS_FAILED: _ClassVar[NodeRunStatus]
    NODE_RUN_STATUS_SKIPPED: _ClassVar[NodeRunStatus]
    NODE_RUN_STATUS_STOPPED: _ClassVar[NodeRunStatus]

class FormFieldType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FORM_FIELD_TYPE_UNSPECIFIED: _ClassVar[FormFieldType]
    FORM_FIELD_TYPE_TEXT: _ClassVar[FormFieldType]
    FORM_FIELD_TYPE_TEXTAREA: _ClassVar[FormFieldType]
    FORM_FIELD_TYPE_NUMBER: _ClassVar[FormFieldType]
    FORM_FIELD_TYPE_BOOLEAN: _ClassVar[FormFieldType]
    FORM_FIELD_TYPE_SELECT: _ClassVar[FormFieldType]
    FORM_FIELD_TYPE_MULTI_SELECT: _ClassVar[FormFieldType]
    FORM_FIELD_TYPE_FILE: _ClassVar[FormFieldType]

class ValidationSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALIDATION_SEVERITY_UNSPECIFIED: _ClassVar[ValidationSeverity]
    VALIDATION_SEVERITY_ERROR: _ClassVar[ValidationSeverity]
    VALIDATION_SEVERITY_WARNING: _ClassVar[ValidationSeverity]
FLOW_STATUS_UNSPECIFIED: FlowStatus
FLOW_STATUS_DRAFT: FlowStatus
FLOW_STATUS_ONLINE: FlowStatus
FLOW_RUN_AS_UNSPECIFIED: FlowRunAs
FLOW_RUN_AS_CALLER: FlowRunAs
FLOW_RUN_AS_OWNER: FlowRunAs
NODE_TYPE_UNSPECIFIED: NodeType
NODE_TYPE_START: NodeType
NODE_TYPE_INPUT: NodeType
NODE_TYPE_PROMPT: NodeType
NODE_TYPE_LLM: NodeType
NODE_TYPE_KNOWLEDGE_RETRIEVAL: NodeType
NODE_TYPE_CONDITION: NodeType
NODE_TYPE_HTTP_REQUEST: NodeType
NODE_TYPE_CODE: NodeType
NODE_TYPE_OUTPUT: NodeType
NODE_TYPE_END: NodeType
NODE_TYPE_AGENT: NodeType
NODE_TYPE_TOOL: NodeType
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_WAITING_INPUT: RunStatus
RUN_STATUS_FINISHED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_STOPPED: RunStatus
NODE_RUN_STATUS_UNSPECIFIED: NodeRunStatus
NODE_RUN_STATUS_RUNNING: NodeRunStatus
NODE_RUN_STATUS_WAITING_INPUT: NodeRunStatus
NODE_RUN_STATUS_SUCCEEDED: NodeRunStatus
NODE_RUN_STATUS_FAILED: NodeRunStatus
NODE_RUN_STATUS_SKIPPED: NodeRunStatus
NODE_RUN_STATUS_STOPPED: NodeRunStatus
FORM_FIELD_TYPE_UNSPECIFIED: FormFieldType
FORM_FIELD_TYPE_TEXT: FormFieldType
FORM_FIELD_TYPE_TEXTAREA: FormFieldType
FORM_FIELD_TYPE_NUMBER: FormFieldType
FORM_FIELD_TYPE_BOOLEAN: FormFieldType
FORM_FIELD_TYPE_SELECT: FormFieldType
FORM_FIELD_TYPE_MULTI_SELECT: FormFieldType
FORM_FIELD_TYPE_FILE: FormFieldType
VALIDATION_SEVERITY_UNSPECIFIED: ValidationSeverity
VALIDATION_SEVERITY_ERROR: ValidationSeverity
VALIDATION_SEVERITY_WARNING: ValidationSeverity

class Position(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "type", "name", "params", "position")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: NodeType
    name: str
    params: _struct_pb2.Struct
    position: Position
    def __init__(self, id: _Optional[str] = ..., type: _Optional[_Union[NodeType, str]] = ..., name: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., position: _Optional[_Union[Position, _Mapping]] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("id", "source", "target", "source_handle")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HANDLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    target: str
    source_handle: str
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., target: _Optional[str] = ..., source_handle: _Optional[str] = ...) -> None: ...

class Graph(_message.Message):
    __slots__ = ("nodes", "edges")
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ...) -> None: ...

class Flow(_message.Message):
    __slots__ = ("id", "owner_id", "name", "description", "logo", "status", "current_version_id", "graph", "publish_time", "create_time", "update_time", "run_as")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LOGO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RUN_AS_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner_id: str
    name: str
    description: str
    logo: str
    status: FlowStatus
    current_version_id: str
    graph: Graph
    publish_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    run_as: FlowRunAs
    def __init__(self, id: _Optional[str] = ..., owner_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., logo: _Optional[str] = ..., status: _Optional[_Union[FlowStatus, str]] = ..., current_version_id: _Optional[str] = ..., graph: _Optional[_Union[Graph, _Mapping]] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_as: _Optional[_Union[FlowRunAs, str]] = ...) -> None: ...

class FlowVersion(_message.Message):
    __slots__ = ("id", "flow_id", "name", "description", "graph", "from_version_id", "is_current", "owner_id", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    IS_CURRENT_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    flow_id: str
    name: str
    description: str
    graph: Graph
    from_version_id: str
    is_current: bool
    owner_id: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., flow_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., graph: _Optional[_Union[Graph, _Mapping]] = ..., from_version_id: _Optional[str] = ..., is_current: _Optional[bool] = ..., owner_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ValidationProblem(_message.Message):
    __slots__ = ("node_id", "edge_id", "code", "message", "severity", "param")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    PARAM_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    edge_id: str
    code: str
    message: str
    severity: ValidationSeverity
    param: str
    def __init__(self, node_id: _Optional[str] = ..., edge_id: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., severity: _Optional[_Union[ValidationSeverity, str]] = ..., param: _Optional[str] = ...) -> None: ...

class FormField(_message.Message):
    __slots__ = ("name", "type", "label", "description", "required", "options", "default_value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: FormFieldType
    label: str
    description: str
    required: bool
    options: _containers.RepeatedScalarFieldContainer[str]
    default_value: _struct_pb2.Value
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[FormFieldType, str]] = ..., label: _Optional[str] = ..., description: _Optional[str] = ..., required: _Optional[bool] = ..., options: _Optional[_Iterable[str]] = ..., default_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class InputRequired(_message.Message):
    __slots__ = ("node_id", "node_name", "prompt", "fields")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    node_name: str
    prompt: str
    fields: _containers.RepeatedCompositeFieldContainer[FormField]
    def __init__(self, node_id: _Optional[str] = ..., node_name: _Optional[str] = ..., prompt: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[FormField, _Mapping]]] = ...) -> None: ...

class NodeRun(_message.Message):
    __slots__ = ("node_id", "node_type", "node_name", "status", "inputs", "outputs", "usage", "error", "start_time", "end_time", "elapsed", "attempt")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    node_type: NodeType
    node_name: str
    status: NodeRunStatus
    inputs: _struct_pb2.Struct
    outputs: _struct_pb2.Struct
    usage: _common_pb2.Usage
    error: _status_pb2.Status
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    elapsed: _duration_pb2.Duration
    attempt: int
    def __init__(self, node_id: _Optional[str] = ..., node_type: _Optional[_Union[NodeType, str]] = ..., node_name: _Optional[str] = ..., status: _Optional[_Union[NodeRunStatus, str]] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., outputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., elapsed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., attempt: _Optional[int] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("id", "flow_id", "version_id", "owner_id", "session_id", "status", "inputs", "outputs", "nodes", "pending_input", "error", "usage", "last_seq", "create_time", "update_time", "end_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    PENDING_INPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    flow_id: str
    version_id: str
    owner_id: str
    session_id: str
    status: RunStatus
    inputs: _struct_pb2.Struct
    outputs: _struct_pb2.Struct
    nodes: _containers.RepeatedCompositeFieldContainer[NodeRun]
    pending_input: InputRequired
    error: _status_pb2.Status
    usage: _common_pb2.Usage
    last_seq: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., flow_id: _Optional[str] = ..., version_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., session_id: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., outputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[NodeRun, _Mapping]]] = ..., pending_input: _Optional[_Union[InputRequired, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., last_seq: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RunStarted(_message.Message):
    __slots__ = ("run_id", "flow_id", "version_id", "session_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    flow_id: str
    version_id: str
    session_id: str
    def __init__(self, run_id: _Optional[str] = ..., flow_id: _Optional[str] = ..., version_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class RunFinished(_message.Message):
    __slots__ = ("status", "outputs", "usage", "elapsed")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    status: RunStatus
    outputs: _struct_pb2.Struct
    usage: _common_pb2.Usage
    elapsed: _duration_pb2.Duration
    def __init__(self, status: _Optional[_Union[RunStatus, str]] = ..., outputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., elapsed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("time", "run_started", "node_started", "token", "node_finished", "input_required", "run_finished", "run_failed")
    TIME_FIELD_NUMBER: _ClassVar[int]
    RUN_STARTED_FIELD_NUMBER: _ClassVar[int]
    NODE_STARTED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NODE_FINISHED_FIELD_NUMBER: _ClassVar[int]
    INPUT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    RUN_FINISHED_FIELD_NUMBER: _ClassVar[int]
    RUN_FAILED_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    run_started: RunStarted
    node_started: NodeRun
    token: _common_pb2.TokenDelta
    node_finished: NodeRun
    input_required: InputRequired
    run_finished: RunFinished
    run_failed: _status_pb2.Status
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_started: _Optional[_Union[RunStarted, _Mapping]] = ..., node_started: _Optional[_Union[NodeRun, _Mapping]] = ..., token: _Optional[_Union[_common_pb2.TokenDelta, _Mapping]] = ..., node_finished: _Optional[_Union[NodeRun, _Mapping]] = ..., input_required: _Optional[_Union[InputRequired, _Mapping]] = ..., run_finished: _Optional[_Union[RunFinished, _Mapping]] = ..., run_failed: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class CreateFlowRequest(_message.Message):
    __slots__ = ("flow",)
    FLOW_FIELD_NUMBER: _ClassVar[int]
    flow: Flow
    def __init__(self, flow: _Optional[_Union[Flow, _Mapping]] = ...) -> None: ...

class CreateFlowResponse(_message.Message):
    __slots__ = ("flow",)
    FLOW_FIELD_NUMBER: _ClassVar[int]
    flow: Flow
    def __init__(self, flow: _Optional[_Union[Flow, _Mapping]] = ...) -> None: ...

class ListFlowsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "keyword", "status", "owner_id")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    keyword: str
    status: FlowStatus
    owner_id: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., keyword: _Optional[str] = ..., status: _Optional[_Union[FlowStatus, str]] = ..., owner_id: _Optional[str] = ...) -> None: ...

class ListFlowsResponse(_message.Message):
    __slots__ = ("flows", "next_page_token", "total_size")
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    flows: _containers.RepeatedCompositeFieldContainer[Flow]
    next_page_token: str
    total_size: int
    def __init__(self, flows: _Optional[_Iterable[_Union[Flow, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetFlowRequest(_message.Message):
    __slots__ = ("flow_id",)
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    def __init__(self, flow_id: _Optional[str] = ...) -> None: ...

class GetFlowResponse(_message.Message):
    __slots__ = ("flow",)
    FLOW_FIELD_NUMBER: _ClassVar[int]
    flow: Flow
    def __init__(self, flow: _Optional[_Union[Flow, _Mapping]] = ...) -> None: ...

class UpdateFlowRequest(_message.Message):
    __slots__ = ("flow", "update_mask")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    flow: Flow
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, flow: _Optional[_Union[Flow, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateFlowResponse(_message.Message):
    __slots__ = ("flow",)
    FLOW_FIELD_NUMBER: _ClassVar[int]
    flow: Flow
    def __init__(self, flow: _Optional[_Union[Flow, _Mapping]] = ...) -> None: ...

class DeleteFlowRequest(_message.Message):
    __slots__ = ("flow_id",)
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    def __init__(self, flow_id: _Optional[str] = ...) -> None: ...

class DeleteFlowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishFlowRequest(_message.Message):
    __slots__ = ("flow_id", "version_id")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version_id: str
    def __init__(self, flow_id: _Optional[str] = ..., version_id: _Optional[str] = ...) -> None: ...

class PublishFlowResponse(_message.Message):
    __slots__ = ("flow",)
    FLOW_FIELD_NUMBER: _ClassVar[int]
    flow: Flow
    def __init__(self, flow: _Optional[_Union[Flow, _Mapping]] = ...) -> None: ...

class UnpublishFlowRequest(_message.Message):
    __slots__ = ("flow_id",)
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    def __init__(self, flow_id: _Optional[str] = ...) -> None: ...

class UnpublishFlowResponse(_message.Message):
    __slots__ = ("flow",)
    FLOW_FIELD_NUMBER: _ClassVar[int]
    flow: Flow
    def __init__(self, flow: _Optional[_Union[Flow, _Mapping]] = ...) -> None: ...

class ValidateFlowRequest(_message.Message):
    __slots__ = ("flow_id", "version_id", "graph")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version_id: str
    graph: Graph
    def __init__(self, flow_id: _Optional[str] = ..., version_id: _Optional[str] = ..., graph: _Optional[_Union[Graph, _Mapping]] = ...) -> None: ...

class ValidateFlowResponse(_message.Message):
    __slots__ = ("valid", "problems")
    VALID_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    problems: _containers.RepeatedCompositeFieldContainer[ValidationProblem]
    def __init__(self, valid: _Optional[bool] = ..., problems: _Optional[_Iterable[_Union[ValidationProblem, _Mapping]]] = ...) -> None: ...

class NodeTypeInfo(_message.Message):
    __slots__ = ("type", "kind", "display_name", "description", "category", "params_schema", "default_params", "outputs", "outputs_from", "dynamic_outputs", "has_input", "has_output", "handles_from", "fixed_handles", "waits_for_input", "secret_params", "unavailable_reason")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PARAMS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FROM_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    HAS_INPUT_FIELD_NUMBER: _ClassVar[int]
    HAS_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    HANDLES_FROM_FIELD_NUMBER: _ClassVar[int]
    FIXED_HANDLES_FIELD_NUMBER: _ClassVar[int]
    WAITS_FOR_INPUT_FIELD_NUMBER: _ClassVar[int]
    SECRET_PARAMS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    type: NodeType
    kind: str
    display_name: str
    description: str
    category: str
    params_schema: _struct_pb2.Struct
    default_params: _struct_pb2.Struct
    outputs: _containers.RepeatedScalarFieldContainer[str]
    outputs_from: str
    dynamic_outputs: bool
    has_input: bool
    has_output: bool
    handles_from: str
    fixed_handles: _containers.RepeatedScalarFieldContainer[str]
    waits_for_input: bool
    secret_params: _containers.RepeatedScalarFieldContainer[str]
    unavailable_reason: str
    def __init__(self, type: _Optional[_Union[NodeType, str]] = ..., kind: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., category: _Optional[str] = ..., params_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., default_params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., outputs: _Optional[_Iterable[str]] = ..., outputs_from: _Optional[str] = ..., dynamic_outputs: _Optional[bool] = ..., has_input: _Optional[bool] = ..., has_output: _Optional[bool] = ..., handles_from: _Optional[str] = ..., fixed_handles: _Optional[_Iterable[str]] = ..., waits_for_input: _Optional[bool] = ..., secret_params: _Optional[_Iterable[str]] = ..., unavailable_reason: _Optional[str] = ...) -> None: ...

class ListNodeTypesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodeTypesResponse(_message.Message):
    __slots__ = ("node_types",)
    NODE_TYPES_FIELD_NUMBER: _ClassVar[int]
    node_types: _containers.RepeatedCompositeFieldContainer[NodeTypeInfo]
    def __init__(self, node_types: _Optional[_Iterable[_Union[NodeTypeInfo, _Mapping]]] = ...) -> None: ...

class CreateFlowVersionRequest(_message.Message):
    __slots__ = ("flow_id", "version")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version: FlowVersion
    def __init__(self, flow_id: _Optional[str] = ..., version: _Optional[_Union[FlowVersion, _Mapping]] = ...) -> None: ...

class CreateFlowVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: FlowVersion
    def __init__(self, version: _Optional[_Union[FlowVersion, _Mapping]] = ...) -> None: ...

class ListFlowVersionsRequest(_message.Message):
    __slots__ = ("flow_id", "page_size", "page_token")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    page_size: int
    page_token: str
    def __init__(self, flow_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFlowVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[FlowVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[FlowVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetFlowVersionRequest(_message.Message):
    __slots__ = ("flow_id", "version_id")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version_id: str
    def __init__(self, flow_id: _Optional[str] = ..., version_id: _Optional[str] = ...) -> None: ...

class GetFlowVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: FlowVersion
    def __init__(self, version: _Optional[_Union[FlowVersion, _Mapping]] = ...) -> None: ...

class UpdateFlowVersionRequest(_message.Message):
    __slots__ = ("flow_id", "version", "update_mask")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version: FlowVersion
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, flow_id: _Optional[str] = ..., version: _Optional[_Union[FlowVersion, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateFlowVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: FlowVersion
    def __init__(self, version: _Optional[_Union[FlowVersion, _Mapping]] = ...) -> None: ...

class DeleteFlowVersionRequest(_message.Message):
    __slots__ = ("flow_id", "version_id")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version_id: str
    def __init__(self, flow_id: _Optional[str] = ..., version_id: _Optional[str] = ...) -> None: ...

class DeleteFlowVersionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetCurrentVersionRequest(_message.Message):
    __slots__ = ("flow_id", "version_id")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version_id: str
    def __init__(self, flow_id: _Optional[str] = ..., version_id: _Optional[str] = ...) -> None: ...

class SetCurrentVersionResponse(_message.Message):
    __slots__ = ("flow",)
    FLOW_FIELD_NUMBER: _ClassVar[int]
    flow: Flow
    def __init__(self, flow: _Optional[_Union[Flow, _Mapping]] = ...) -> None: ...

class RunFlowRequest(_message.Message):
    __slots__ = ("flow_id", "version_id", "inputs", "session_id", "stop_on_disconnect")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STOP_ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version_id: str
    inputs: _struct_pb2.Struct
    session_id: str
    stop_on_disconnect: bool
    def __init__(self, flow_id: _Optional[str] = ..., version_id: _Optional[str] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., session_id: _Optional[str] = ..., stop_on_disconnect: _Optional[bool] = ...) -> None: ...

class RunFlowResponse(_message.Message):
    __slots__ = ("seq", "run_id", "event")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    run_id: str
    event: RunEvent
    def __init__(self, seq: _Optional[int] = ..., run_id: _Optional[str] = ..., event: _Optional[_Union[RunEvent, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("flow_id", "page_size", "page_token", "status", "version_id", "session_id")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    page_size: int
    page_token: str
    status: RunStatus
    version_id: str
    session_id: str
    def __init__(self, flow_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., version_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token", "total_size")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_page_token: str
    total_size: int
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ResumeRunRequest(_message.Message):
    __slots__ = ("run_id", "node_id", "input", "stop_on_disconnect")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    STOP_ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    node_id: str
    input: _struct_pb2.Struct
    stop_on_disconnect: bool
    def __init__(self, run_id: _Optional[str] = ..., node_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., stop_on_disconnect: _Optional[bool] = ...) -> None: ...

class ResumeRunResponse(_message.Message):
    __slots__ = ("seq", "run_id", "event")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    run_id: str
    event: RunEvent
    def __init__(self, seq: _Optional[int] = ..., run_id: _Optional[str] = ..., event: _Optional[_Union[RunEvent, _Mapping]] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class StopRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class StreamRunEventsRequest(_message.Message):
    __slots__ = ("run_id", "after_seq")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    after_seq: int
    def __init__(self, run_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class StreamRunEventsResponse(_message.Message):
    __slots__ = ("seq", "run_id", "event")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    run_id: str
    event: RunEvent
    def __init__(self, seq: _Optional[int] = ..., run_id: _Optional[str] = ..., event: _Optional[_Union[RunEvent, _Mapping]] = ...) -> None: ...

class CompareFlowRequest(_message.Message):
    __slots__ = ("flow_id", "version_ids", "inputs")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_IDS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    version_ids: _containers.RepeatedScalarFieldContainer[str]
    inputs: _struct_pb2.Struct
    def __init__(self, flow_id: _Optional[str] = ..., version_ids: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CompareFlowResponse(_message.Message):
    __slots__ = ("seq", "version_id", "run_id", "event")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    version_id: str
    run_id: str
    event: RunEvent
    def __init__(self, seq: _Optional[int] = ..., version_id: _Optional[str] = ..., run_id: _Optional[str] = ..., event: _Optional[_Union[RunEvent, _Mapping]] = ...) -> None: ...
