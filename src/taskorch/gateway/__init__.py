"""The REST gateway: Envoy with the gRPC-JSON transcoder in front of the gRPC server.

``config`` renders Envoy's configuration, ``descriptor`` builds the descriptor set the
transcoder needs, ``openapi`` describes the REST surface, and ``launcher`` runs Envoy as a
child of ``taskorch serve``.
"""
