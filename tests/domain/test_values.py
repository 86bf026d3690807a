"""The domain's values: status words of every seed, which statuses are final, whose a
concurrency key is, resource usage surviving its JSON form, ``changed`` copying a value
as ``dataclasses.replace`` does, and ``quick_init`` building one as the dataclass would."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from taskorch.domain.values import (
    Lease,
    ResourceUsage,
    Status,
    Subtask,
    Task,
    TaskEvent,
    changed,
    key_scope,
    quick_init,
)


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


def _task() -> Task:
    now = datetime(2026, 12, 6, tzinfo=UTC)
    return Task(
        task_id="t1", tenant_id="acme", status=Status.PENDING, task_type="echo",
        created_at=now, updated_at=now, input_data={"n": 1}, depends_on=("t0",),
    )  # fmt: skip


def test_changed_copies_a_value_as_replace_does() -> None:
    task = _task()
    started = datetime(2026, 12, 6, 0, 0, 1, tzinfo=UTC)
    copy = changed(task, status=Status.RUNNING, started_at=started, sequence=2)
    assert copy == dataclasses.replace(task, status=Status.RUNNING, started_at=started, sequence=2)
    assert type(copy) is Task
    assert task.status is Status.PENDING and task.started_at is None  # the original is kept
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.status = Status.FAILED  # type: ignore[misc]


def test_changed_refuses_a_field_the_value_does_not_have() -> None:
    with pytest.raises(TypeError, match="Task has no field colour"):
        changed(_task(), colour="red")


def test_changed_leaves_a_value_with_post_init_to_replace() -> None:
    @dataclasses.dataclass(frozen=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("n must not be negative")

    assert changed(Checked(1), n=2) == Checked(2)
    with pytest.raises(ValueError, match="negative"):
        changed(Checked(1), n=-1)


@quick_init
@dataclasses.dataclass(frozen=True)
class _Sample:
    name: str
    count: int = 3
    tags: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Plain:
    name: str
    count: int = 3
    tags: dict[str, int] = dataclasses.field(default_factory=dict)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(("a",), {}), (("a", 5), {}), ((), {"name": "a", "tags": {"x": 1}}), (("a",), {"count": 0})],
)
def test_quick_init_builds_what_the_dataclass_init_builds(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    quick, plain = _Sample(*args, **kwargs), _Plain(*args, **kwargs)  # type: ignore[arg-type]
    assert dataclasses.asdict(quick) == dataclasses.asdict(plain)
    assert quick == _Sample(*args, **kwargs)  # type: ignore[arg-type]


def test_quick_init_keeps_values_frozen_and_arguments_checked() -> None:
    sample = _Sample("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.count = 4  # type: ignore[misc]
    assert _Sample("a").tags is not sample.tags  # a fresh default per value
    with pytest.raises(TypeError):
        _Sample()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Sample("a", colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Sample("a", 1, {}, 2)  # type: ignore[call-arg]


def test_quick_init_refuses_a_class_it_would_build_wrongly() -> None:
    @dataclasses.dataclass(frozen=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True)
    class Derived:
        n: int
        twice: int = dataclasses.field(init=False, default=0)

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Named:
        n: int

    for cls in (Checked, Derived, Named):
        with pytest.raises(TypeError, match="quick_init cannot build"):
            quick_init(cls)


@pytest.mark.parametrize("cls", [Task, Subtask, TaskEvent, Lease])
def test_the_hot_path_values_use_quick_init(cls: type) -> None:
    assert "_own" in cls.__init__.__code__.co_varnames  # type: ignore[misc]


def test_a_task_built_by_quick_init_has_its_defaults() -> None:
    now = datetime.now(UTC)
    task = Task(
        task_id="t",
        tenant_id="x",
        status=Status.PENDING,
        task_type="echo",
        created_at=now,
        updated_at=now,
    )
    assert task.priority == 5 and task.depends_on == () and task.resource_usage is None
