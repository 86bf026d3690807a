"""The blocking SDK is the asyncio SDK's twin: same methods, signatures and docstrings.

``_sync_client.py`` is generated from ``_async_client.py`` (tools/gen_sync_client.py); these
tests fail when it is stale, or when a hand edit breaks the twinning.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import taskorch.client
from taskorch.client import (
    AsyncChat,
    AsyncClient,
    AsyncCollections,
    AsyncModels,
    AsyncSchedules,
    AsyncTaskWatch,
    Chat,
    Client,
    Collections,
    Models,
    Schedules,
    TaskWatch,
)

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [
    (AsyncClient, Client),
    (AsyncChat, Chat),
    (AsyncCollections, Collections),
    (AsyncModels, Models),
    (AsyncSchedules, Schedules),
    (AsyncTaskWatch, TaskWatch),
]
# The sub-clients each client hangs on itself: (attribute, async class, sync class).
NAMESPACES = ["chat", "collections", "models", "schedules"]


def _public_methods(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


def _blocking(annotation: str) -> str:
    """An async annotation as its blocking twin reads it."""
    annotation = re.sub(r"\bAsyncGenerator\[(.+), None\]", r"Generator[\1, None, None]", annotation)
    annotation = re.sub(r"\bAwaitable\[(.+)\]", r"\1", annotation)
    return re.sub(r"\bAsync(?=[A-Z])", "", annotation)


def _signature(function: object, *, blocking: bool) -> list[tuple[str, str, str, str]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    convert = _blocking if blocking else str
    parts = [
        (p.name, str(p.kind), repr(p.default), convert(str(p.annotation)))
        for p in signature.parameters.values()
    ]
    parts.append(("return", "", "", convert(str(signature.return_annotation))))
    return parts


def test_the_generated_blocking_client_is_current() -> None:
    """``make sdk`` was run after the last change to ``_async_client.py``."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_sync_client.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_every_async_method_has_a_blocking_twin(async_cls: type, sync_cls: type) -> None:
    async_methods = _public_methods(async_cls)
    sync_methods = _public_methods(sync_cls)
    assert async_methods, async_cls
    assert set(sync_methods) == set(async_methods)
    for name, method in async_methods.items():
        twin = sync_methods[name]
        if not (inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)):
            # It opens what is used with ``async with`` (watch_tasks): plain on both sides.
            assert not inspect.isgeneratorfunction(twin), name
            assert _signature(twin, blocking=False) == _signature(method, blocking=True), name
            assert inspect.getdoc(twin) == inspect.getdoc(method), name
            continue
        assert not inspect.iscoroutinefunction(twin), name
        assert not inspect.isasyncgenfunction(twin), name
        assert inspect.isasyncgenfunction(method) == inspect.isgeneratorfunction(twin), name
        assert _signature(twin, blocking=False) == _signature(method, blocking=True), name
        assert inspect.getdoc(twin) == inspect.getdoc(method), name


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_the_constructors_match(async_cls: type, sync_cls: type) -> None:
    assert _signature(sync_cls.__init__, blocking=False) == _signature(
        async_cls.__init__, blocking=True
    )


def test_both_clients_have_the_same_namespaces() -> None:
    async def namespaces() -> dict[str, str]:
        async with AsyncClient("127.0.0.1:1") as client:
            return {name: type(getattr(client, name)).__name__ for name in NAMESPACES}

    with Client("127.0.0.1:1") as client:
        blocking = {name: type(getattr(client, name)).__name__ for name in NAMESPACES}
    assert {name: f"Async{cls}" for name, cls in blocking.items()} == asyncio.run(namespaces())


@pytest.mark.parametrize("cls", [c for pair in PAIRS for c in pair], ids=lambda c: c.__name__)
def test_every_public_method_has_a_google_style_docstring(cls: type) -> None:
    """ruff's pydocstyle skips private modules (``_client.py``), so check the SDK here."""
    assert inspect.getdoc(cls), cls
    for name, method in _public_methods(cls).items():
        doc = inspect.getdoc(method) or ""
        assert doc, f"{cls.__name__}.{name} has no docstring"
        summary, _, rest = doc.partition("\n")
        assert summary.endswith("."), f"{cls.__name__}.{name}: one-line summary ending in '.'"
        assert not rest or rest.startswith("\n"), f"{cls.__name__}.{name}: blank after summary"
        parameters = [p for p in inspect.signature(method).parameters.values() if p.name != "self"]
        for parameter in parameters:
            label = (
                f"**{parameter.name}" if parameter.kind is parameter.VAR_KEYWORD else parameter.name
            )
            assert f"\n    {label}:" in doc, f"{cls.__name__}.{name}: Args has no {label}"
        if parameters:
            assert "\nArgs:\n" in doc, f"{cls.__name__}.{name}"


def test_public_names_are_documented() -> None:
    for name in taskorch.client.__all__:
        assert inspect.getdoc(getattr(taskorch.client, name)), name
