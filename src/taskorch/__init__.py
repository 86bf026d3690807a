"""taskorch: queue, schedule, run and stream AI tasks over gRPC."""

__version__ = "0.1.0"
