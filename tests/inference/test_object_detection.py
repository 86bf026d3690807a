"""object_detection with optimum-exported tiny random DETR, YOLOS and Table Transformer
models: `models import` exports and validates each, one real server serves the three and runs
tasks over gRPC and REST (Envoy), and our post-processing agrees with the PyTorch model's and
its image processor's ``post_process_object_detection``."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from taskorch.inference.defaults import cache_dir
from taskorch.inference.export import import_model, offline_environment
from taskorch.inference.locking import file_lock
from tests import databases
from tests.gateway._http import wait_for_status
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("detection-server")

VERSION = 1
LABELS: dict[str, Any] = {
    "id2label": {0: "cat", 1: "dog", 2: "bird"},
    "label2id": {"cat": 0, "dog": 1, "bird": 2},
}


def _detr_like(config_class: Any) -> Any:
    """A tiny DETR-style config (DETR, Table Transformer) on a tiny ResNet, no timm."""
    from transformers import ResNetConfig

    return config_class(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=ResNetConfig(
            embedding_size=8,
            hidden_sizes=[8, 16],
            depths=[1, 1],
            layer_type="basic",
            out_features=["stage2"],
        ),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=8,
        **LABELS,
    )


def _build_detr(torch_dir: Path) -> None:
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor

    DetrForObjectDetection(_detr_like(DetrConfig)).eval().save_pretrained(torch_dir)
    DetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(torch_dir)


def _build_table_transformer(torch_dir: Path) -> None:
    from transformers import (
        DetrImageProcessor,
        TableTransformerConfig,
        TableTransformerForObjectDetection,
    )

    model = TableTransformerForObjectDetection(_detr_like(TableTransformerConfig))
    model.eval().save_pretrained(torch_dir)
    # microsoft/table-transformer-detection ships a DetrImageProcessor too
    DetrImageProcessor(size={"shortest_edge": 48, "longest_edge": 80}).save_pretrained(torch_dir)


def _build_yolos(torch_dir: Path) -> None:
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    config = YolosConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=[64, 64],
        patch_size=16,
        num_detection_tokens=8,
        **LABELS,
    )
    YolosForObjectDetection(config).eval().save_pretrained(torch_dir)
    # the 80 x 96 test image becomes 96 x 112 (YOLOS rounds down to multiples of 16): not the
    # config's 64 x 64, so the graph must interpolate its position embeddings as PyTorch does
    YolosImageProcessor(size={"shortest_edge": 96, "longest_edge": 160}).save_pretrained(torch_dir)


# name -> (builder, the image processor class the folder must load as)
MODELS: dict[str, tuple[Callable[[Path], None], str]] = {
    "tiny-detr": (_build_detr, "DetrImageProcessor"),
    "tiny-yolos": (_build_yolos, "YolosImageProcessor"),
    "tiny-table-transformer": (_build_table_transformer, "DetrImageProcessor"),
}


def _cached_import(name: str) -> tuple[Path, Path]:
    """(the PyTorch folder, the folder of its ONNX import), built once and cached."""
    base = cache_dir() / f"{name}-v{VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        if not (base / "models" / name / "model.yaml").exists():
            import torch

            shutil.rmtree(base / "torch", ignore_errors=True)
            shutil.rmtree(base / "models", ignore_errors=True)
            torch.manual_seed(0)
            MODELS[name][0](base / "torch" / name)
            import_model(
                base / "torch" / name,
                "object_detection",
                models_dir=base / "models",
                log=lambda _: None,
            )
    return base / "torch" / name, base / "models" / name


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    """({name: its PyTorch folder}, one models directory holding every import)."""
    offline_environment()
    models = tmp_path_factory.mktemp("detection-models")
    torch_dirs = {}
    for name in MODELS:
        torch_dirs[name], imported = _cached_import(name)
        shutil.copytree(imported, models / name)
    return torch_dirs, models


@pytest.fixture(scope="module")
def detection_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[dict[str, Path], Path]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("detection")
    url = databases.new_database(workdir)
    server = ServerProcess(
        workdir=workdir, database_url=url, gateway=True, models_dir=tiny_models[1]
    )
    server.start()
    yield server
    server.stop()
    databases.discard(url)


def _image() -> tuple[bytes, Any]:
    from PIL import Image

    rng = np.random.default_rng(7)
    image = Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue(), image


def _pytorch_objects(name: str, torch_dir: Path, image: Any) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    processor = AutoImageProcessor.from_pretrained(torch_dir, use_fast=False)
    assert type(processor).__name__ == MODELS[name][1]
    model = AutoModelForObjectDetection.from_pretrained(torch_dir).eval()
    with torch.no_grad():
        outputs = model(**processor(images=[image], return_tensors="pt"))
    found = processor.post_process_object_detection(
        outputs, threshold=0.0, target_sizes=[(image.height, image.width)]
    )[0]
    order = torch.argsort(found["scores"], descending=True, stable=True)
    return [
        {
            "label": model.config.id2label[int(found["labels"][i])],
            "score": float(found["scores"][i]),
            "box": [float(v) for v in found["boxes"][i]],
        }
        for i in order
    ]


def _agree(ours: list[dict[str, Any]], reference: list[dict[str, Any]]) -> float:
    """The largest score or box difference; labels and order must be the same."""
    assert [o["label"] for o in ours] == [r["label"] for r in reference]
    worst = 0.0
    for got, want in zip(ours, reference, strict=True):
        box = [got["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]
        worst = max(worst, abs(got["score"] - want["score"]))
        worst = max(worst, *(abs(a - b) for a, b in zip(box, want["box"], strict=True)))
    return worst


@pytest.mark.parametrize("name", list(MODELS))
def test_detection_over_grpc_and_rest_agrees_with_pytorch(
    detection_server: ServerProcess, tiny_models: tuple[dict[str, Path], Path], name: str
) -> None:
    png, image = _image()
    reference = _pytorch_objects(name, tiny_models[0][name], image)
    assert len(reference) == 8  # every query, threshold 0
    parameters = {"threshold": 0.0, "top_k": 8}
    with detection_server.client() as client:
        task = client.create_task(
            task_type="object_detection",
            model_name=name,
            input_data={"image": base64.b64encode(png).decode()},
            parameters=parameters,
        )
        done = client.wait_for_task(task.task_id, timeout=120)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    with httpx.Client(base_url=detection_server.http_url, timeout=60) as rest:
        created = rest.post(
            "/tasks",
            json={
                "task_type": "object_detection",
                "model_name": name,
                "input_data": {"image": "data:image/png;base64," + base64.b64encode(png).decode()},
                "parameters": parameters,
            },
        )
        assert created.status_code == 201, created.text
        over_rest = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
    for via, result in (("gRPC", done.result), ("REST", over_rest["result"])):
        worst = _agree(result["objects"], reference)
        print(f"{name} over {via}: largest difference from PyTorch {worst:.2g}")
        assert worst < 1e-3


def test_threshold_and_top_k_bound_the_objects(detection_server: ServerProcess) -> None:
    png, _ = _image()
    with detection_server.client() as client:
        task = client.create_task(
            task_type="detection",
            input_data={"image": base64.b64encode(png).decode()},
            parameters={"threshold": 0.0, "top_k": 3},
        )
        done = client.wait_for_task(task.task_id, timeout=120)
        assert done.result is not None and len(done.result["objects"]) == 3
        scores = [o["score"] for o in done.result["objects"]]
        assert scores == sorted(scores, reverse=True)
        task = client.create_task(
            task_type="object_detection",
            input_data={"image": base64.b64encode(png).decode()},
            parameters={"threshold": 1.0},
        )
        done = client.wait_for_task(task.task_id, timeout=120)
        assert done.result is not None and done.result["objects"] == []
