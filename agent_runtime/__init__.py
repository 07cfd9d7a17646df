"""agent-runtime: a gRPC server-streaming backend for AI coding agents."""

__version__ = "0.1.0"
