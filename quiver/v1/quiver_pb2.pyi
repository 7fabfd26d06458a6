from quiver.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Distance(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISTANCE_UNSPECIFIED: _ClassVar[Distance]
    DISTANCE_COSINE: _ClassVar[Distance]
    DISTANCE_DOT: _ClassVar[Distance]
    DISTANCE_EUCLID: _ClassVar[Distance]

class QuantizationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUANTIZATION_KIND_UNSPECIFIED: _ClassVar[QuantizationKind]
    QUANTIZATION_KIND_NONE: _ClassVar[QuantizationKind]
    QUANTIZATION_KIND_SCALAR: _ClassVar[QuantizationKind]
    QUANTIZATION_KIND_BINARY: _ClassVar[QuantizationKind]
    QUANTIZATION_KIND_PRODUCT: _ClassVar[QuantizationKind]

class BinaryEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BINARY_ENCODING_UNSPECIFIED: _ClassVar[BinaryEncoding]
    BINARY_ENCODING_ONE_BIT: _ClassVar[BinaryEncoding]
    BINARY_ENCODING_ONE_AND_HALF_BITS: _ClassVar[BinaryEncoding]
    BINARY_ENCODING_TWO_BITS: _ClassVar[BinaryEncoding]

class BinaryQueryEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BINARY_QUERY_ENCODING_UNSPECIFIED: _ClassVar[BinaryQueryEncoding]
    BINARY_QUERY_ENCODING_BINARY: _ClassVar[BinaryQueryEncoding]
    BINARY_QUERY_ENCODING_SCALAR4BITS: _ClassVar[BinaryQueryEncoding]
    BINARY_QUERY_ENCODING_SCALAR8BITS: _ClassVar[BinaryQueryEncoding]

class ProductCompression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRODUCT_COMPRESSION_UNSPECIFIED: _ClassVar[ProductCompression]
    PRODUCT_COMPRESSION_X4: _ClassVar[ProductCompression]
    PRODUCT_COMPRESSION_X8: _ClassVar[ProductCompression]
    PRODUCT_COMPRESSION_X16: _ClassVar[ProductCompression]
    PRODUCT_COMPRESSION_X32: _ClassVar[ProductCompression]
    PRODUCT_COMPRESSION_X64: _ClassVar[ProductCompression]

class CollectionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLLECTION_STATUS_UNSPECIFIED: _ClassVar[CollectionStatus]
    COLLECTION_STATUS_GREEN: _ClassVar[CollectionStatus]
    COLLECTION_STATUS_YELLOW: _ClassVar[CollectionStatus]
    COLLECTION_STATUS_RED: _ClassVar[CollectionStatus]
DISTANCE_UNSPECIFIED: Distance
DISTANCE_COSINE: Distance
DISTANCE_DOT: Distance
DISTANCE_EUCLID: Distance
QUANTIZATION_KIND_UNSPECIFIED: QuantizationKind
QUANTIZATION_KIND_NONE: QuantizationKind
QUANTIZATION_KIND_SCALAR: QuantizationKind
QUANTIZATION_KIND_BINARY: QuantizationKind
QUANTIZATION_KIND_PRODUCT: QuantizationKind
BINARY_ENCODING_UNSPECIFIED: BinaryEncoding
BINARY_ENCODING_ONE_BIT: BinaryEncoding
BINARY_ENCODING_ONE_AND_HALF_BITS: BinaryEncoding
BINARY_ENCODING_TWO_BITS: BinaryEncoding
BINARY_QUERY_ENCODING_UNSPECIFIED: BinaryQueryEncoding
BINARY_QUERY_ENCODING_BINARY: BinaryQueryEncoding
BINARY_QUERY_ENCODING_SCALAR4BITS: BinaryQueryEncoding
BINARY_QUERY_ENCODING_SCALAR8BITS: BinaryQueryEncoding
PRODUCT_COMPRESSION_UNSPECIFIED: ProductCompression
PRODUCT_COMPRESSION_X4: ProductCompression
PRODUCT_COMPRESSION_X8: ProductCompression
PRODUCT_COMPRESSION_X16: ProductCompression
PRODUCT_COMPRESSION_X32: ProductCompression
PRODUCT_COMPRESSION_X64: ProductCompression
COLLECTION_STATUS_UNSPECIFIED: CollectionStatus
COLLECTION_STATUS_GREEN: CollectionStatus
COLLECTION_STATUS_YELLOW: CollectionStatus
COLLECTION_STATUS_RED: CollectionStatus

class QuantizationConfig(_message.Message):
    __slots__ = ("kind", "quantile", "encoding", "query_encoding", "compression", "seed")
    KIND_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    QUERY_ENCODING_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    kind: QuantizationKind
    quantile: float
    encoding: BinaryEncoding
    query_encoding: BinaryQueryEncoding
    compression: ProductCompression
    seed: int
    def __init__(self, kind: _Optional[_Union[QuantizationKind, str]] = ..., quantile: _Optional[float] = ..., encoding: _Optional[_Union[BinaryEncoding, str]] = ..., query_encoding: _Optional[_Union[BinaryQueryEncoding, str]] = ..., compression: _Optional[_Union[ProductCompression, str]] = ..., seed: _Optional[int] = ...) -> None: ...

class IndexConfig(_message.Message):
    __slots__ = ("full_scan_threshold", "nlist", "nprobe", "train_sample", "retrain_growth", "scan_factor")
    FULL_SCAN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NLIST_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_GROWTH_FIELD_NUMBER: _ClassVar[int]
    SCAN_FACTOR_FIELD_NUMBER: _ClassVar[int]
    full_scan_threshold: int
    nlist: int
    nprobe: int
    train_sample: int
    retrain_growth: float
    scan_factor: int
    def __init__(self, full_scan_threshold: _Optional[int] = ..., nlist: _Optional[int] = ..., nprobe: _Optional[int] = ..., train_sample: _Optional[int] = ..., retrain_growth: _Optional[float] = ..., scan_factor: _Optional[int] = ...) -> None: ...

class HnswConfig(_message.Message):
    __slots__ = ("m", "ef_construct", "ef", "rebuild_deleted")
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCT_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    REBUILD_DELETED_FIELD_NUMBER: _ClassVar[int]
    m: int
    ef_construct: int
    ef: int
    rebuild_deleted: float
    def __init__(self, m: _Optional[int] = ..., ef_construct: _Optional[int] = ..., ef: _Optional[int] = ..., rebuild_deleted: _Optional[float] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "dimension", "distance", "quantization", "index", "shard_number", "replication_factor", "write_consistency", "hnsw")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SHARD_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    HNSW_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimension: int
    distance: Distance
    quantization: QuantizationConfig
    index: IndexConfig
    shard_number: int
    replication_factor: int
    write_consistency: int
    hnsw: HnswConfig
    def __init__(self, name: _Optional[str] = ..., dimension: _Optional[int] = ..., distance: _Optional[_Union[Distance, str]] = ..., quantization: _Optional[_Union[QuantizationConfig, _Mapping]] = ..., index: _Optional[_Union[IndexConfig, _Mapping]] = ..., shard_number: _Optional[int] = ..., replication_factor: _Optional[int] = ..., write_consistency: _Optional[int] = ..., hnsw: _Optional[_Union[HnswConfig, _Mapping]] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardReplicaInfo(_message.Message):
    __slots__ = ("shard_id", "node", "available", "error", "points_count", "ram_bytes", "disk_bytes", "originals_read", "searches", "state")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    POINTS_COUNT_FIELD_NUMBER: _ClassVar[int]
    RAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    ORIGINALS_READ_FIELD_NUMBER: _ClassVar[int]
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    node: str
    available: bool
    error: str
    points_count: int
    ram_bytes: int
    disk_bytes: int
    originals_read: int
    searches: int
    state: str
    def __init__(self, shard_id: _Optional[int] = ..., node: _Optional[str] = ..., available: _Optional[bool] = ..., error: _Optional[str] = ..., points_count: _Optional[int] = ..., ram_bytes: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., originals_read: _Optional[int] = ..., searches: _Optional[int] = ..., state: _Optional[str] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "dimension", "distance", "quantization", "index", "shard_number", "replication_factor", "status", "points_count", "shards", "write_consistency", "hnsw")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SHARD_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    POINTS_COUNT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    HNSW_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimension: int
    distance: Distance
    quantization: QuantizationConfig
    index: IndexConfig
    shard_number: int
    replication_factor: int
    status: CollectionStatus
    points_count: int
    shards: _containers.RepeatedCompositeFieldContainer[ShardReplicaInfo]
    write_consistency: int
    hnsw: HnswConfig
    def __init__(self, name: _Optional[str] = ..., dimension: _Optional[int] = ..., distance: _Optional[_Union[Distance, str]] = ..., quantization: _Optional[_Union[QuantizationConfig, _Mapping]] = ..., index: _Optional[_Union[IndexConfig, _Mapping]] = ..., shard_number: _Optional[int] = ..., replication_factor: _Optional[int] = ..., status: _Optional[_Union[CollectionStatus, str]] = ..., points_count: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[ShardReplicaInfo, _Mapping]]] = ..., write_consistency: _Optional[int] = ..., hnsw: _Optional[_Union[HnswConfig, _Mapping]] = ...) -> None: ...

class PointIds(_message.Message):
    __slots__ = ("num", "uuid")
    NUM_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    num: _containers.RepeatedScalarFieldContainer[int]
    uuid: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, num: _Optional[_Iterable[int]] = ..., uuid: _Optional[_Iterable[str]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "ids", "vectors", "payloads")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: PointIds
    vectors: _common_pb2.Vectors
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[PointIds, _Mapping]] = ..., vectors: _Optional[_Union[_common_pb2.Vectors, _Mapping]] = ..., payloads: _Optional[_Iterable[bytes]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class GetPointsRequest(_message.Message):
    __slots__ = ("collection", "ids", "with_payload", "with_vector")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTOR_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: PointIds
    with_payload: bool
    with_vector: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[PointIds, _Mapping]] = ..., with_payload: _Optional[bool] = ..., with_vector: _Optional[bool] = ...) -> None: ...

class GetPointsResponse(_message.Message):
    __slots__ = ("ids", "payloads", "vectors")
    IDS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ids: PointIds
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    vectors: _common_pb2.Vectors
    def __init__(self, ids: _Optional[_Union[PointIds, _Mapping]] = ..., payloads: _Optional[_Iterable[bytes]] = ..., vectors: _Optional[_Union[_common_pb2.Vectors, _Mapping]] = ...) -> None: ...

class DeletePointsRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: PointIds
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Union[PointIds, _Mapping]] = ...) -> None: ...

class DeletePointsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class QuantizationSearchParams(_message.Message):
    __slots__ = ("ignore", "rescore", "oversampling")
    IGNORE_FIELD_NUMBER: _ClassVar[int]
    RESCORE_FIELD_NUMBER: _ClassVar[int]
    OVERSAMPLING_FIELD_NUMBER: _ClassVar[int]
    ignore: bool
    rescore: bool
    oversampling: float
    def __init__(self, ignore: _Optional[bool] = ..., rescore: _Optional[bool] = ..., oversampling: _Optional[float] = ...) -> None: ...

class SearchParams(_message.Message):
    __slots__ = ("nprobe", "hnsw_ef", "exact", "quantization")
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    HNSW_EF_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    nprobe: int
    hnsw_ef: int
    exact: bool
    quantization: QuantizationSearchParams
    def __init__(self, nprobe: _Optional[int] = ..., hnsw_ef: _Optional[int] = ..., exact: _Optional[bool] = ..., quantization: _Optional[_Union[QuantizationSearchParams, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "vectors", "limit", "offset", "score_threshold", "with_payload", "with_vector", "params", "allow_partial")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTOR_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    vectors: _common_pb2.Vectors
    limit: int
    offset: int
    score_threshold: float
    with_payload: bool
    with_vector: bool
    params: SearchParams
    allow_partial: bool
    def __init__(self, collection: _Optional[str] = ..., vectors: _Optional[_Union[_common_pb2.Vectors, _Mapping]] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., score_threshold: _Optional[float] = ..., with_payload: _Optional[bool] = ..., with_vector: _Optional[bool] = ..., params: _Optional[_Union[SearchParams, _Mapping]] = ..., allow_partial: _Optional[bool] = ...) -> None: ...

class ScoredPoints(_message.Message):
    __slots__ = ("ids", "scores", "payloads", "vectors")
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ids: PointIds
    scores: _containers.RepeatedScalarFieldContainer[float]
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    vectors: _common_pb2.Vectors
    def __init__(self, ids: _Optional[_Union[PointIds, _Mapping]] = ..., scores: _Optional[_Iterable[float]] = ..., payloads: _Optional[_Iterable[bytes]] = ..., vectors: _Optional[_Union[_common_pb2.Vectors, _Mapping]] = ...) -> None: ...

class SearchStreamRequest(_message.Message):
    __slots__ = ("tag", "search", "timeout_seconds")
    TAG_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tag: int
    search: SearchRequest
    timeout_seconds: float
    def __init__(self, tag: _Optional[int] = ..., search: _Optional[_Union[SearchRequest, _Mapping]] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class SearchStreamResponse(_message.Message):
    __slots__ = ("tag", "result", "status")
    TAG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    tag: int
    result: SearchResponse
    status: _common_pb2.CallStatus
    def __init__(self, tag: _Optional[int] = ..., result: _Optional[_Union[SearchResponse, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.CallStatus, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results", "shards_answered", "shards_total", "missing_shards")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_ANSWERED_FIELD_NUMBER: _ClassVar[int]
    SHARDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ScoredPoints]
    shards_answered: int
    shards_total: int
    missing_shards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, results: _Optional[_Iterable[_Union[ScoredPoints, _Mapping]]] = ..., shards_answered: _Optional[int] = ..., shards_total: _Optional[int] = ..., missing_shards: _Optional[_Iterable[str]] = ...) -> None: ...
