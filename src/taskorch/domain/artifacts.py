"""Task artifacts: the binary results of a task (a WAV, a PNG), stored beside it.

A handler returns its artifacts inside its result, under ``artifacts``, each as
``{"name", "content_type", "data_base64"}`` (the one form that also crosses a remote worker's
gRPC stream). On completion the bytes are taken out and stored in their own table; the task's
result keeps ``artifacts: [{"name", "content_type", "size"}]``, so no list, get or watch
response carries the bytes. They are read one at a time with ``GET
/v1/tasks/{task_id}/artifacts/{name}``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskorch.domain.errors import InvalidArgument
from taskorch.domain.limits import MAX_MESSAGE_BYTES, MiB
from taskorch.domain.values import JSON

ARTIFACTS_KEY = "artifacts"
MAX_ARTIFACTS = 16
# One artifact's bytes: it is served whole in one message (at most MAX_MESSAGE_BYTES, 16 MiB).
# A minute of 22 kHz 16-bit mono WAV is 2.6 MB. A remote worker's artifacts travel in its
# result (base64, within MAX_RESULT_BYTES), so there they total about 6 MiB at most.
MAX_ARTIFACT_BYTES = MAX_MESSAGE_BYTES - 4 * MiB
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
CONTENT_TYPE = re.compile(r"^[a-z0-9.+-]+/[a-zA-Z0-9.+-]+$")


@dataclass(frozen=True)
class Artifact:
    """One binary result of a task."""

    name: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def describe(self) -> dict[str, Any]:
        """The entry the task's result lists (no bytes)."""
        return {"name": self.name, "content_type": self.content_type, "size": self.size}

    def to_transport(self) -> dict[str, Any]:
        """The form a handler returns inside its result."""
        return {
            "name": self.name,
            "content_type": self.content_type,
            "data_base64": base64.b64encode(self.data).decode("ascii"),
        }


def split_artifacts(result: JSON | None) -> tuple[JSON | None, list[Artifact]]:
    """Takes the artifacts' bytes out of a handler's result.

    Returns:
        The result with ``artifacts`` described by name, content type and size, and the
        artifacts themselves (none: the result is returned as it was).

    Raises:
        InvalidArgument: an entry has a bad name, content type or base64, is too large, or two
            share a name (the field is named).
    """
    if not isinstance(result, Mapping):
        return result, []
    entries = result.get(ARTIFACTS_KEY)
    if not isinstance(entries, list) or not any(
        isinstance(e, Mapping) and "data_base64" in e for e in entries
    ):
        return result, []
    if len(entries) > MAX_ARTIFACTS:
        raise InvalidArgument(
            f"at most {MAX_ARTIFACTS} artifacts per task, got {len(entries)}",
            field="result.artifacts",
        )
    artifacts: list[Artifact] = []
    for index, entry in enumerate(entries):
        field = f"result.artifacts[{index}]"
        if not isinstance(entry, Mapping):
            raise InvalidArgument(f"{field} must be an object", field=field)
        name, content_type, data = (
            entry.get("name"),
            entry.get("content_type"),
            entry.get("data_base64"),
        )
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InvalidArgument(
                f"{field}.name: an artifact name is 1-200 letters, digits, '.', '_' or '-'",
                field=f"{field}.name",
            )
        if not isinstance(content_type, str) or not CONTENT_TYPE.match(content_type):
            raise InvalidArgument(
                f"{field}.content_type must be a media type such as audio/wav",
                field=f"{field}.content_type",
            )
        if not isinstance(data, str) or len(data) > MAX_ARTIFACT_BYTES * 4 // 3 + 4:
            raise InvalidArgument(
                f"{field}.data_base64 must be base64 of at most {MAX_ARTIFACT_BYTES} bytes",
                field=f"{field}.data_base64",
            )
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(
                f"{field}.data_base64 is not valid base64", field=f"{field}.data_base64"
            ) from None
        if any(a.name == name for a in artifacts):
            raise InvalidArgument(
                f"{field}.name: two artifacts are named {name!r}", field=f"{field}.name"
            )
        artifacts.append(Artifact(name, content_type, raw))
    stripped = dict(result)
    stripped[ARTIFACTS_KEY] = [a.describe() for a in artifacts]
    return stripped, artifacts
