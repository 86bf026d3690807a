"""The domain's values: status words of every seed, which statuses are final, whose a
concurrency key is, and resource usage surviving its JSON form."""

from __future__ import annotations

import pytest

from taskorch.domain.values import ResourceUsage, Status, key_scope


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("PENDING", Status.PENDING),
        ("queued", Status.PENDING),
        (" Waiting ", Status.PENDING),
        ("processing", Status.RUNNING),
        ("in_progress", Status.RUNNING),
        ("succeeded", Status.COMPLETED),
        ("done", Status.COMPLETED),
        ("error", Status.FAILED),
        ("canceled", Status.CANCELLED),
        ("Cancelled", Status.CANCELLED),
    ],
)
def test_status_words_of_every_seed_in_any_case(word: str, status: Status) -> None:
    assert Status.parse(word) is status


@pytest.mark.parametrize("word", ["", "sleeping", "1"])
def test_an_unknown_status_word_is_a_key_error(word: str) -> None:
    with pytest.raises(KeyError):
        Status.parse(word)


def test_completed_failed_and_cancelled_are_final() -> None:
    assert [s for s in Status if s.is_terminal] == [
        Status.COMPLETED,
        Status.FAILED,
        Status.CANCELLED,
    ]


def test_a_models_key_is_shared_by_every_tenant_other_keys_are_the_tenants() -> None:
    assert key_scope("acme", "model:minilm") == ""
    assert key_scope("acme", "gpu") == "acme"


def test_resource_usage_survives_its_json_form() -> None:
    usage = ResourceUsage("minilm", 0.25, 1.5, "CPUExecutionProvider")
    assert ResourceUsage.from_json(usage.to_json()) == usage
    assert ResourceUsage.from_json(None) is None and ResourceUsage.from_json({}) is None
