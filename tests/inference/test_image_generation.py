"""image_generation with a tiny random Stable Diffusion built from configs: `models import`
exports the diffusers folder with optimum and validates its UNet, a real server runs tasks over
gRPC and REST (Envoy), our numpy denoising loop draws the image diffusers' PyTorch pipeline
draws from the same initial latents, each denoising step is a progress event, and the PNG
downloads byte-identical over REST and the SDK."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from taskorch.client import InvalidArgumentError
from taskorch.domain.errors import InvalidArgument
from taskorch.inference.defaults import cache_dir
from taskorch.inference.export import import_model, offline_environment
from taskorch.inference.locking import file_lock
from taskorch.inference.pipelines.image_generation import initial_latents, prompt_tokenizer
from tests import databases
from tests.gateway._http import wait_for_status
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("image-generation-server")

VERSION = 2
NAME = "tiny-sd"
PROMPT = "the red fox on the green"
NEGATIVE = "the blue"
STEPS = 4
SEED = 3
WIDTH, HEIGHT = 96, 64  # latents of 48 x 32 (the tiny VAE halves each side)
# Agreement with diffusers, per 8-bit channel value: the two loops run the same float32 graphs
# and schedule, so they differ by float rounding only (~1e-6), which moves a value across a
# rounding boundary of the 0-255 scale at most by one, and rarely.
MAX_CHANNEL_DIFF = 1
MAX_MEAN_DIFF = 0.01


def _tokenizer_files(folder: Path) -> None:
    """A tiny CLIP BPE vocabulary: letters, letters ending a word, a few merges."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for char in letters:
        vocab[char] = len(vocab)
    for char in letters:
        vocab[char + "</w>"] = len(vocab)
    merges = ["#version: 0.2"]
    for pair in ("t h", "th e</w>", "r e", "re d</w>", "o n</w>", "e n</w>", "i n", "e r</w>"):
        merges.append(pair)
        vocab[pair.replace(" ", "")] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")


def _build(torch_dir: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        layers_per_block=1,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=1000,
            max_position_embeddings=77,
        )
    )
    vocab_dir = torch_dir.parent / "vocab"
    _tokenizer_files(vocab_dir)
    tokenizer = CLIPTokenizer(
        str(vocab_dir / "vocab.json"),
        str(vocab_dir / "merges.txt"),
        pad_token="!",
        model_max_length=77,
    )
    scheduler = DDIMScheduler(  # Stable Diffusion 1.x's schedule
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(torch_dir)


@pytest.fixture(scope="module")
def tiny_sd() -> tuple[Path, Path]:
    """(the diffusers folder, a repository holding its ONNX import), built once and cached."""
    offline_environment()
    base = cache_dir() / f"tiny-stable-diffusion-v{VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        if not (base / "models" / NAME / "model.yaml").exists():
            shutil.rmtree(base / "torch", ignore_errors=True)
            _build(base / "torch" / NAME)
            report = import_model(
                base / "torch" / NAME,
                "text_to_image",
                models_dir=base / "models",
                log=lambda _: None,
            )
            assert report.task == "image_generation"
            assert report.max_abs_diff <= report.tolerance
    return base / "torch" / NAME, base / "models"


@pytest.fixture(scope="module")
def generation_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_sd: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("image-generation")
    url = databases.new_database(workdir)
    server = ServerProcess(workdir=workdir, database_url=url, gateway=True, models_dir=tiny_sd[1])
    server.start()
    yield server
    server.stop()
    databases.discard(url)


def _diffusers_image(torch_dir: Path) -> np.ndarray:
    """diffusers' PyTorch pipeline, from the latents our pipeline starts from for SEED."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(torch_dir, safety_checker=None)
    pipeline.set_progress_bar_config(disable=True)
    latents = initial_latents(SEED, (1, 4, HEIGHT // 2, WIDTH // 2))
    with torch.no_grad():
        images = pipeline(
            PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=STEPS,
            guidance_scale=7.5,
            height=HEIGHT,
            width=WIDTH,
            latents=torch.from_numpy(latents),
            output_type="np",
        ).images
    return np.asarray((images[0] * 255).round().astype(np.uint8))


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        return np.asarray(image)


def _body(**parameters: Any) -> dict[str, Any]:
    return {
        "task_type": "text_to_image",
        "model_name": NAME,
        "input_data": {"prompt": PROMPT, "negative_prompt": NEGATIVE},
        "parameters": {
            "num_inference_steps": STEPS,
            "guidance_scale": 7.5,
            "seed": SEED,
            "width": WIDTH,
            "height": HEIGHT,
            **parameters,
        },
    }


def test_generation_over_grpc_and_rest_agrees_with_diffusers(
    generation_server: ServerProcess, tiny_sd: tuple[Path, Path]
) -> None:
    with generation_server.client() as client:
        body = _body()
        task = client.create_task(
            task_type="image_generation",
            model_name=NAME,
            input_data=body["input_data"],
            parameters=body["parameters"],
        )
        done = client.wait_for_task(task.task_id, timeout=120)
        assert done.status == "COMPLETED", done.error
        assert done.result is not None
        sdk_png = client.get_task_artifact(task.task_id, "image.png").data
        events = list(client.watch_task(task.task_id, after_sequence=1))
    steps = [e.message for e in events if e.type == "PROGRESS" and e.message.startswith("step")]
    assert steps == [f"step {i} of {STEPS}" for i in range(1, STEPS + 1)]
    with httpx.Client(base_url=generation_server.http_url, timeout=60) as rest:
        over_rest = rest.get(f"/v1/tasks/{task.task_id}/artifacts/image.png")
        assert over_rest.status_code == 200
        assert over_rest.headers["content-type"] == "image/png"
        created = rest.post("/tasks", json=_body(steps=STEPS))  # the alias of the steps
        assert created.status_code == 201, created.text
        again = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
        again_png = rest.get(f"/v1/tasks/{again['task_id']}/artifacts/image.png").content
    assert over_rest.content == sdk_png  # byte-identical over REST and the SDK
    assert again_png == sdk_png  # the same seed and settings draw the same image
    result = done.result
    assert result["artifacts"] == [
        {"name": "image.png", "content_type": "image/png", "size": len(sdk_png)}
    ]
    assert (result["width"], result["height"], result["seed"]) == (WIDTH, HEIGHT, SEED)
    assert result["num_inference_steps"] == STEPS
    assert result["scheduler"] == "DDIMScheduler"
    ours = _pixels(sdk_png)
    assert ours.shape == (HEIGHT, WIDTH, 3)
    assert ours.std() > 5  # a picture, not a flat colour: the comparison means something
    reference = _diffusers_image(tiny_sd[0])
    diff = np.abs(ours.astype(np.int64) - reference.astype(np.int64))
    print(
        f"image_generation: {WIDTH}x{HEIGHT}, {STEPS} DDIM steps; vs diffusers: max channel "
        f"difference {diff.max()}, mean {diff.mean():.4f} (of 255)"
    )
    assert diff.max() <= MAX_CHANNEL_DIFF
    assert diff.mean() <= MAX_MEAN_DIFF


def test_serving_loads_neither_torch_nor_diffusers(generation_server: ServerProcess) -> None:
    """The server draws images with ONNX Runtime alone: torch's library is never mapped."""
    with generation_server.client() as client:
        body = _body(num_inference_steps=1)
        task = client.create_task(
            task_type="image_generation",
            model_name=NAME,
            input_data=body["input_data"],
            parameters=body["parameters"],
        )
        assert client.wait_for_task(task.task_id, timeout=120).status == "COMPLETED"
    assert generation_server.proc is not None
    maps = Path(f"/proc/{generation_server.proc.pid}/maps").read_text(encoding="utf-8")
    assert "onnxruntime" in maps
    assert "libtorch" not in maps


def test_a_seed_left_out_is_drawn_and_reported(generation_server: ServerProcess) -> None:
    with httpx.Client(base_url=generation_server.http_url, timeout=60) as rest:
        body = _body(num_inference_steps=1)
        del body["parameters"]["seed"]
        body["parameters"]["guidance_scale"] = 1.0  # no guidance: the prompt only
        created = rest.post("/tasks", json=body)
        assert created.status_code == 201, created.text
        done = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
    assert 0 <= done["result"]["seed"] < 2**32
    assert done["result"]["guidance_scale"] == 1.0


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"width": 60}, "parameters.width"),  # not a multiple of 8
        ({"height": 4096}, "parameters.height"),  # too large
        ({"width": 32}, "parameters.width"),  # too small
        ({"num_inference_steps": 0}, "parameters.num_inference_steps"),
        ({"num_inference_steps": 500}, "parameters.num_inference_steps"),
        ({"steps": "many"}, "parameters.steps"),
        ({"guidance_scale": -1}, "parameters.guidance_scale"),
        ({"seed": -5}, "parameters.seed"),
    ],
)
def test_bad_size_or_steps_are_refused_naming_the_field(
    generation_server: ServerProcess, parameters: dict[str, Any], field: str
) -> None:
    body = _body()
    body["parameters"] = parameters
    with generation_server.client() as client, pytest.raises(InvalidArgumentError) as caught:
        client.create_task(
            task_type=body["task_type"],
            model_name=NAME,
            input_data=body["input_data"],
            parameters=parameters,
        )
    assert caught.value.field_violations[0].field == field
    with httpx.Client(base_url=generation_server.http_url, timeout=60) as rest:
        refused = rest.post("/tasks", json=body)
    assert refused.status_code == 400
    assert field in refused.text


def test_a_missing_prompt_is_refused_naming_the_field(generation_server: ServerProcess) -> None:
    with httpx.Client(base_url=generation_server.http_url, timeout=60) as rest:
        refused = rest.post(
            "/tasks",
            json={"task_type": "image_generation", "input_data": {"prompt": "  "}},
        )
    assert refused.status_code == 400
    assert "input_data.prompt" in refused.text


def test_prompt_ids_are_those_of_the_clip_tokenizer_diffusers_uses(
    tiny_sd: tuple[Path, Path],
) -> None:
    from transformers import CLIPTokenizer

    model_dir = tiny_sd[1] / NAME
    text_encoder = json.loads((model_dir / "text_encoder/config.json").read_text("utf-8"))
    ours = prompt_tokenizer(model_dir / "tokenizer", text_encoder)
    theirs = CLIPTokenizer.from_pretrained(tiny_sd[0] / "tokenizer")
    prompts = ["", "The RED fox, on the green!", "  spaced   out  ", "the red " * 60]
    expected = theirs(
        prompts, padding="max_length", max_length=77, truncation=True, return_tensors="np"
    )["input_ids"]
    got = np.array([e.ids for e in ours.encode_batch(prompts)])
    assert got.shape == (len(prompts), 77)
    assert (got == expected).all()


def test_an_export_with_an_unsupported_scheduler_is_refused_at_import(
    tiny_sd: tuple[Path, Path], tmp_path: Path
) -> None:
    export = tmp_path / "export"
    shutil.copytree(tiny_sd[1] / NAME, export)
    (export / "model.yaml").unlink()
    # an optimum export (not a diffusers folder) imports as it is
    report = import_model(export, "image_generation", models_dir=tmp_path / "models", log=print)
    assert (report.path / "unet" / "model.onnx").exists()
    config_file = export / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config_file.write_text(json.dumps({**config, "_class_name": "LCMScheduler"}), encoding="utf-8")
    with pytest.raises(InvalidArgument) as caught:
        import_model(export, "image_generation", models_dir=tmp_path / "models", name="lcm")
    assert "LCMScheduler" in caught.value.message
    assert not (tmp_path / "models" / "lcm").exists()
