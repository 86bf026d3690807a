"""Writes the blocking SDK (``_sync_client.py``) from the asyncio one (``_async_client.py``).

The SDK's calls are written once, for asyncio; this script derives the blocking twin by
rewriting tokens (``async def`` -> ``def``, ``await x`` -> ``x``, ``AsyncClient`` ->
``Client``, ``grpc.aio`` -> ``grpc``, ``asyncio.sleep`` -> ``time.sleep``, "(asyncio)" ->
"(blocking)" in docstrings), then sorts imports and formats with ruff. The rules are few on
purpose: what does not translate this way does not belong in ``_async_client.py``.

    python tools/gen_sync_client.py          # rewrite _sync_client.py
    python tools/gen_sync_client.py --check  # exit 1 if it is not what the source gives
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parent.parent / "src" / "taskorch" / "client"
SOURCE = CLIENT / "_async_client.py"
TARGET = CLIENT / "_sync_client.py"

HEADER = '''"""The blocking SDK: :class:`Client` and its namespaces. GENERATED: do not edit.

Written by ``tools/gen_sync_client.py`` (``make sdk``) from ``_async_client.py``, the one
source of the SDK's calls; change that file and regenerate (``make sdk-check`` and
``tests/client/test_sync_async_parity.py`` fail while this one is stale).
"""
'''

# (pattern, replacement), applied in order.
RULES: list[tuple[str, str]] = [
    (r"\bAsyncGenerator\[(.+?), None\]", r"Generator[\1, None, None]"),
    (r"\basync (def|for|with)\b", r"\1"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\bgrpc\.aio\.AioRpcError\b", "grpc.RpcError"),
    (r"\bgrpc\.aio\.", "grpc."),
    (r"\basyncio\.sleep\b", "time.sleep"),
    (r"(?m)^import asyncio$", "import time"),
    (r"\bAsync(?=[A-Z])", ""),
    (r"\(asyncio\)", "(blocking)"),
]


def _ruff(args: list[str], text: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=CLIENT.parent.parent.parent,
    )
    if done.returncode != 0:
        raise SystemExit(f"ruff {args[0]} failed on the generated code:\n{done.stderr}")
    return done.stdout


def generate() -> str:
    """The text ``_sync_client.py`` should have."""
    source = SOURCE.read_text()
    # Drop the source's own module docstring: the header says what the file is.
    body = re.sub(r'\A""".*?"""\n', "", source, count=1, flags=re.S)
    for pattern, replacement in RULES:
        body = re.sub(pattern, replacement, body)
    text = HEADER + body
    # `for x in it: yield x` -> `yield from it`; imports sorted again after the renames.
    text = _ruff(
        ["check", "--fix", "--unsafe-fixes", "--select", "I,UP028", "--exit-zero", "--quiet"], text
    )
    return _ruff(["format", "--quiet"], text)


def main() -> int:
    """Writes or checks the generated file."""
    text = generate()
    if "--check" in sys.argv[1:]:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is stale: run `make sdk`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
