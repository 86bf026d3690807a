"""``taskorch models import --quantize int8``: kept only when it agrees with the float model,
its figures listed, served over gRPC and REST through Envoy; refused where it does not apply."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from taskorch.cli.models import app as models_app
from taskorch.domain.errors import InvalidArgument
from taskorch.inference.export import import_model
from tests.servers import ServerProcess, sqlite_url

from .tiny_models import TinyModels

pytestmark = pytest.mark.xdist_group("inference-server")

TEXT = "Quantized encoders keep the direction of their embeddings."


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(models_app, list(args), env={"COLUMNS": "250"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, tiny: TinyModels) -> Path:
    """int8 imports of the tiny encoder and classifier (through the CLI), beside the floats."""
    root = tmp_path_factory.mktemp("quantized")
    for name, task in (
        ("tiny-bert-embed", "feature_extraction"),
        ("tiny-bert-sentiment", "sentiment-analysis"),
    ):
        code, out, err = _cli(
            "import",
            str(tiny.torch_dir / name),
            "--task",
            task,
            "--name",
            f"{name}-int8",
            "--quantize",
            "int8",
            "--models-dir",
            str(root),
        )
        assert code == 0, err
        assert "int8 kept: cosine mean" in out
        (root / name).symlink_to(tiny.models_dir / name, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, repository: Path) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("quantized-server")
    process = ServerProcess(
        workdir=workdir,
        database_url=sqlite_url(workdir / "db.sqlite"),
        models_dir=repository,
        gateway=True,
    )
    process.start()
    yield process
    process.stop()


def _cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_int8_import_stores_its_quality_figures_with_the_model(repository: Path) -> None:
    config = yaml.safe_load((repository / "tiny-bert-embed-int8" / "model.yaml").read_text())
    assert config["quantization"] == "int8"
    assert config["onnx"]["file"] == "model_int8.onnx"
    assert not (repository / "tiny-bert-embed-int8" / "model.onnx").exists()
    check = config["quantization_check"]
    assert check["probes"] >= 20
    assert check["cosine_mean"] >= check["cosine_threshold"] == 0.99
    assert check["cosine_min"] >= check["cosine_floor"]
    assert 0 < check["int8_size_bytes"] < check["float_size_bytes"]
    assert "top_label_agreement" not in check  # embeddings have no label
    labelled = yaml.safe_load((repository / "tiny-bert-sentiment-int8" / "model.yaml").read_text())
    assert labelled["quantization_check"]["top_label_agreement"] == 1.0


def test_models_list_shows_the_figures_as_the_server_reports_them(server: ServerProcess) -> None:
    code, out, err = _cli("list", "--json", "--server", server.grpc_addr)
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    check = rows["tiny-bert-embed-int8"]["quantization_check"]
    assert rows["tiny-bert-embed-int8"]["quantization"] == "int8"
    assert check["cosine_mean"] >= 0.99 and check["top_label_agreement"] is None
    assert rows["tiny-bert-sentiment-int8"]["quantization_check"]["top_label_agreement"] == 1.0
    assert rows["tiny-bert-embed"]["quantization_check"] is None
    code, table, err = _cli("list", "--server", server.grpc_addr)
    assert code == 0, err
    assert "int8 cos" in table and "same label 100%" in table


def test_int8_model_answers_over_grpc_and_rest_like_the_float_one(server: ServerProcess) -> None:
    with server.client(timeout=60) as api:
        quantized = api.models.infer("tiny-bert-embed-int8", TEXT).embedding
        original = api.models.infer("tiny-bert-embed", TEXT).embedding
        assert quantized is not None and original is not None
        label_int8 = api.models.infer("tiny-bert-sentiment-int8", TEXT).result
        label_float = api.models.infer("tiny-bert-sentiment", TEXT).result
        listed = {m.name: m for m in api.models.list()}
    assert _cosine(quantized, original) >= 0.99
    assert label_int8["label"] == label_float["label"]
    sdk_check = listed["tiny-bert-embed-int8"].quantization_check
    assert sdk_check is not None and sdk_check.cosine_mean >= 0.99
    with httpx.Client(base_url=server.http_url, timeout=60) as rest:
        answer = rest.post("/v1/models/tiny-bert-embed-int8:infer", json={"inputs": TEXT})
        assert answer.status_code == 200, answer.text
        over_rest = answer.json()["embedding"]
        model = rest.get("/v1/models/tiny-bert-embed-int8")
        assert model.status_code == 200, model.text
    assert np.allclose(over_rest, quantized, atol=1e-5)
    figures = model.json()["quantization_check"]
    assert figures["cosine_mean"] >= 0.99 and figures["probes"] >= 20


def _outlier_model(tiny: TinyModels, target: Path) -> Path:
    """The tiny encoder with one outlier weight in a token embedding no probe uses: the float
    model is unchanged, but per-tensor int8 of the embedding table rounds every other weight
    of it to zero (the failure that outlier weights cause in real checkpoints)."""
    import torch
    from transformers import AutoModel

    shutil.copytree(tiny.torch_dir / "tiny-bert-embed", target)
    model = AutoModel.from_pretrained(target)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[-1, 0] = 1000.0
    model.save_pretrained(target)
    return target


def test_a_failing_check_refuses_the_import_giving_the_figures(
    tiny: TinyModels, tmp_path: Path
) -> None:
    source = _outlier_model(tiny, tmp_path / "outlier-bert")
    models = tmp_path / "models"
    code, out, err = _cli(
        "import",
        str(source),
        "--task",
        "feature_extraction",
        "--quantize",
        "int8",
        "--models-dir",
        str(models),
    )
    assert code == 1
    assert "quantizing to int8" in out and "int8 kept" not in out
    assert "int8 quantization refused" in err
    assert "cosine mean" in err and "(>= 0.99)" in err and "without --quantize" in err
    assert list(models.iterdir()) == []  # nothing kept, no staging folder left


def test_generation_models_are_refused_naming_the_field(tiny: TinyModels, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not apply to text_generation") as caught:
        import_model(
            tiny.torch_dir / "tiny-gpt2", "text_generation", models_dir=tmp_path, quantize="int8"
        )
    assert caught.value.violations[0].field == "quantize"
    code, _, err = _cli(
        "import",
        str(tiny.torch_dir / "tiny-t5"),
        "--task",
        "summarization",
        "--quantize",
        "int8",
        "--models-dir",
        str(tmp_path),
    )
    assert code == 1 and "--quantize int8 does not apply to summarization" in err
    assert "feature_extraction" in err  # says where it does apply
    code, _, err = _cli(
        "import",
        str(tiny.torch_dir / "tiny-bert-embed"),
        "--task",
        "feature_extraction",
        "--quantize",
        "int4",
        "--models-dir",
        str(tmp_path),
    )
    assert code == 1 and "quantize must be int8" in err
