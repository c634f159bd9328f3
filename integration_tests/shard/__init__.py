"""The local-shard launcher: a patched TGI v3.3.7 server on CPU, driven over gRPC like the router."""
