"""image_segmentation with an optimum-exported tiny random SegFormer: `models import` exports and
validates it, a real server runs tasks over gRPC and REST (Envoy), our post-processing agrees
with the PyTorch model and transformers' ``post_process_semantic_segmentation``, and the mask
PNGs download byte-identical over REST and the SDK."""

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

pytestmark = pytest.mark.xdist_group("segmentation-server")

VERSION = 1
NAME = "tiny-segformer"
LABELS = {0: "sky", 1: "road", 2: "tree", 3: "car"}


def _build(torch_dir: Path) -> None:
    import torch
    from transformers import (
        SegformerConfig,
        SegformerForSemanticSegmentation,
        SegformerImageProcessor,
    )

    torch.manual_seed(0)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        num_attention_heads=[1, 2],
        patch_sizes=[7, 3],
        strides=[4, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    model = SegformerForSemanticSegmentation(config).eval()
    with torch.no_grad():  # a random head favours one class; spread them so several show
        model.decode_head.classifier.weight.mul_(40.0)
    model.save_pretrained(torch_dir)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(torch_dir)


@pytest.fixture(scope="module")
def tiny_segformer() -> tuple[Path, Path]:
    """(the PyTorch folder, a repository holding its ONNX import), built once and cached."""
    offline_environment()
    base = cache_dir() / f"tiny-segformer-v{VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        if not (base / "models" / NAME / "model.yaml").exists():
            shutil.rmtree(base / "torch", ignore_errors=True)
            _build(base / "torch" / NAME)
            import_model(
                base / "torch" / NAME,
                "image_segmentation",
                models_dir=base / "models",
                log=lambda _: None,
            )
    return base / "torch" / NAME, base / "models"


@pytest.fixture(scope="module")
def segmentation_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_segformer: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("segmentation")
    url = databases.new_database(workdir)
    server = ServerProcess(
        workdir=workdir, database_url=url, gateway=True, models_dir=tiny_segformer[1]
    )
    server.start()
    yield server
    server.stop()
    databases.discard(url)


def _image() -> tuple[bytes, Any]:
    from PIL import Image

    rng = np.random.default_rng(7)
    image = Image.fromarray(rng.integers(0, 255, (72, 90, 3), dtype=np.uint8))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue(), image


def _pytorch_segmentation(torch_dir: Path, image: Any) -> tuple[np.ndarray, np.ndarray]:
    """transformers' label map at the image's size, and each pixel's best probability."""
    import torch
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

    processor = SegformerImageProcessor.from_pretrained(torch_dir)
    model = SegformerForSemanticSegmentation.from_pretrained(torch_dir).eval()
    with torch.no_grad():
        outputs = model(**processor(images=[image], return_tensors="pt"))
    size = (image.height, image.width)
    labels = processor.post_process_semantic_segmentation(outputs, target_sizes=[size])[0]
    resized = torch.nn.functional.interpolate(
        outputs.logits, size=size, mode="bilinear", align_corners=False
    )[0]
    return labels.numpy(), torch.softmax(resized.double(), dim=0).max(dim=0).values.numpy()


def _mask(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "L"
        return np.asarray(image)


def test_segmentation_over_grpc_and_rest_agrees_with_pytorch(
    segmentation_server: ServerProcess, tiny_segformer: tuple[Path, Path]
) -> None:
    png, image = _image()
    reference, best_probability = _pytorch_segmentation(tiny_segformer[0], image)
    present = set(np.unique(reference).tolist())
    assert len(present) >= 2  # the test means something only with several labels
    with segmentation_server.client() as client:
        task = client.create_task(
            task_type="image_segmentation",
            model_name=NAME,
            input_data={"image": base64.b64encode(png).decode()},
        )
        done = client.wait_for_task(task.task_id, timeout=120)
        assert done.status == "COMPLETED", done.error
        assert done.result is not None
        sdk_masks = {
            s["mask"]: client.get_task_artifact(task.task_id, s["mask"]).data
            for s in done.result["segments"]
        }
    with httpx.Client(base_url=segmentation_server.http_url, timeout=60) as rest:
        created = rest.post(
            "/tasks",
            json={
                "task_type": "image_segmentation",
                "model_name": NAME,
                "input_data": {"image": "data:image/png;base64," + base64.b64encode(png).decode()},
            },
        )
        assert created.status_code == 201, created.text
        over_rest = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
        rest_masks = {}
        for segment in done.result["segments"]:
            body = rest.get(f"/v1/tasks/{task.task_id}/artifacts/{segment['mask']}")
            assert body.status_code == 200
            assert body.headers["content-type"] == "image/png"
            rest_masks[segment["mask"]] = body.content
    assert rest_masks == sdk_masks  # byte-identical over REST and the SDK
    assert over_rest["result"]["segments"] == done.result["segments"]
    result = done.result
    assert (result["width"], result["height"]) == (image.width, image.height)
    assert {a["name"] for a in result["artifacts"]} == set(sdk_masks)
    assert all(a["content_type"] == "image/png" for a in result["artifacts"])
    ours = np.full(reference.shape, -1)
    worst_score = 0.0
    for segment in result["segments"]:
        label_id = next(k for k, v in LABELS.items() if v == segment["label"])
        mask = _mask(sdk_masks[segment["mask"]])
        assert mask.shape == reference.shape and set(np.unique(mask).tolist()) <= {0, 255}
        assert segment["pixels"] == int((mask == 255).sum())
        ours[mask == 255] = label_id
        expected = float(best_probability[reference == label_id].mean())
        worst_score = max(worst_score, abs(segment["score"] - expected))
    pixels = [s["pixels"] for s in result["segments"]]
    assert pixels == sorted(pixels, reverse=True)
    agreement = float((ours == reference).mean())
    print(
        f"image_segmentation: {agreement:.4%} of pixels labelled as PyTorch labels them, "
        f"{len(present)} labels, largest score difference {worst_score:.2g}"
    )
    assert agreement == 1.0
    assert worst_score < 1e-4


def test_top_k_keeps_the_largest_segments_and_bad_input_names_the_field(
    segmentation_server: ServerProcess,
) -> None:
    png, _ = _image()
    with httpx.Client(base_url=segmentation_server.http_url, timeout=60) as rest:
        created = rest.post(
            "/tasks",
            json={
                "task_type": "segmentation",
                "input_data": {"image": base64.b64encode(png).decode()},
                "parameters": {"top_k": 1},
            },
        )
        assert created.status_code == 201, created.text
        done = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
        assert len(done["result"]["segments"]) == 1
        assert len(done["result"]["artifacts"]) == 1
        refused = rest.post(
            "/tasks",
            json={"task_type": "image_segmentation", "input_data": {"image": "not base64!"}},
        )
        assert refused.status_code == 400
        assert "input_data.image" in refused.text
        refused = rest.post(
            "/tasks",
            json={
                "task_type": "image_segmentation",
                "input_data": {"image": base64.b64encode(png).decode()},
                "parameters": {"top_k": 17},
            },
        )
        assert refused.status_code == 400
        assert "parameters.top_k" in refused.text
