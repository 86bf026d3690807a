"""image_to_text by captioning with a Hugging Face VisionEncoderDecoderModel: `models import`
exports a tiny random one (ViT encoder + GPT2 decoder, a byte-level BPE tokenizer trained
offline) with optimum (image-to-text-with-past) and checks its greedy captions against
PyTorch's; a real server captions an image over gRPC and REST (Envoy), and the caption is the
text PyTorch's ``generate`` decodes to. PP-OCR stays image_to_text's default beside it.

The GPT2 head is untied from the embeddings and its weights are spread (initializer_range
0.2), so the random model does not simply repeat its start token (which is also its end
token) and greedy choices are not near-ties between float32 runtimes."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from taskorch.client import InvalidArgumentError
from taskorch.domain.errors import InvalidArgument
from taskorch.inference.config import load_model_config
from taskorch.inference.defaults import cache_dir
from taskorch.inference.export import (
    ExportError,
    check_captioner,
    import_model,
    offline_environment,
    validate_captions,
)
from taskorch.inference.locking import file_lock
from taskorch.inference.task_types import (
    ModelFamily,
    TaskType,
    families_of,
    family_of_source,
    task_types_of,
)
from tests import databases
from tests.gateway._http import wait_for_status
from tests.inference.tiny_models import gpt2_tokenizer
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("image-captioning-server")

VERSION = 1
NAME = "tiny-vit-gpt2-captioner"
SIDE = 32
NEW_TOKENS = 12


def _build(torch_dir: Path) -> None:
    import torch
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    tokenizer = gpt2_tokenizer(torch_dir.parent / "_tokenizer")
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    encoder = ViTConfig(
        image_size=SIDE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
        tie_word_embeddings=False,
        initializer_range=0.2,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = eos  # as nlpconnect/vit-gpt2-image-captioning
    config.pad_token_id = eos
    config.eos_token_id = eos
    config.tie_word_embeddings = False
    model = VisionEncoderDecoderModel(config=config).eval()
    model.save_pretrained(torch_dir)
    tokenizer.save_pretrained(torch_dir)
    ViTImageProcessor(size={"height": SIDE, "width": SIDE}).save_pretrained(torch_dir)
    shutil.rmtree(torch_dir.parent / "_tokenizer")


@pytest.fixture(scope="module")
def tiny_captioner() -> tuple[Path, Path]:
    """(the PyTorch folder, a repository holding its ONNX import), built once and cached."""
    offline_environment()
    base = cache_dir() / f"tiny-captioner-v{VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        if not (base / "models" / NAME / "model.yaml").exists():
            shutil.rmtree(base / "torch", ignore_errors=True)
            _build(base / "torch" / NAME)
            import_model(
                base / "torch" / NAME,
                "image_to_text",
                models_dir=base / "models",
                log=lambda _: None,
            )
    return base / "torch" / NAME, base / "models"


@pytest.fixture(scope="module")
def caption_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_captioner: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("image-captioning")
    url = databases.new_database(workdir)
    server = ServerProcess(
        workdir=workdir, database_url=url, gateway=True, models_dir=tiny_captioner[1]
    )
    server.start()
    yield server
    server.stop()
    databases.discard(url)


def _png() -> bytes:
    """A 60x45 PNG: a colour gradient with a dark square (not the model's input size)."""
    from PIL import Image

    y, x = np.mgrid[0:45, 0:60]
    rgb = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    rgb[10:25, 20:35] = 20
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def _pytorch_caption(torch_dir: Path, png: bytes, new_tokens: int) -> tuple[str, list[int]]:
    """What ``model.generate(pixel_values, max_new_tokens=N, do_sample=False)`` decodes to."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

    model = VisionEncoderDecoderModel.from_pretrained(torch_dir).eval()
    processor = AutoImageProcessor.from_pretrained(torch_dir, use_fast=False)
    tokenizer = AutoTokenizer.from_pretrained(torch_dir)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    pixel_values = processor(images=image, return_tensors="pt").pixel_values
    with torch.no_grad():
        ids = model.generate(pixel_values, max_new_tokens=new_tokens, do_sample=False)[0]
    return tokenizer.decode(ids, skip_special_tokens=True), ids.tolist()


def test_import_records_the_family_and_the_greedy_check(
    tiny_captioner: tuple[Path, Path],
) -> None:
    config = load_model_config(tiny_captioner[1] / NAME)
    assert config.family is ModelFamily.IMAGE_CAPTIONING
    assert config.task is TaskType.IMAGE_TO_TEXT
    assert config.max_input_length == 64  # the GPT2 decoder's positions bound the caption
    validation = config.extra["validation"]
    assert validation["max_abs_diff"] <= validation["tolerance"]
    assert validation["greedy_captions_equal"] == 2
    folder = tiny_captioner[1] / NAME
    assert (folder / "encoder_model.onnx").exists()
    assert (folder / "decoder_model_merged.onnx").exists()
    assert (folder / "preprocessor_config.json").exists()


def test_the_greedy_check_refuses_an_export_that_captions_otherwise(
    tmp_path: Path, tiny_captioner: tuple[Path, Path]
) -> None:
    """The import's id check compares what is served: the same graphs with another decoder
    start token in the folder's config.json generate other ids, and are refused."""
    torch_dir, models_dir = tiny_captioner
    folder = tmp_path / NAME
    shutil.copytree(models_dir / NAME, folder)
    hf_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    hf_config["decoder_start_token_id"] = 5
    (folder / "config.json").write_text(json.dumps(hf_config), encoding="utf-8")
    with pytest.raises(ExportError, match="greedy caption of sample image 0"):
        validate_captions(torch_dir, folder, load_model_config(folder), log=lambda _: None)


def test_caption_over_grpc_and_rest_is_pytorchs(
    caption_server: ServerProcess, tiny_captioner: tuple[Path, Path]
) -> None:
    png = _png()
    expected, ids = _pytorch_caption(tiny_captioner[0], png, NEW_TOKENS)
    assert expected.strip()  # the random model says something
    b64 = base64.b64encode(png).decode()
    with caption_server.client() as client:
        task = client.create_task(
            task_type="image_to_text",
            model_name=NAME,
            input_data={"image": b64},
            parameters={"max_new_tokens": NEW_TOKENS},
        )
        streamed = ""
        done = None
        for event in client.watch_task(task.task_id, after_sequence=task.sequence):
            streamed += event.output_delta
            if event.is_terminal:
                done = event.task
        assert done is not None and done.status == "COMPLETED", done
        assert done.result is not None
        result = done.result
    with httpx.Client(base_url=caption_server.http_url, timeout=60) as rest:
        created = rest.post(
            "/tasks",
            json={
                "task_type": "image-to-text",
                "model_name": NAME,
                "input_data": {"image": "data:image/png;base64," + b64},
                # seed 001's spelling: the start token and the new ones, as transformers counts
                "parameters": {"max_length": NEW_TOKENS + 1},
            },
        )
        assert created.status_code == 201, created.text
        over_rest = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
    print(f"image_to_text (captioning): {result['text']!r}, PyTorch {expected!r}, ids {ids}")
    assert result["text"] == expected
    assert result["generated_text"] == expected
    assert streamed == expected  # the caption streams as OUTPUT events while it is generated
    ended = ids[-1] == ids[0]  # the start token is the end token too
    assert result["tokens_generated"] == len(ids) - 1 - ended  # neither start nor end counted
    assert result["finish_reason"] == ("eos" if ended else "length")
    assert over_rest["result"]["text"] == expected
    assert over_rest["result"]["tokens_generated"] == result["tokens_generated"]


def test_bad_image_is_refused_naming_the_field(caption_server: ServerProcess) -> None:
    not_an_image = base64.b64encode(b"GIF? no: plain text, not an image").decode()
    with caption_server.client() as client, pytest.raises(InvalidArgumentError) as caught:
        client.create_task(
            task_type="image_to_text", model_name=NAME, input_data={"image": not_an_image}
        )
    assert caught.value.field_violations[0].field == "input_data.image"
    with httpx.Client(base_url=caption_server.http_url, timeout=60) as rest:
        refused = rest.post(
            "/tasks",
            json={
                "task_type": "image_to_text",
                "model_name": NAME,
                "input_data": {"image": "data:image/png;base64," + not_an_image},
            },
        )
        assert refused.status_code == 400
        assert "input_data.image" in refused.text
        too_long = rest.post(
            "/tasks",
            json={
                "task_type": "image_to_text",
                "model_name": NAME,
                "input_data": {"image": base64.b64encode(_png()).decode()},
                "parameters": {"max_new_tokens": 64},  # 63 positions are left after the start
            },
        )
        assert too_long.status_code == 400
        assert "parameters.max_new_tokens" in too_long.text


async def test_ocr_stays_the_default_beside_a_captioner(
    tmp_path: Path, tiny_captioner: tuple[Path, Path], media_models_dir: Path
) -> None:
    """With both in the repository and neither named the default, a request naming no model
    is read by PP-OCR; naming the captioner gets a caption."""
    from taskorch.inference import InferenceEngine

    shutil.copytree(media_models_dir / "pp-ocrv4", tmp_path / "pp-ocrv4")
    ocr_yaml = tmp_path / "pp-ocrv4" / "model.yaml"
    ocr = yaml.safe_load(ocr_yaml.read_text(encoding="utf-8"))
    ocr.pop("default_for", None)  # neither is named the default: the family decides
    ocr_yaml.write_text(yaml.safe_dump(ocr), encoding="utf-8")
    captioner = f"a-{NAME}"  # sorts before pp-ocrv4: the family, not the name, decides
    shutil.copytree(tiny_captioner[1] / NAME, tmp_path / captioner)
    engine = InferenceEngine(tmp_path, poll_seconds=0)
    await engine.start()
    try:
        image = {"image": base64.b64encode(_png()).decode()}
        default = (await engine.run(engine.check("image_to_text", "", image, {}))).result
        assert "lines" in default and "confidence" in default  # PP-OCR's result
        named = (
            await engine.run(engine.check("ocr", captioner, image, {"max_new_tokens": 3}))
        ).result
        assert "lines" not in named and named["generated_text"] == named["text"]
        assert named["tokens_generated"] <= 3
    finally:
        await engine.close()


def test_the_folder_decides_the_family(tmp_path: Path) -> None:
    task = TaskType.IMAGE_TO_TEXT
    assert families_of(task) == (ModelFamily.PP_OCR, ModelFamily.IMAGE_CAPTIONING)  # OCR first
    assert task_types_of(ModelFamily.IMAGE_CAPTIONING) == [task]
    (tmp_path / "det.onnx").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert family_of_source(task, tmp_path) is ModelFamily.PP_OCR  # graphs ready: PP-OCR
    (tmp_path / "det.onnx").unlink()
    assert family_of_source(task, tmp_path) is ModelFamily.IMAGE_CAPTIONING
    # A captioner optimum does not export as image-to-text is refused before exporting.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip"}), encoding="utf-8")
    with pytest.raises(InvalidArgument) as refused:
        check_captioner(tmp_path)
    assert refused.value.violations[0].field == "src"
    assert "vision-encoder-decoder" in str(refused.value)


async def test_a_trocr_decoder_imports_and_captions_as_pytorch(tmp_path: Path) -> None:
    """A ViT encoder with a TrOCR decoder exports, passes the greedy check and captions as
    PyTorch (tiny, random, built here: a few seconds). Its merged decoder also caches the
    cross-attention keys and values (``past_key_values.N.encoder.*``, kept from the first
    step), where GPT2's export caches self-attention only."""
    import torch
    from transformers import (
        TrOCRConfig,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    from taskorch.inference import InferenceEngine

    offline_environment()
    tokenizer = gpt2_tokenizer(tmp_path / "_tokenizer")
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    encoder = ViTConfig(
        image_size=SIDE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    decoder = TrOCRConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        decoder_layers=2,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        decoder_start_token_id=eos,
        tie_word_embeddings=False,
        init_std=0.2,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = eos
    config.pad_token_id = eos
    config.eos_token_id = eos
    source = tmp_path / "src" / "tiny-vit-trocr"
    VisionEncoderDecoderModel(config=config).eval().save_pretrained(source)
    tokenizer.save_pretrained(source)
    ViTImageProcessor(size={"height": SIDE, "width": SIDE}).save_pretrained(source)
    report = import_model(
        source, "image_to_text", models_dir=tmp_path / "models", log=lambda _: None
    )
    assert load_model_config(report.path).extra["validation"]["greedy_captions_equal"] == 2
    png = _png()
    expected, ids = _pytorch_caption(source, png, NEW_TOKENS)
    assert expected.strip()
    engine = InferenceEngine(tmp_path / "models", poll_seconds=0)
    await engine.start()
    try:
        image = {"image": base64.b64encode(png).decode()}
        request = engine.check("image_to_text", "", image, {"max_new_tokens": NEW_TOKENS})
        result = (await engine.run(request)).result  # the only image_to_text model: the default
    finally:
        await engine.close()
    assert result["text"] == expected
    assert result["tokens_generated"] == len(ids) - 1 - (ids[-1] == eos)
