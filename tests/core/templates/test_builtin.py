"""The built-in templates shipped as YAML: present, checked, and the seed's parameters."""

from __future__ import annotations

from taskorch.core.templates.definition import parse_template
from tests.core.templates.fakes import BUILTINS, SMOLLM


def test_builtin_templates_ship_with_the_package() -> None:
    assert set(BUILTINS) >= {
        "text-analysis",
        "model-inference",
        "ollama-inference",
        "summarize-then-analyze",
        "git-script-execution",
    }
    assert all(t.builtin for t in BUILTINS.values())


def test_seed_002_templates_take_the_seed_parameters() -> None:
    ollama = BUILTINS["ollama-inference"]
    assert [p.name for p in ollama.parameters][:3] == ["model", "prompt", "system_prompt"]
    assert ollama.parameter("prompt").required  # type: ignore[union-attr]
    assert ollama.parameter("model").default == SMOLLM  # type: ignore[union-attr]
    assert ollama.steps[0]["type"] == "ollama_generate"
    assert ollama.steps[0]["model"] == "{{model}}"
    git = BUILTINS["git-script-execution"]
    assert [(p.name, p.type, p.required) for p in git.parameters] == [
        ("repo_url", "string", True),
        ("script_path", "string", True),
        ("output_path", "string", True),
    ]
    assert git.description == "Clone repository, run script, store results"


def test_a_definition_survives_its_json_round_trip() -> None:
    for template in BUILTINS.values():
        again = parse_template(template.to_json(), builtin=True)
        assert again == template
