"""Quiver's wire package: the client library, the generated quiver.v1 code, the CLI and the local-cluster launcher."""
