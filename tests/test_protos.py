"""The generated code under quiver/v1/ is what `python -m quiver.gen_protos` makes from protos/."""

from __future__ import annotations

import importlib
import re

import pytest

from quiver import gen_protos

GENERATED = gen_protos.ROOT / gen_protos.PACKAGE_DIR


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    gen_protos.generate(out)
    return out / gen_protos.PACKAGE_DIR


def _generated_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".py", ".pyi"))


def test_generated_code_is_fresh(fresh):
    """Fails when a .proto changed without regenerating (run `python -m quiver.gen_protos`)."""
    assert _generated_files(fresh) == _generated_files(GENERATED), "run `python -m quiver.gen_protos`"
    stale = [name for name in _generated_files(fresh)
             if (fresh / name).read_text() != (GENERATED / name).read_text()]
    assert not stale, f"stale generated code {stale}: run `python -m quiver.gen_protos` and commit quiver/v1/"


def test_check_flag_reports_fresh_code():
    assert gen_protos.stale_files() == []


def test_descriptors_match_protos(fresh):
    """The committed modules' descriptors equal the .proto files' (independent of generator version text)."""
    from google.protobuf import descriptor_pb2

    for proto in gen_protos.proto_files():
        module = importlib.import_module("quiver.v1." + proto.stem + "_pb2")
        committed = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(committed)
        text = (fresh / f"{proto.stem}_pb2.py").read_text()
        blob = re.search(r"AddSerializedFile\((b'.*?')\)", text, re.S).group(1)
        regenerated = descriptor_pb2.FileDescriptorProto.FromString(eval(blob))  # noqa: S307 - a bytes literal
        assert committed == regenerated, f"{proto} changed: run `python -m quiver.gen_protos`"


def test_config_enums_cover_every_engine_choice():
    """Every distance / quantization option of shard.config has a wire enum value, and back."""
    from quiver.convert import str_to_enum, enum_to_str
    from shard import config

    for field, choices in [("distance", config.DISTANCES), ("kind", config.QUANTIZATIONS),
                           ("encoding", config.BINARY_ENCODINGS), ("query_encoding", config.BINARY_QUERY_ENCODINGS),
                           ("compression", config.PRODUCT_COMPRESSIONS)]:
        for c in choices:
            assert enum_to_str(field, str_to_enum(field, c)) == c


def test_quantization_and_index_messages_cover_every_config_field():
    import dataclasses

    from quiver.v1 import quiver_pb2
    from shard.config import HnswConfig, IndexConfig, QuantizationConfig

    for cls, msg in [(QuantizationConfig, quiver_pb2.QuantizationConfig), (IndexConfig, quiver_pb2.IndexConfig),
                     (HnswConfig, quiver_pb2.HnswConfig)]:
        assert {f.name for f in dataclasses.fields(cls)} == set(msg.DESCRIPTOR.fields_by_name)
