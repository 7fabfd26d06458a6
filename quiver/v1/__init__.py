"""Generated gRPC/protobuf code for quiver.v1. Do not edit: run `python -m quiver.gen_protos`."""
