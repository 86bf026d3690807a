"""``python -m taskorch`` is the ``taskorch`` command."""

from taskorch.cli import main

main()
