"""Serve on gRPC's poller-driven sockets: import before grpc in a server process.

gRPC 1.85 reads a server's accepted connections (``event_engine_listener``)
and a channel's connections (``event_engine_client``) on EventEngine's own
thread pool, and hands every completion over to the thread that waits for it.
A search crosses a coordinator three times (the client's request, the two
nodes' answers), so those handovers are a large part of its latency on two
cores: with both experiments off, the sockets are read by the thread that
polls the completion queue instead, the coordinator makes ~5 fewer futex
calls a search (13.4 -> 8.7), and, measured with two local clusters side by
side on docs384 (queries alternating one by one between them, 1-bit os3):
p50 at concurrency 1 0.909x with the listener off, 0.958x more with the
client off as well, in every round.

Both are gRPC's own switches (``GRPC_EXPERIMENTS``), read once when gRPC
starts. An operator's own ``GRPC_EXPERIMENTS`` wins; a gRPC that no longer
knows a name logs "Unknown experiment" and goes on.
"""

import os

SERVER_EXPERIMENTS = "-event_engine_client,-event_engine_listener"

os.environ.setdefault("GRPC_EXPERIMENTS", SERVER_EXPERIMENTS)
