"""The built-in templates: YAML files shipped in the ``taskorch/templates/`` data folder.

They are read and checked once at start-up; a bad file is a packaging bug, not a user error.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

import yaml

from taskorch.core.templates.definition import Template, parse_template
from taskorch.domain.errors import InvalidArgument


def builtin_directory() -> Traversable:
    return resources.files("taskorch") / "templates"


def load_builtin_templates(directory: Traversable | None = None) -> dict[str, Template]:
    """Reads and checks every ``*.yaml`` template shipped with the package.

    Raises:
        ValueError: a file is not a valid template, or two share a name (a packaging bug).
    """
    found: dict[str, Template] = {}
    folder = directory or builtin_directory()
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith((".yaml", ".yml")):
            continue
        try:
            template = parse_template(
                yaml.safe_load(entry.read_text(encoding="utf-8")), builtin=True, where=entry.name
            )
        except (InvalidArgument, yaml.YAMLError) as exc:
            raise ValueError(f"built-in template {entry.name} is invalid: {exc}") from exc
        if template.name in found:
            raise ValueError(f"two built-in templates are named {template.name!r}")
        found[template.name] = template
    return found
