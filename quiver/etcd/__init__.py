"""Generated gRPC/protobuf code for quiver.etcd. Do not edit: run `python -m quiver.gen_protos`."""
