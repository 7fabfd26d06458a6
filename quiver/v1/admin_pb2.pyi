from quiver.v1 import quiver_pb2 as _quiver_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterStatusResponse(_message.Message):
    __slots__ = ("nodes", "collections", "operations", "metadata_backend", "coordinators")
    NODES_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    METADATA_BACKEND_FIELD_NUMBER: _ClassVar[int]
    COORDINATORS_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    collections: _containers.RepeatedCompositeFieldContainer[_quiver_pb2.CollectionInfo]
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    metadata_backend: str
    coordinators: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., collections: _Optional[_Iterable[_Union[_quiver_pb2.CollectionInfo, _Mapping]]] = ..., operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., metadata_backend: _Optional[str] = ..., coordinators: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("address", "state", "healthy", "error", "shards", "points", "ram_bytes", "disk_bytes")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    RAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    address: str
    state: str
    healthy: bool
    error: str
    shards: int
    points: int
    ram_bytes: int
    disk_bytes: int
    def __init__(self, address: _Optional[str] = ..., state: _Optional[str] = ..., healthy: _Optional[bool] = ..., error: _Optional[str] = ..., shards: _Optional[int] = ..., points: _Optional[int] = ..., ram_bytes: _Optional[int] = ..., disk_bytes: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class AddNodeRequest(_message.Message):
    __slots__ = ("address", "allow_unreachable")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    address: str
    allow_unreachable: bool
    def __init__(self, address: _Optional[str] = ..., allow_unreachable: _Optional[bool] = ...) -> None: ...

class RemoveNodeRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class MoveShardRequest(_message.Message):
    __slots__ = ("collection", "shard_id", "from_node", "to_node")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    shard_id: int
    from_node: str
    to_node: str
    def __init__(self, collection: _Optional[str] = ..., shard_id: _Optional[int] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ...) -> None: ...

class ReplicateShardRequest(_message.Message):
    __slots__ = ("collection", "shard_id", "to_node", "from_node")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    shard_id: int
    to_node: str
    from_node: str
    def __init__(self, collection: _Optional[str] = ..., shard_id: _Optional[int] = ..., to_node: _Optional[str] = ..., from_node: _Optional[str] = ...) -> None: ...

class DropReplicaRequest(_message.Message):
    __slots__ = ("collection", "shard_id", "node")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    shard_id: int
    node: str
    def __init__(self, collection: _Optional[str] = ..., shard_id: _Optional[int] = ..., node: _Optional[str] = ...) -> None: ...

class DropReplicaResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RebalanceRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class GetOperationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListOperationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListOperationsResponse(_message.Message):
    __slots__ = ("operations",)
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    def __init__(self, operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("id", "kind", "state", "error", "transfers", "description")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    state: str
    error: str
    transfers: _containers.RepeatedCompositeFieldContainer[Transfer]
    description: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., transfers: _Optional[_Iterable[_Union[Transfer, _Mapping]]] = ..., description: _Optional[str] = ...) -> None: ...

class Transfer(_message.Message):
    __slots__ = ("collection", "shard_id", "from_node", "to_node", "move", "state", "points_copied", "points_total", "error")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    MOVE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POINTS_COPIED_FIELD_NUMBER: _ClassVar[int]
    POINTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    collection: str
    shard_id: int
    from_node: str
    to_node: str
    move: bool
    state: str
    points_copied: int
    points_total: int
    error: str
    def __init__(self, collection: _Optional[str] = ..., shard_id: _Optional[int] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., move: _Optional[bool] = ..., state: _Optional[str] = ..., points_copied: _Optional[int] = ..., points_total: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("collection", "shard_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    shard_id: int
    def __init__(self, collection: _Optional[str] = ..., shard_id: _Optional[int] = ...) -> None: ...

class SnapshotPart(_message.Message):
    __slots__ = ("header", "chunk", "shard_end")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SHARD_END_FIELD_NUMBER: _ClassVar[int]
    header: SnapshotHeader
    chunk: SnapshotData
    shard_end: SnapshotShardEnd
    def __init__(self, header: _Optional[_Union[SnapshotHeader, _Mapping]] = ..., chunk: _Optional[_Union[SnapshotData, _Mapping]] = ..., shard_end: _Optional[_Union[SnapshotShardEnd, _Mapping]] = ...) -> None: ...

class SnapshotHeader(_message.Message):
    __slots__ = ("format_version", "collection", "collection_json", "shard_ids", "restore_as", "created_at")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_JSON_FIELD_NUMBER: _ClassVar[int]
    SHARD_IDS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_AS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    collection: str
    collection_json: str
    shard_ids: _containers.RepeatedScalarFieldContainer[int]
    restore_as: str
    created_at: str
    def __init__(self, format_version: _Optional[int] = ..., collection: _Optional[str] = ..., collection_json: _Optional[str] = ..., shard_ids: _Optional[_Iterable[int]] = ..., restore_as: _Optional[str] = ..., created_at: _Optional[str] = ...) -> None: ...

class SnapshotData(_message.Message):
    __slots__ = ("shard_id", "data")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    data: bytes
    def __init__(self, shard_id: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class SnapshotShardEnd(_message.Message):
    __slots__ = ("shard_id", "size", "sha256", "points")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    shard_id: int
    size: int
    sha256: str
    points: int
    def __init__(self, shard_id: _Optional[int] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., points: _Optional[int] = ...) -> None: ...
