"""Generated protobuf and gRPC code for the taskorch.v1 API (``make proto``); never edit by hand."""
