"""The ``taskorch`` command line.

The lead mounts ``taskorch.cli.models.app`` as ``taskorch models``.
"""
