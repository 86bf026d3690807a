"""The gRPC server: servicers, interceptors, the web endpoint and the process (``app.py``)."""
