"""The README stands on its own: what it points to is in the repository, and every built-in
task type the server accepts is documented."""

from __future__ import annotations

import re
from pathlib import Path

from taskorch.core import planning

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
_REPO_PATH = re.compile(r"`((?:src|tests|bench|gateway|proto|requirements|\.ci)/[^`\s]*)`")


def test_the_readme_points_to_nothing_outside_the_repository() -> None:
    assert "../" not in README


def test_every_repository_path_the_readme_names_exists() -> None:
    named = set(_REPO_PATH.findall(README))
    assert len(named) >= 5, named
    missing = []
    for path in named:
        brace = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", path)  # src/taskorch/{server,core}
        choices = [f"{brace[1]}{c}{brace[3]}" for c in brace[2].split(",")] if brace else [path]
        missing += [c for c in choices if not (ROOT / c).exists()]
    assert sorted(missing) == []


def test_every_built_in_task_type_is_documented() -> None:
    for task_type in (planning.TEXT_ANALYSIS, planning.ECHO, planning.CONTAINER):
        assert f"`{task_type}`" in README, task_type


def test_the_seed_paths_table_is_in_the_readme() -> None:
    for path in (
        "`POST /v1/tasks`",
        "`GET /api/v1/tasks/status`",
        "`POST /task/{task}/subtask/__take`",
    ):
        assert path.split(" ", 1)[1].rstrip("`") in README, path
