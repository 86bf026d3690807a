"""Artifacts: the bytes a handler returns in its result are taken out and described by name,
content type and size; a bad entry is refused naming its field."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from taskorch.domain.artifacts import MAX_ARTIFACTS, Artifact, split_artifacts
from taskorch.domain.errors import InvalidArgument

WAV = Artifact("speech.wav", "audio/wav", b"RIFF....WAVEfmt ")


def test_the_bytes_leave_the_result_which_keeps_a_description() -> None:
    png = Artifact("plot.png", "image/png", bytes(range(256)))
    result = {"text": "ok", "artifacts": [WAV.to_transport(), png.to_transport()]}
    stripped, artifacts = split_artifacts(result)
    assert artifacts == [WAV, png]
    assert stripped == {
        "text": "ok",
        "artifacts": [
            {"name": "speech.wav", "content_type": "audio/wav", "size": 16},
            {"name": "plot.png", "content_type": "image/png", "size": 256},
        ],
    }
    assert "data_base64" in result["artifacts"][0]  # the handler's result is not changed


@pytest.mark.parametrize(
    "result",
    [None, {"text": "no artifacts"}, {"artifacts": [{"name": "a", "size": 3}]}, ["a", "b"]],
)
def test_results_without_artifact_bytes_are_kept_as_they_are(result: Any) -> None:
    assert split_artifacts(result) == (result, [])


def _entry(**fields: Any) -> dict[str, Any]:
    return {**WAV.to_transport(), **fields}


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ([_entry(), "not an object"], "result.artifacts[1]"),
        ([_entry(name="../etc/passwd")], "result.artifacts[0].name"),
        ([_entry(name="")], "result.artifacts[0].name"),
        ([_entry(content_type="wav")], "result.artifacts[0].content_type"),
        ([_entry(data_base64="***")], "result.artifacts[0].data_base64"),
        ([_entry(data_base64=5)], "result.artifacts[0].data_base64"),
        ([_entry(), _entry()], "result.artifacts[1].name"),  # the same name twice
        ([_entry(name=f"a{i}") for i in range(MAX_ARTIFACTS + 1)], "result.artifacts"),
    ],
)
def test_a_bad_artifact_is_refused_naming_its_field(entries: list[Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        split_artifacts({"artifacts": entries})
    assert caught.value.metadata.get("field") == field, caught.value.message


def test_the_transport_form_round_trips() -> None:
    sent = WAV.to_transport()
    assert base64.b64decode(sent["data_base64"]) == WAV.data
    assert split_artifacts({"artifacts": [sent]})[1] == [WAV]
