import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
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

class KnowledgeBaseKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KNOWLEDGE_BASE_KIND_UNSPECIFIED: _ClassVar[KnowledgeBaseKind]
    KNOWLEDGE_BASE_KIND_DOCUMENTS: _ClassVar[KnowledgeBaseKind]
    KNOWLEDGE_BASE_KIND_QA: _ClassVar[KnowledgeBaseKind]

class SeparatorRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEPARATOR_RULE_UNSPECIFIED: _ClassVar[SeparatorRule]
    SEPARATOR_RULE_BEFORE: _ClassVar[SeparatorRule]
    SEPARATOR_RULE_AFTER: _ClassVar[SeparatorRule]

class FileStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_STATUS_UNSPECIFIED: _ClassVar[FileStatus]
    FILE_STATUS_QUEUED: _ClassVar[FileStatus]
    FILE_STATUS_PARSING: _ClassVar[FileStatus]
    FILE_STATUS_EMBEDDING: _ClassVar[FileStatus]
    FILE_STATUS_INDEXING: _ClassVar[FileStatus]
    FILE_STATUS_DONE: _ClassVar[FileStatus]
    FILE_STATUS_FAILED: _ClassVar[FileStatus]

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_VECTOR: _ClassVar[SearchMode]
    SEARCH_MODE_KEYWORD: _ClassVar[SearchMode]
    SEARCH_MODE_HYBRID: _ClassVar[SearchMode]
KNOWLEDGE_BASE_KIND_UNSPECIFIED: KnowledgeBaseKind
KNOWLEDGE_BASE_KIND_DOCUMENTS: KnowledgeBaseKind
KNOWLEDGE_BASE_KIND_QA: KnowledgeBaseKind
SEPARATOR_RULE_UNSPECIFIED: SeparatorRule
SEPARATOR_RULE_BEFORE: SeparatorRule
SEPARATOR_RULE_AFTER: SeparatorRule
FILE_STATUS_UNSPECIFIED: FileStatus
FILE_STATUS_QUEUED: FileStatus
FILE_STATUS_PARSING: FileStatus
FILE_STATUS_EMBEDDING: FileStatus
FILE_STATUS_INDEXING: FileStatus
FILE_STATUS_DONE: FileStatus
FILE_STATUS_FAILED: FileStatus
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_VECTOR: SearchMode
SEARCH_MODE_KEYWORD: SearchMode
SEARCH_MODE_HYBRID: SearchMode

class ChunkingRule(_message.Message):
    __slots__ = ("separators", "separator_rule", "chunk_size", "chunk_overlap", "normalize_whitespace", "remove_urls_emails")
    SEPARATORS_FIELD_NUMBER: _ClassVar[int]
    SEPARATOR_RULE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_WHITESPACE_FIELD_NUMBER: _ClassVar[int]
    REMOVE_URLS_EMAILS_FIELD_NUMBER: _ClassVar[int]
    separators: _containers.RepeatedScalarFieldContainer[str]
    separator_rule: SeparatorRule
    chunk_size: int
    chunk_overlap: int
    normalize_whitespace: bool
    remove_urls_emails: bool
    def __init__(self, separators: _Optional[_Iterable[str]] = ..., separator_rule: _Optional[_Union[SeparatorRule, str]] = ..., chunk_size: _Optional[int] = ..., chunk_overlap: _Optional[int] = ..., normalize_whitespace: _Optional[bool] = ..., remove_urls_emails: _Optional[bool] = ...) -> None: ...

class KnowledgeBase(_message.Message):
    __slots__ = ("id", "owner_id", "name", "description", "embedding_model_id", "chunking_rule", "file_count", "chunk_count", "total_size_bytes", "create_time", "update_time", "kind")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_RULE_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner_id: str
    name: str
    description: str
    embedding_model_id: str
    chunking_rule: ChunkingRule
    file_count: int
    chunk_count: int
    total_size_bytes: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    kind: KnowledgeBaseKind
    def __init__(self, id: _Optional[str] = ..., owner_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., embedding_model_id: _Optional[str] = ..., chunking_rule: _Optional[_Union[ChunkingRule, _Mapping]] = ..., file_count: _Optional[int] = ..., chunk_count: _Optional[int] = ..., total_size_bytes: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[KnowledgeBaseKind, str]] = ...) -> None: ...

class QAPair(_message.Message):
    __slots__ = ("id", "kb_id", "file_id", "question", "similar_questions", "answer", "file_name")
    ID_FIELD_NUMBER: _ClassVar[int]
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    kb_id: str
    file_id: str
    question: str
    similar_questions: _containers.RepeatedScalarFieldContainer[str]
    answer: str
    file_name: str
    def __init__(self, id: _Optional[str] = ..., kb_id: _Optional[str] = ..., file_id: _Optional[str] = ..., question: _Optional[str] = ..., similar_questions: _Optional[_Iterable[str]] = ..., answer: _Optional[str] = ..., file_name: _Optional[str] = ...) -> None: ...

class KnowledgeFile(_message.Message):
    __slots__ = ("id", "kb_id", "owner_id", "name", "size_bytes", "md5", "mime_type", "status", "progress_percent", "chunk_count", "error", "chunking_rule", "tags", "metadata", "page_count", "create_time", "update_time", "process_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MD5_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_RULE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PROCESS_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    kb_id: str
    owner_id: str
    name: str
    size_bytes: int
    md5: str
    mime_type: str
    status: FileStatus
    progress_percent: int
    chunk_count: int
    error: _status_pb2.Status
    chunking_rule: ChunkingRule
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _struct_pb2.Struct
    page_count: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    process_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., kb_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., md5: _Optional[str] = ..., mime_type: _Optional[str] = ..., status: _Optional[_Union[FileStatus, str]] = ..., progress_percent: _Optional[int] = ..., chunk_count: _Optional[int] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., chunking_rule: _Optional[_Union[ChunkingRule, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., page_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., process_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PreviewChunk(_message.Message):
    __slots__ = ("index", "text", "token_count", "page", "model_token_count", "embedding_windows", "start_offset", "end_offset")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    token_count: int
    page: int
    model_token_count: int
    embedding_windows: int
    start_offset: int
    end_offset: int
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., token_count: _Optional[int] = ..., page: _Optional[int] = ..., model_token_count: _Optional[int] = ..., embedding_windows: _Optional[int] = ..., start_offset: _Optional[int] = ..., end_offset: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("id", "kb_id", "file_id", "index", "text", "page", "start_offset", "end_offset", "token_count", "edited", "file_name", "added")
    ID_FIELD_NUMBER: _ClassVar[int]
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    EDITED_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    id: str
    kb_id: str
    file_id: str
    index: int
    text: str
    page: int
    start_offset: int
    end_offset: int
    token_count: int
    edited: bool
    file_name: str
    added: bool
    def __init__(self, id: _Optional[str] = ..., kb_id: _Optional[str] = ..., file_id: _Optional[str] = ..., index: _Optional[int] = ..., text: _Optional[str] = ..., page: _Optional[int] = ..., start_offset: _Optional[int] = ..., end_offset: _Optional[int] = ..., token_count: _Optional[int] = ..., edited: _Optional[bool] = ..., file_name: _Optional[str] = ..., added: _Optional[bool] = ...) -> None: ...

class SearchFilter(_message.Message):
    __slots__ = ("file_ids", "tags", "metadata")
    FILE_IDS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    file_ids: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _struct_pb2.Struct
    def __init__(self, file_ids: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("chunk_id", "kb_id", "file_id", "file_name", "text", "score", "page", "chunk_index", "metadata", "vector_score", "keyword_score", "start_offset", "end_offset", "qa_pair_id", "question")
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VECTOR_SCORE_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_SCORE_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    QA_PAIR_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    chunk_id: str
    kb_id: str
    file_id: str
    file_name: str
    text: str
    score: float
    page: int
    chunk_index: int
    metadata: _struct_pb2.Struct
    vector_score: float
    keyword_score: float
    start_offset: int
    end_offset: int
    qa_pair_id: str
    question: str
    def __init__(self, chunk_id: _Optional[str] = ..., kb_id: _Optional[str] = ..., file_id: _Optional[str] = ..., file_name: _Optional[str] = ..., text: _Optional[str] = ..., score: _Optional[float] = ..., page: _Optional[int] = ..., chunk_index: _Optional[int] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., vector_score: _Optional[float] = ..., keyword_score: _Optional[float] = ..., start_offset: _Optional[int] = ..., end_offset: _Optional[int] = ..., qa_pair_id: _Optional[str] = ..., question: _Optional[str] = ...) -> None: ...

class CreateKnowledgeBaseRequest(_message.Message):
    __slots__ = ("knowledge_base",)
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: KnowledgeBase
    def __init__(self, knowledge_base: _Optional[_Union[KnowledgeBase, _Mapping]] = ...) -> None: ...

class CreateKnowledgeBaseResponse(_message.Message):
    __slots__ = ("knowledge_base",)
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: KnowledgeBase
    def __init__(self, knowledge_base: _Optional[_Union[KnowledgeBase, _Mapping]] = ...) -> None: ...

class ListKnowledgeBasesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "keyword", "owner_id")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    keyword: str
    owner_id: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., keyword: _Optional[str] = ..., owner_id: _Optional[str] = ...) -> None: ...

class ListKnowledgeBasesResponse(_message.Message):
    __slots__ = ("knowledge_bases", "next_page_token", "total_size")
    KNOWLEDGE_BASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    knowledge_bases: _containers.RepeatedCompositeFieldContainer[KnowledgeBase]
    next_page_token: str
    total_size: int
    def __init__(self, knowledge_bases: _Optional[_Iterable[_Union[KnowledgeBase, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetKnowledgeBaseRequest(_message.Message):
    __slots__ = ("kb_id",)
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    def __init__(self, kb_id: _Optional[str] = ...) -> None: ...

class GetKnowledgeBaseResponse(_message.Message):
    __slots__ = ("knowledge_base",)
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: KnowledgeBase
    def __init__(self, knowledge_base: _Optional[_Union[KnowledgeBase, _Mapping]] = ...) -> None: ...

class UpdateKnowledgeBaseRequest(_message.Message):
    __slots__ = ("knowledge_base", "update_mask")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: KnowledgeBase
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, knowledge_base: _Optional[_Union[KnowledgeBase, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateKnowledgeBaseResponse(_message.Message):
    __slots__ = ("knowledge_base",)
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: KnowledgeBase
    def __init__(self, knowledge_base: _Optional[_Union[KnowledgeBase, _Mapping]] = ...) -> None: ...

class DeleteKnowledgeBaseRequest(_message.Message):
    __slots__ = ("kb_id",)
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    def __init__(self, kb_id: _Optional[str] = ...) -> None: ...

class DeleteKnowledgeBaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UploadFileRequest(_message.Message):
    __slots__ = ("kb_id", "file_name", "content_type", "chunking_rule", "tags", "metadata", "size_bytes", "allow_duplicate", "chunk")
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_RULE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    file_name: str
    content_type: str
    chunking_rule: ChunkingRule
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _struct_pb2.Struct
    size_bytes: int
    allow_duplicate: bool
    chunk: bytes
    def __init__(self, kb_id: _Optional[str] = ..., file_name: _Optional[str] = ..., content_type: _Optional[str] = ..., chunking_rule: _Optional[_Union[ChunkingRule, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., size_bytes: _Optional[int] = ..., allow_duplicate: _Optional[bool] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadFileResponse(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: KnowledgeFile
    def __init__(self, file: _Optional[_Union[KnowledgeFile, _Mapping]] = ...) -> None: ...

class AddTextFileRequest(_message.Message):
    __slots__ = ("kb_id", "name", "text", "chunking_rule", "tags", "metadata")
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_RULE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    name: str
    text: str
    chunking_rule: ChunkingRule
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _struct_pb2.Struct
    def __init__(self, kb_id: _Optional[str] = ..., name: _Optional[str] = ..., text: _Optional[str] = ..., chunking_rule: _Optional[_Union[ChunkingRule, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class AddTextFileResponse(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: KnowledgeFile
    def __init__(self, file: _Optional[_Union[KnowledgeFile, _Mapping]] = ...) -> None: ...

class ListFilesRequest(_message.Message):
    __slots__ = ("kb_id", "page_size", "page_token", "status", "keyword", "tag")
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    page_size: int
    page_token: str
    status: FileStatus
    keyword: str
    tag: str
    def __init__(self, kb_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[FileStatus, str]] = ..., keyword: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class ListFilesResponse(_message.Message):
    __slots__ = ("files", "next_page_token", "total_size")
    FILES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[KnowledgeFile]
    next_page_token: str
    total_size: int
    def __init__(self, files: _Optional[_Iterable[_Union[KnowledgeFile, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetFileRequest(_message.Message):
    __slots__ = ("file_id",)
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    def __init__(self, file_id: _Optional[str] = ...) -> None: ...

class GetFileResponse(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: KnowledgeFile
    def __init__(self, file: _Optional[_Union[KnowledgeFile, _Mapping]] = ...) -> None: ...

class DeleteFileRequest(_message.Message):
    __slots__ = ("file_id",)
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    def __init__(self, file_id: _Optional[str] = ...) -> None: ...

class DeleteFileResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReprocessFileRequest(_message.Message):
    __slots__ = ("file_id", "chunking_rule")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_RULE_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    chunking_rule: ChunkingRule
    def __init__(self, file_id: _Optional[str] = ..., chunking_rule: _Optional[_Union[ChunkingRule, _Mapping]] = ...) -> None: ...

class ReprocessFileResponse(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: KnowledgeFile
    def __init__(self, file: _Optional[_Union[KnowledgeFile, _Mapping]] = ...) -> None: ...

class WatchFileRequest(_message.Message):
    __slots__ = ("file_id",)
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    def __init__(self, file_id: _Optional[str] = ...) -> None: ...

class WatchFileResponse(_message.Message):
    __slots__ = ("seq", "file_id", "status", "progress_percent", "chunk_count", "error", "time")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    seq: int
    file_id: str
    status: FileStatus
    progress_percent: int
    chunk_count: int
    error: _status_pb2.Status
    time: _timestamp_pb2.Timestamp
    def __init__(self, seq: _Optional[int] = ..., file_id: _Optional[str] = ..., status: _Optional[_Union[FileStatus, str]] = ..., progress_percent: _Optional[int] = ..., chunk_count: _Optional[int] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PreviewChunksRequest(_message.Message):
    __slots__ = ("kb_id", "text", "file_id", "chunking_rule", "max_chunks")
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_RULE_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    text: str
    file_id: str
    chunking_rule: ChunkingRule
    max_chunks: int
    def __init__(self, kb_id: _Optional[str] = ..., text: _Optional[str] = ..., file_id: _Optional[str] = ..., chunking_rule: _Optional[_Union[ChunkingRule, _Mapping]] = ..., max_chunks: _Optional[int] = ...) -> None: ...

class PreviewChunksResponse(_message.Message):
    __slots__ = ("chunks", "total_chunks", "elapsed", "window_tokens", "model_tokens_exact")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    WINDOW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODEL_TOKENS_EXACT_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[PreviewChunk]
    total_chunks: int
    elapsed: _duration_pb2.Duration
    window_tokens: int
    model_tokens_exact: bool
    def __init__(self, chunks: _Optional[_Iterable[_Union[PreviewChunk, _Mapping]]] = ..., total_chunks: _Optional[int] = ..., elapsed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., window_tokens: _Optional[int] = ..., model_tokens_exact: _Optional[bool] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("kb_ids", "query", "mode", "top_k", "score_threshold", "vector_weight", "filter", "rerank_model_id")
    KB_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VECTOR_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    RERANK_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    kb_ids: _containers.RepeatedScalarFieldContainer[str]
    query: str
    mode: SearchMode
    top_k: int
    score_threshold: float
    vector_weight: float
    filter: SearchFilter
    rerank_model_id: str
    def __init__(self, kb_ids: _Optional[_Iterable[str]] = ..., query: _Optional[str] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., top_k: _Optional[int] = ..., score_threshold: _Optional[float] = ..., vector_weight: _Optional[float] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., rerank_model_id: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "usage", "elapsed")
    HITS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    usage: _common_pb2.Usage
    elapsed: _duration_pb2.Duration
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., elapsed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ListChunksRequest(_message.Message):
    __slots__ = ("kb_id", "file_id", "keyword", "page_size", "page_token")
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    file_id: str
    keyword: str
    page_size: int
    page_token: str
    def __init__(self, kb_id: _Optional[str] = ..., file_id: _Optional[str] = ..., keyword: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListChunksResponse(_message.Message):
    __slots__ = ("chunks", "next_page_token", "total_size")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    next_page_token: str
    total_size: int
    def __init__(self, chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetChunkRequest(_message.Message):
    __slots__ = ("chunk_id",)
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    chunk_id: str
    def __init__(self, chunk_id: _Optional[str] = ...) -> None: ...

class GetChunkResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: Chunk
    def __init__(self, chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class UpdateChunkRequest(_message.Message):
    __slots__ = ("chunk", "update_mask")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    chunk: Chunk
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, chunk: _Optional[_Union[Chunk, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateChunkResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: Chunk
    def __init__(self, chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class DeleteChunkRequest(_message.Message):
    __slots__ = ("chunk_id",)
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    chunk_id: str
    def __init__(self, chunk_id: _Optional[str] = ...) -> None: ...

class DeleteChunkResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddChunkRequest(_message.Message):
    __slots__ = ("file_id", "chunk")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    chunk: Chunk
    def __init__(self, file_id: _Optional[str] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class AddChunkResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: Chunk
    def __init__(self, chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class DownloadFileRequest(_message.Message):
    __slots__ = ("file_id", "range", "inline", "redirect")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    range: str
    inline: bool
    redirect: bool
    def __init__(self, file_id: _Optional[str] = ..., range: _Optional[str] = ..., inline: _Optional[bool] = ..., redirect: _Optional[bool] = ...) -> None: ...

class CreateQAPairRequest(_message.Message):
    __slots__ = ("kb_id", "qa_pair")
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    QA_PAIR_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    qa_pair: QAPair
    def __init__(self, kb_id: _Optional[str] = ..., qa_pair: _Optional[_Union[QAPair, _Mapping]] = ...) -> None: ...

class CreateQAPairResponse(_message.Message):
    __slots__ = ("qa_pair",)
    QA_PAIR_FIELD_NUMBER: _ClassVar[int]
    qa_pair: QAPair
    def __init__(self, qa_pair: _Optional[_Union[QAPair, _Mapping]] = ...) -> None: ...

class ListQAPairsRequest(_message.Message):
    __slots__ = ("kb_id", "file_id", "keyword", "page_size", "page_token")
    KB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    kb_id: str
    file_id: str
    keyword: str
    page_size: int
    page_token: str
    def __init__(self, kb_id: _Optional[str] = ..., file_id: _Optional[str] = ..., keyword: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListQAPairsResponse(_message.Message):
    __slots__ = ("qa_pairs", "next_page_token", "total_size")
    QA_PAIRS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    qa_pairs: _containers.RepeatedCompositeFieldContainer[QAPair]
    next_page_token: str
    total_size: int
    def __init__(self, qa_pairs: _Optional[_Iterable[_Union[QAPair, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetQAPairRequest(_message.Message):
    __slots__ = ("pair_id",)
    PAIR_ID_FIELD_NUMBER: _ClassVar[int]
    pair_id: str
    def __init__(self, pair_id: _Optional[str] = ...) -> None: ...

class GetQAPairResponse(_message.Message):
    __slots__ = ("qa_pair",)
    QA_PAIR_FIELD_NUMBER: _ClassVar[int]
    qa_pair: QAPair
    def __init__(self, qa_pair: _Optional[_Union[QAPair, _Mapping]] = ...) -> None: ...

class UpdateQAPairRequest(_message.Message):
    __slots__ = ("qa_pair", "update_mask")
    QA_PAIR_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    qa_pair: QAPair
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, qa_pair: _Optional[_Union[QAPair, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateQAPairResponse(_message.Message):
    __slots__ = ("qa_pair",)
    QA_PAIR_FIELD_NUMBER: _ClassVar[int]
    qa_pair: QAPair
    def __init__(self, qa_pair: _Optional[_Union[QAPair, _Mapping]] = ...) -> None: ...

class DeleteQAPairRequest(_message.Message):
    __slots__ = ("pair_id",)
    PAIR_ID_FIELD_NUMBER: _ClassVar[int]
    pair_id: str
    def __init__(self, pair_id: _Optional[str] = ...) -> None: ...

class DeleteQAPairResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
