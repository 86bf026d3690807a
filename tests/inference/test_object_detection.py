"""object_detection with an optimum-exported tiny random DETR: `models import` exports and
validates it, a real server runs tasks over gRPC and REST (Envoy), and our post-processing
agrees with the PyTorch model's and transformers' ``post_process_object_detection``."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
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
NAME = "tiny-detr"


def _build(torch_dir: Path) -> None:
    import torch
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    torch.manual_seed(0)
    config = DetrConfig(
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
        id2label={0: "cat", 1: "dog", 2: "bird"},
        label2id={"cat": 0, "dog": 1, "bird": 2},
    )
    DetrForObjectDetection(config).eval().save_pretrained(torch_dir)
    DetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(torch_dir)


@pytest.fixture(scope="module")
def tiny_detr() -> tuple[Path, Path]:
    """(the PyTorch folder, a repository holding its ONNX import), built once and cached."""
    offline_environment()
    base = cache_dir() / f"tiny-detr-v{VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        if not (base / "models" / NAME / "model.yaml").exists():
            shutil.rmtree(base / "torch", ignore_errors=True)
            _build(base / "torch" / NAME)
            import_model(
                base / "torch" / NAME,
                "object_detection",
                models_dir=base / "models",
                log=lambda _: None,
            )
    return base / "torch" / NAME, base / "models"


@pytest.fixture(scope="module")
def detection_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_detr: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("detection")
    url = databases.new_database(workdir)
    server = ServerProcess(workdir=workdir, database_url=url, gateway=True, models_dir=tiny_detr[1])
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


def _pytorch_objects(torch_dir: Path, image: Any) -> list[dict[str, Any]]:
    import torch
    from transformers import DetrForObjectDetection, DetrImageProcessor

    processor = DetrImageProcessor.from_pretrained(torch_dir)
    model = DetrForObjectDetection.from_pretrained(torch_dir).eval()
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


def test_detection_over_grpc_and_rest_agrees_with_pytorch(
    detection_server: ServerProcess, tiny_detr: tuple[Path, Path]
) -> None:
    png, image = _image()
    reference = _pytorch_objects(tiny_detr[0], image)
    assert len(reference) == 8  # every query, threshold 0
    parameters = {"threshold": 0.0, "top_k": 8}
    with detection_server.client() as client:
        task = client.create_task(
            task_type="object_detection",
            model_name=NAME,
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
                "model_name": NAME,
                "input_data": {"image": "data:image/png;base64," + base64.b64encode(png).decode()},
                "parameters": parameters,
            },
        )
        assert created.status_code == 201, created.text
        over_rest = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
    for via, result in (("gRPC", done.result), ("REST", over_rest["result"])):
        worst = _agree(result["objects"], reference)
        print(f"object_detection over {via}: largest difference from PyTorch {worst:.2g}")
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
