"""The templates package imports nothing itself: the scheduler's use of placeholders loads no
YAML, SQLAlchemy or template-store module (the service and the built-ins do, when asked)."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(statement: str) -> set[str]:
    watched = ("taskorch", "yaml", "sqlalchemy")
    code = (
        f"import sys; {statement}; "
        f"print('\\n'.join(m for m in sys.modules if m.startswith({watched!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_placeholders_load_no_yaml_or_store() -> None:
    loaded = _loaded_after("import taskorch.core.templates.placeholders")
    assert "taskorch.core.templates.placeholders" in loaded
    assert not {m for m in loaded if m.startswith(("yaml", "sqlalchemy", "taskorch.store"))}
    assert "taskorch.core.templates.service" not in loaded


def test_the_service_brings_the_built_ins_and_the_store() -> None:
    loaded = _loaded_after("import taskorch.core.templates.service")
    assert {"yaml", "taskorch.store.templates", "taskorch.core.templates.builtin"} <= loaded
