from quiver.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShardRef(_message.Message):
    __slots__ = ("collection", "shard_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    shard_id: int
    def __init__(self, collection: _Optional[str] = ..., shard_id: _Optional[int] = ...) -> None: ...

class CreateShardRequest(_message.Message):
    __slots__ = ("shard", "config_json", "exist_ok")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    EXIST_OK_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    config_json: str
    exist_ok: bool
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., config_json: _Optional[str] = ..., exist_ok: _Optional[bool] = ...) -> None: ...

class CreateShardResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class DropShardResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class ListShardsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListShardsResponse(_message.Message):
    __slots__ = ("shards",)
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedCompositeFieldContainer[ShardStats]
    def __init__(self, shards: _Optional[_Iterable[_Union[ShardStats, _Mapping]]] = ...) -> None: ...

class ShardStats(_message.Message):
    __slots__ = ("shard", "points", "ram_bytes", "disk_bytes", "originals_read", "searches")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    RAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    ORIGINALS_READ_FIELD_NUMBER: _ClassVar[int]
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    points: int
    ram_bytes: int
    disk_bytes: int
    originals_read: int
    searches: int
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., points: _Optional[int] = ..., ram_bytes: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., originals_read: _Optional[int] = ..., searches: _Optional[int] = ...) -> None: ...

class ShardUpsertRequest(_message.Message):
    __slots__ = ("shard", "ids", "vectors", "payloads")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    ids: bytes
    vectors: _common_pb2.Vectors
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., ids: _Optional[bytes] = ..., vectors: _Optional[_Union[_common_pb2.Vectors, _Mapping]] = ..., payloads: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ShardUpsertResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class ShardIdsRequest(_message.Message):
    __slots__ = ("shard", "ids")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    ids: bytes
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., ids: _Optional[bytes] = ...) -> None: ...

class ShardDeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class ShardRetrieveRequest(_message.Message):
    __slots__ = ("shard", "ids", "with_payload", "with_vector")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTOR_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    ids: bytes
    with_payload: bool
    with_vector: bool
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., ids: _Optional[bytes] = ..., with_payload: _Optional[bool] = ..., with_vector: _Optional[bool] = ...) -> None: ...

class ShardPoints(_message.Message):
    __slots__ = ("ids", "scores", "payloads", "vectors")
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ids: bytes
    scores: bytes
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    vectors: _common_pb2.Vectors
    def __init__(self, ids: _Optional[bytes] = ..., scores: _Optional[bytes] = ..., payloads: _Optional[_Iterable[bytes]] = ..., vectors: _Optional[_Union[_common_pb2.Vectors, _Mapping]] = ...) -> None: ...

class ShardCountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class ShardSearchRequest(_message.Message):
    __slots__ = ("shard", "queries", "limit", "oversampling", "rescore", "ignore", "exact", "effort", "with_payload", "with_vector", "score_threshold")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OVERSAMPLING_FIELD_NUMBER: _ClassVar[int]
    RESCORE_FIELD_NUMBER: _ClassVar[int]
    IGNORE_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    EFFORT_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTOR_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    queries: _common_pb2.Vectors
    limit: int
    oversampling: float
    rescore: bool
    ignore: bool
    exact: bool
    effort: int
    with_payload: bool
    with_vector: bool
    score_threshold: float
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., queries: _Optional[_Union[_common_pb2.Vectors, _Mapping]] = ..., limit: _Optional[int] = ..., oversampling: _Optional[float] = ..., rescore: _Optional[bool] = ..., ignore: _Optional[bool] = ..., exact: _Optional[bool] = ..., effort: _Optional[int] = ..., with_payload: _Optional[bool] = ..., with_vector: _Optional[bool] = ..., score_threshold: _Optional[float] = ...) -> None: ...

class ShardSearchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ShardPoints]
    def __init__(self, results: _Optional[_Iterable[_Union[ShardPoints, _Mapping]]] = ...) -> None: ...

class ShardSearchStreamRequest(_message.Message):
    __slots__ = ("tag", "search")
    TAG_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    tag: int
    search: ShardSearchRequest
    def __init__(self, tag: _Optional[int] = ..., search: _Optional[_Union[ShardSearchRequest, _Mapping]] = ...) -> None: ...

class ShardSearchStreamResponse(_message.Message):
    __slots__ = ("tag", "result", "status")
    TAG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    tag: int
    result: ShardSearchResponse
    status: _common_pb2.CallStatus
    def __init__(self, tag: _Optional[int] = ..., result: _Optional[_Union[ShardSearchResponse, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.CallStatus, _Mapping]] = ...) -> None: ...

class ExportShardRequest(_message.Message):
    __slots__ = ("shard", "batch_size")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    batch_size: int
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., batch_size: _Optional[int] = ...) -> None: ...

class BeginReceiveRequest(_message.Message):
    __slots__ = ("shard", "config_json", "token", "replace")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    config_json: str
    token: str
    replace: bool
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., config_json: _Optional[str] = ..., token: _Optional[str] = ..., replace: _Optional[bool] = ...) -> None: ...

class BeginReceiveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ImportPointsRequest(_message.Message):
    __slots__ = ("shard", "token", "points")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    token: str
    points: ShardPoints
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., token: _Optional[str] = ..., points: _Optional[_Union[ShardPoints, _Mapping]] = ...) -> None: ...

class ImportPointsResponse(_message.Message):
    __slots__ = ("imported", "skipped")
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    imported: int
    skipped: int
    def __init__(self, imported: _Optional[int] = ..., skipped: _Optional[int] = ...) -> None: ...

class EndReceiveRequest(_message.Message):
    __slots__ = ("shard", "token")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    token: str
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class EndReceiveResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: int
    def __init__(self, points: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("shard", "config_json", "data", "sha256", "size", "points")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    config_json: str
    data: bytes
    sha256: str
    size: int
    points: int
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., config_json: _Optional[str] = ..., data: _Optional[bytes] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., points: _Optional[int] = ...) -> None: ...

class RestoreShardResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: int
    def __init__(self, points: _Optional[int] = ...) -> None: ...
