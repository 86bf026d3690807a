"""Import a Hugging Face model directory into the repository: optimum export, validation, int8.

``import_model`` exports with an explicit task (optimum cannot infer one from a local
directory), compares ONNX Runtime's outputs with the PyTorch model's on sample inputs (the max
absolute difference is reported and must stay within a tolerance), optionally quantizes encoders
to int8 (``taskorch.inference.quantize``: dynamic, per-channel QInt8, kept only when a quality
check against the float model passes), writes ``model.yaml`` and moves the folder into place
atomically so a running engine's watcher picks it up whole.

Needs the ``export`` extra (torch, optimum-onnx); serving does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.config import ModelConfig, load_model_config, write_model_config
from taskorch.inference.task_types import (
    EXPORT_TASK_OF_FAMILY,
    IMAGE_FAMILIES,
    MEDIA_FAMILIES,
    SEQ2SEQ_FAMILIES,
    ModelFamily,
    TaskType,
    canonical_task_type,
    family_of_source,
)

if TYPE_CHECKING:
    from taskorch.inference.types import QuantizationCheck

Log = Callable[[str], None]
FloatArray = npt.NDArray[np.float32]

SAMPLE_TEXTS = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Hello world",
    "ONNX Runtime serves models exported from PyTorch.",
)
SAMPLE_QUESTIONS = ("What jumps over the dog?", "Who says hello?", "What serves models?")


class ExportError(RuntimeError):
    """The export or its validation failed; the model was not imported."""


@dataclass(frozen=True)
class ImportReport:
    """What ``import_model`` did, with the figures it printed."""

    name: str
    path: Path
    task: str
    export_task: str
    max_abs_diff: float
    tolerance: float
    quantization: str
    quantization_check: QuantizationCheck | None  # int8 vs float32 figures (--quantize int8)
    seconds: float


def _any(value: object) -> Any:
    """Loosen a partially typed third-party class (transformers' Auto* loaders)."""
    return value


def offline_environment() -> None:
    """Forbid every download from a model hub for the rest of the process."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the exporter's known-harmless noise (TracerWarning, deprecations)."""
    import logging

    loggers = [logging.getLogger(n) for n in ("optimum", "transformers", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def model_slug(text: str) -> str:
    """A repository folder name from a free-form name ("SmolLM2 135M" -> "smollm2-135m")."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    if not slug:
        raise InvalidArgument("model name is empty after normalisation", field="name")
    return slug


def convert_gguf(src_dir: Path, gguf_file: str, out_dir: Path, log: Log = print) -> Path:
    """Turn a GGUF checkpoint into a float32 Hugging Face directory (tokenizer fixed).

    A tokenizer converted from a ChatML GGUF comes out with eos ``<|im_start|>`` and adds a
    BOS token in front of prompts that already start with one; both are repaired here.
    """
    offline_environment()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    with quiet_export():
        model = AutoModelForCausalLM.from_pretrained(
            src_dir, gguf_file=gguf_file, dtype=torch.float32
        )
        tokenizer = _any(AutoTokenizer).from_pretrained(src_dir, gguf_file=gguf_file)
    if "<|im_end|>" in tokenizer.get_vocab():
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.pad_token = "<|im_end|>"
        eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        model.config.eos_token_id = eos_id
        model.config.pad_token_id = eos_id
        if model.generation_config is not None:
            model.generation_config.eos_token_id = eos_id
            model.generation_config.pad_token_id = eos_id
    if hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = False
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_export():
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    log(f"converted {gguf_file} to a float32 HF directory in {time.perf_counter() - started:.1f}s")
    return out_dir


def convert_tapex_tokenizer(src_dir: Path, out_dir: Path, log: Log = print) -> tuple[Path, Any]:
    """A copy of a TAPEX folder whose tokenizer is BART's fast byte-level BPE.

    TAPEX's own tokenizer (``TapexTokenizer``, slow, deprecated in transformers) writes the
    table out itself and takes tables, not texts; the table_question_answering pipeline writes
    the table itself, so the same vocabulary and merges behind BART's fast tokenizer encode
    the same ids. The folder's other files are linked, not copied.

    Returns:
        The folder to export from (``src_dir`` itself when its tokenizer is not TAPEX's) and
        the table format (lower case, cell length in tokens) for ``table_format.json``.
    """
    tokenizer_config: dict[str, Any] = {}
    if (src_dir / "tokenizer_config.json").exists():
        tokenizer_config = json.loads(
            (src_dir / "tokenizer_config.json").read_text(encoding="utf-8")
        )
    table_format = {
        "linearization": "tapex",
        "do_lower_case": bool(tokenizer_config.get("do_lower_case", True)),
        "max_cell_length": int(tokenizer_config.get("max_cell_length", 15)),
    }
    if tokenizer_config.get("tokenizer_class") != "TapexTokenizer":
        return src_dir, table_format
    from transformers import BartTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_files = {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
    }
    for item in src_dir.iterdir():
        if item.is_file() and item.name not in tokenizer_files:
            (out_dir / item.name).symlink_to(item.resolve())
    special = {
        key: tokenizer_config[key]
        for key in ("bos_token", "eos_token", "sep_token", "cls_token", "unk_token", "pad_token")
        if isinstance(tokenizer_config.get(key), str)
    }
    with quiet_export():
        fast = _any(BartTokenizerFast)(
            vocab_file=str(src_dir / "vocab.json"),
            merges_file=str(src_dir / "merges.txt"),
            add_prefix_space=bool(tokenizer_config.get("add_prefix_space", False)),
            **special,
        )
        fast.save_pretrained(out_dir)
    log("TAPEX tokenizer: its vocabulary and merges kept behind BART's fast tokenizer")
    return out_dir, table_format


def import_model(
    src_dir: Path,
    task: str,
    *,
    models_dir: Path,
    name: str | None = None,
    quantize: str | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    log: Log = print,
) -> ImportReport:
    """Export a local Hugging Face model directory into the model repository.

    Args:
        src_dir: a directory ``from_pretrained`` can read (config, weights, tokenizer), or one
            holding a single ``.gguf`` file (causal LMs).
        task: the task type the model serves (any accepted spelling).
        models_dir: the repository; the model lands in ``models_dir/<name>``.
        name: folder name; defaults to the source directory's name.
        quantize: ``None`` or ``"int8"`` (encoders only: dynamic per-channel QInt8, kept
            when it agrees with the float model; see ``taskorch.inference.quantize``).
        config_overrides: ``model.yaml`` keys to set (max_batch_size, default_for, ...).
        log: where progress and validation figures are printed.

    Returns:
        The report with the validation figures.

    Raises:
        InvalidArgument: unknown task, missing source, unsupported quantization.
        ExportError: the export failed or its outputs disagree with the source model.
        QuantizationRefused: (an ExportError) the int8 model failed its quality check.
    """
    offline_environment()
    started = time.perf_counter()
    task_type = canonical_task_type(task)
    family = family_of_source(task_type, src_dir)
    if not src_dir.is_dir():
        raise InvalidArgument(f"{src_dir} is not a directory", field="src")
    if quantize not in (None, "int8"):
        raise InvalidArgument(
            f"quantize must be int8 or left out, got {quantize!r}", field="quantize"
        )
    if quantize:
        from taskorch.inference.quantize import check_quantizable

        check_quantizable(task_type, family)
    folder = model_slug(name or src_dir.name)
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = models_dir / f".{folder}.import-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    if family in MEDIA_FAMILIES:
        if quantize:
            raise InvalidArgument(
                f"{task_type.value} models are imported as they are; --quantize does not apply",
                field="quantize",
            )
        if family is ModelFamily.STABLE_DIFFUSION and is_diffusers_folder(src_dir):
            return _import_diffusers(
                src_dir, task_type, models_dir, folder, staging, started, config_overrides, log
            )
        return _import_media(
            src_dir, task_type, family, models_dir, folder, staging, started, config_overrides, log
        )
    export_task = EXPORT_TASK_OF_FAMILY[family]
    source = src_dir
    ggufs = sorted(src_dir.glob("*.gguf"))
    try:
        if ggufs and not (src_dir / "config.json").exists():
            if family is not ModelFamily.CAUSAL_LM:
                raise InvalidArgument(
                    "GGUF sources are supported for text_generation", field="task"
                )
            source = convert_gguf(src_dir, ggufs[0].name, staging / "_hf", log)
        table_format = None
        if task_type is TaskType.TABLE_QUESTION_ANSWERING:
            source, table_format = convert_tapex_tokenizer(source, staging / "_hf", log)
        if family is ModelFamily.VITS_TTS:
            check_vits_tokenizer(source)
        if family is ModelFamily.AUDIO_CLASSIFICATION:
            check_audio_classifier(source)
        if family is ModelFamily.IMAGE_CAPTIONING:
            check_captioner(source)
        log(f"exporting {src_dir} as {export_task} ...")
        if family is ModelFamily.SPEECHT5_TTS:
            export_speecht5(source, staging)
        else:
            from optimum.exporters.onnx import main_export

            with quiet_export():
                main_export(
                    str(source),
                    staging,
                    task=export_task,
                    do_validation=False,
                    library_name="transformers",
                )
        if family is ModelFamily.SPEECH_SEQ2SEQ and (source / "generation_config.json").exists():
            # optimum writes one rebuilt from config.json, without Whisper's prompt tokens
            # (lang_to_id, task_to_id, no_timestamps_token_id): the source's is the one.
            shutil.copy2(source / "generation_config.json", staging / "generation_config.json")
        _copy_tokenizer_files(source, staging)
        if table_format is not None:
            (staging / "table_format.json").write_text(
                json.dumps(table_format, indent=2) + "\n", encoding="utf-8"
            )
        if family is ModelFamily.VITS_TTS:
            diff, tolerance = validate_vits(source, staging, log)
        elif family is ModelFamily.SPEECHT5_TTS:
            diff, tolerance = validate_speecht5(source, staging, log)
        else:
            diff, tolerance = validate_export(source, staging, family)
        log(f"validation: max abs diff {diff:.3g} (tolerance {tolerance:.3g}) vs PyTorch")
        if not diff <= tolerance:
            raise ExportError(
                f"ONNX outputs differ from the source model by {diff:.3g} (> {tolerance:.3g})"
            )
        validation: dict[str, Any] = {"max_abs_diff": float(diff), "tolerance": float(tolerance)}
        if family is ModelFamily.AUDIO_CLASSIFICATION:
            validation.update(validate_audio_classifier(source, staging, log))
        config = _initial_config(source, task_type, family, config_overrides)
        if family is ModelFamily.IMAGE_CAPTIONING:
            validation["greedy_captions_equal"] = validate_captions(source, staging, config, log)
        check: QuantizationCheck | None = None
        if quantize == "int8":
            from taskorch.inference.quantize import INT8_FILE, quantize_int8

            log("quantizing to int8 (dynamic, per-channel) and checking it against float32 ...")
            check = quantize_int8(staging, source, family, config)
            log(f"int8 check passed: {check.summary()}")
            (staging / config.onnx_file).unlink()
            data = staging / f"{config.onnx_file}_data"
            if data.exists():
                data.unlink()
            config = replace(
                config, onnx_file=INT8_FILE, quantization="int8", quantization_check=check
            )
        config = replace(
            config,
            extra={
                **config.extra,
                "source": config.extra.get("source", str(src_dir.resolve())),
                "validation": validation,
            },
        )
        shutil.rmtree(staging / "_hf", ignore_errors=True)
        write_model_config(staging, config)
        install_folder(staging, models_dir / folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    log(f"imported {folder} ({task_type.value}) into {models_dir / folder} in {seconds:.1f}s")
    return ImportReport(
        name=folder,
        path=models_dir / folder,
        task=task_type.value,
        export_task=export_task,
        max_abs_diff=float(diff),
        tolerance=float(tolerance),
        quantization=config.quantization,
        quantization_check=check,
        seconds=seconds,
    )


def _import_media(
    src_dir: Path,
    task_type: Any,
    family: ModelFamily,
    models_dir: Path,
    folder: str,
    staging: Path,
    started: float,
    overrides: Mapping[str, Any] | None,
    log: Log,
) -> ImportReport:
    """A media folder (Piper voice, PP-OCR, silero-vad) is copied as it is, not exported."""
    from taskorch.inference.media_import import import_media_folder

    try:
        import_media_folder(src_dir, task_type, family, staging, overrides, log)
        install_folder(staging, models_dir / folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    log(f"imported {folder} ({task_type.value}) into {models_dir / folder} in {seconds:.1f}s")
    return ImportReport(
        name=folder,
        path=models_dir / folder,
        task=task_type.value,
        export_task="",
        max_abs_diff=0.0,
        tolerance=0.0,
        quantization="none",
        quantization_check=None,
        seconds=seconds,
    )


def is_diffusers_folder(src_dir: Path) -> bool:
    """A diffusers pipeline saved with PyTorch weights (not yet exported to ONNX)."""
    return (src_dir / "model_index.json").exists() and not (src_dir / "unet/model.onnx").exists()


def export_diffusers(src_dir: Path, out_dir: Path, log: Log = print) -> tuple[float, float]:
    """Export a Stable Diffusion diffusers folder with optimum (``text-to-image``) and compare
    the exported UNet with the PyTorch one on a random input.

    Returns:
        The UNet's max absolute difference and its tolerance (as ``validate_export``'s).
    """
    log(f"exporting {src_dir} as text-to-image (diffusers) ...")
    from optimum.exporters.onnx import main_export

    with quiet_export():
        main_export(
            str(src_dir),
            out_dir,
            task="text-to-image",
            do_validation=False,
            library_name="diffusers",
        )
    import onnxruntime as ort
    import torch
    from diffusers import UNet2DConditionModel

    with quiet_export():
        unet = _any(UNet2DConditionModel).from_pretrained(
            src_dir / "unet", torch_dtype=torch.float32
        )
    unet.eval()
    rng = np.random.default_rng(0)
    side = min(int(unet.config.sample_size), 32)
    sample = rng.standard_normal((2, unet.config.in_channels, side, side), dtype=np.float32)
    hidden = rng.standard_normal((2, 8, unet.config.cross_attention_dim), dtype=np.float32)
    timestep = np.array(500.0, dtype=np.float32)
    with torch.no_grad():
        expected = unet(
            torch.from_numpy(sample), torch.from_numpy(timestep), torch.from_numpy(hidden)
        ).sample.numpy()
    session = ort.InferenceSession(
        str(out_dir / "unet/model.onnx"), providers=["CPUExecutionProvider"]
    )
    timestep_type = next(i.type for i in session.get_inputs() if i.name == "timestep")
    got = session.run(
        ["out_sample"],
        {
            "sample": sample,
            "timestep": timestep.astype(np.int64 if "int64" in timestep_type else np.float32),
            "encoder_hidden_states": hidden,
        },
    )[0]
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    tolerance = 1e-4 * float(np.abs(expected).max()) + 1e-4
    log(f"validation: UNet max abs diff {diff:.3g} (tolerance {tolerance:.3g}) vs PyTorch")
    if not diff <= tolerance:
        raise ExportError(f"the ONNX UNet differs from PyTorch by {diff:.3g} (> {tolerance:.3g})")
    return diff, tolerance


def _import_diffusers(
    src_dir: Path,
    task_type: TaskType,
    models_dir: Path,
    folder: str,
    staging: Path,
    started: float,
    overrides: Mapping[str, Any] | None,
    log: Log,
) -> ImportReport:
    """A diffusers folder: exported with optimum beside the staging folder, then imported
    like an export (``media_import``), the UNet's validation figures kept in model.yaml."""
    exported = models_dir / f".{folder}.export-{os.getpid()}"
    shutil.rmtree(exported, ignore_errors=True)
    try:
        diff, tolerance = export_diffusers(src_dir, exported, log)
        validation = {"max_abs_diff": diff, "tolerance": tolerance}
        report = _import_media(
            exported,
            task_type,
            ModelFamily.STABLE_DIFFUSION,
            models_dir,
            folder,
            staging,
            started,
            {"source": str(src_dir.resolve()), "validation": validation, **(overrides or {})},
            log,
        )
    finally:
        shutil.rmtree(exported, ignore_errors=True)
    return replace(report, export_task="text-to-image", max_abs_diff=diff, tolerance=tolerance)


def install_folder(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with renames, so a watcher never sees half a model."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "spm_char.model",
    "added_tokens.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "generation_config.json",
    "config.json",
)


def _copy_tokenizer_files(source: Path, staging: Path) -> None:
    for file in _TOKENIZER_FILES:
        if (source / file).exists() and not (staging / file).exists():
            shutil.copy2(source / file, staging / file)


def _initial_config(
    source: Path,
    task_type: Any,
    family: ModelFamily,
    overrides: Mapping[str, Any] | None,
) -> ModelConfig:
    from taskorch.inference.config import parse_model_config

    hf_config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    raw: dict[str, Any] = {"task": task_type.value, "family": family.value}
    id2label = hf_config.get("id2label")
    if family in (
        ModelFamily.SEQUENCE_CLASSIFICATION,
        ModelFamily.TOKEN_CLASSIFICATION,
        ModelFamily.IMAGE_CLASSIFICATION,
        ModelFamily.OBJECT_DETECTION,
        ModelFamily.SEMANTIC_SEGMENTATION,
        ModelFamily.AUDIO_CLASSIFICATION,
    ) and isinstance(id2label, dict):
        raw["labels"] = [str(id2label[k]) for k in sorted(id2label, key=int)]
    positions = hf_config.get("max_position_embeddings") or hf_config.get("n_positions")
    if family is ModelFamily.CAUSAL_LM:
        window = min(int(positions or 2048), 2048)
        raw.update(context_window=window, max_input_length=window, max_batch_size=8)
    elif task_type is TaskType.TABLE_QUESTION_ANSWERING:  # TAPEX was trained on 1024 tokens
        raw.update(max_input_length=min(int(positions or 1024), 1024), max_batch_size=1)
    elif family is ModelFamily.SEQ2SEQ_LM:
        raw.update(max_input_length=512, max_batch_size=1)
    elif family is ModelFamily.AUDIO_CLASSIFICATION:  # one waveform a session run
        raw.update(max_batch_size=1)
    elif family is ModelFamily.VITS_TTS:  # one text at a time; the pipeline calls the graph
        raw.update(max_input_length=min(int(positions or 512), 512), max_batch_size=1)
    elif family is ModelFamily.IMAGE_CAPTIONING:  # the input is an image: this bounds the output
        decoder = hf_config.get("decoder") or {}
        targets = decoder.get("n_positions") or decoder.get("max_position_embeddings")
        raw.update(max_input_length=min(int(targets or 512), 1024), max_batch_size=1)
    elif family is ModelFamily.SPEECHT5_TTS:  # one text at a time, at most its text positions
        from taskorch.inference.pipelines import speecht5

        texts = int(hf_config.get("max_text_positions") or 450)
        raw.update(
            max_input_length=max(2, min(texts, 600)),
            max_batch_size=1,
            onnx={"file": "encoder_model.onnx"},
            files={
                speecht5.DECODER: "decoder_model_merged.onnx",
                speecht5.POSTNET_VOCODER: "decoder_postnet_and_vocoder.onnx",
                speecht5.SPEAKER_EMBEDDING: "speaker_embedding.npy",
                speecht5.VOCODER_CONFIG: "vocoder/config.json",
            },
        )
    elif family is ModelFamily.SPEECH_SEQ2SEQ:  # the input is audio: this bounds the output
        targets = int(hf_config.get("max_target_positions") or 448)
        raw.update(max_input_length=targets, max_batch_size=1)
    else:
        raw.update(
            max_input_length=min(int(positions or 512), 512),
            max_batch_size=32,
        )
    raw.update(overrides or {})
    return parse_model_config(raw)


# --- validation --------------------------------------------------------------------------------


def _sample_encoding(source: Path, family: ModelFamily) -> dict[str, npt.NDArray[Any]]:
    from transformers import AutoTokenizer

    if family in IMAGE_FAMILIES or family is ModelFamily.IMAGE_CAPTIONING:
        from PIL import Image
        from transformers import AutoImageProcessor

        processor = _any(AutoImageProcessor).from_pretrained(source)
        rng = np.random.default_rng(0)
        images = [
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(2)
        ]
        return dict(processor(images=images, return_tensors="np"))
    if family is ModelFamily.SPEECH_SEQ2SEQ:
        from transformers import AutoFeatureExtractor

        extractor = _any(AutoFeatureExtractor).from_pretrained(source)
        rng = np.random.default_rng(0)
        rate = int(extractor.sampling_rate)
        audio = [rng.normal(0, 0.1, rate * 2).astype(np.float32) for _ in range(2)]
        features = extractor(audio, sampling_rate=rate, return_tensors="np")["input_features"]
        return {"input_features": np.asarray(features, dtype=np.float32)}
    if family is ModelFamily.AUDIO_CLASSIFICATION:
        from transformers import AutoFeatureExtractor

        with quiet_export():  # AST's 128 Kaldi mel filters: one is empty, a UserWarning
            extractor = _any(AutoFeatureExtractor).from_pretrained(source)
        rng = np.random.default_rng(0)
        rate = int(extractor.sampling_rate)
        audio = [rng.normal(0, 0.1, rate).astype(np.float32) for _ in range(2)]
        values = extractor(audio, sampling_rate=rate, return_tensors="np")["input_values"]
        return {"input_values": np.asarray(values, dtype=np.float32)}
    tokenizer = _any(AutoTokenizer).from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if family is ModelFamily.CAUSAL_LM:
        tokenizer.padding_side = "left"
    if family is ModelFamily.QUESTION_ANSWERING:
        enc = tokenizer(
            list(SAMPLE_QUESTIONS), list(SAMPLE_TEXTS), padding=True, return_tensors="np"
        )
    else:
        enc = tokenizer(list(SAMPLE_TEXTS), padding=True, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in enc.items()}


def _torch_outputs(
    source: Path, family: ModelFamily, enc: Mapping[str, npt.NDArray[Any]]
) -> dict[str, FloatArray]:
    import torch
    import transformers

    classes = {
        ModelFamily.CAUSAL_LM: "AutoModelForCausalLM",
        ModelFamily.SEQ2SEQ_LM: "AutoModelForSeq2SeqLM",
        ModelFamily.SPEECH_SEQ2SEQ: "AutoModelForSpeechSeq2Seq",
        ModelFamily.IMAGE_CAPTIONING: "VisionEncoderDecoderModel",
        ModelFamily.SEQUENCE_CLASSIFICATION: "AutoModelForSequenceClassification",
        ModelFamily.TOKEN_CLASSIFICATION: "AutoModelForTokenClassification",
        ModelFamily.QUESTION_ANSWERING: "AutoModelForQuestionAnswering",
        ModelFamily.MASKED_LM: "AutoModelForMaskedLM",
        ModelFamily.TEXT_ENCODER: "AutoModel",
        ModelFamily.IMAGE_CLASSIFICATION: "AutoModelForImageClassification",
        ModelFamily.OBJECT_DETECTION: "AutoModelForObjectDetection",
        ModelFamily.SEMANTIC_SEGMENTATION: "AutoModelForSemanticSegmentation",
        ModelFamily.AUDIO_CLASSIFICATION: "AutoModelForAudioClassification",
    }
    with quiet_export():
        model = getattr(transformers, classes[family]).from_pretrained(source, dtype=torch.float32)
    model.eval()
    feed = {k: torch.from_numpy(v) for k, v in enc.items()}
    with torch.no_grad():
        if family in SEQ2SEQ_FAMILIES:
            start = model.config.decoder_start_token_id or 0
            batch = next(iter(feed.values())).shape[0]
            feed["decoder_input_ids"] = torch.full((batch, 1), start, dtype=torch.long)
            feed.pop("token_type_ids", None)
        if family is ModelFamily.CAUSAL_LM:
            mask = feed["attention_mask"]
            feed["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            feed.pop("token_type_ids", None)
        out = model(**feed)
    names = ("logits", "last_hidden_state", "start_logits", "end_logits", "pred_boxes")
    return {n: out[n].float().numpy() for n in names if n in out and out[n] is not None}


def ort_outputs(
    onnx_dir: Path,
    family: ModelFamily,
    enc: Mapping[str, npt.NDArray[Any]],
    file_name: str = "model.onnx",
) -> dict[str, FloatArray]:
    """Run the exported graph(s) on ``enc`` like ``_torch_outputs`` runs the source model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    if family in SEQ2SEQ_FAMILIES:
        encoder = ort.InferenceSession(str(onnx_dir / "encoder_model.onnx"), options, cpu)
        decoder = ort.InferenceSession(str(onnx_dir / "decoder_model_merged.onnx"), options, cpu)
        enc_feed = {i.name: enc[i.name] for i in encoder.get_inputs()}
        hidden = encoder.run(None, enc_feed)[0]
        config = json.loads((onnx_dir / "config.json").read_text(encoding="utf-8"))
        start = config.get("decoder_start_token_id") or 0
        batch = next(iter(enc.values())).shape[0]
        dec_feed = {
            "input_ids": np.full((batch, 1), start, dtype=np.int64),
            "encoder_hidden_states": hidden,
            "use_cache_branch": np.array([False]),
        }
        if "attention_mask" in enc:  # text encoders; Whisper's and captioners' take no mask
            dec_feed["encoder_attention_mask"] = enc["attention_mask"]
        for item in decoder.get_inputs():
            if item.name.startswith("past_key_values"):
                dec_feed[item.name] = np.zeros((batch, item.shape[1], 0, item.shape[3]), np.float32)
        logits = decoder.run(["logits"], dec_feed)[0]
        return {"logits": logits}
    session = ort.InferenceSession(str(onnx_dir / file_name), options, cpu)
    feed: dict[str, npt.NDArray[Any]] = {}
    batch = next(iter(enc.values())).shape[0]
    for item in session.get_inputs():
        if item.name in enc:
            feed[item.name] = enc[item.name]
        elif item.name == "position_ids":
            mask = enc["attention_mask"]
            feed[item.name] = np.clip(np.cumsum(mask, -1) - 1, 0, None).astype(np.int64)
        elif item.name.startswith("past_key_values"):
            heads, dim = item.shape[1], item.shape[3]
            dtype = np.float16 if "float16" in item.type else np.float32
            feed[item.name] = np.zeros((batch, heads, 0, dim), dtype=dtype)
    names = [o.name for o in session.get_outputs() if not o.name.startswith("present")]
    return dict(zip(names, session.run(names, feed), strict=True))


def validate_export(source: Path, onnx_dir: Path, family: ModelFamily) -> tuple[float, float]:
    """Max absolute difference between ONNX Runtime and PyTorch on sample inputs.

    Padding positions are left out. The tolerance scales with the outputs' magnitude
    (1e-4 relative plus 1e-4 absolute): a 30-layer LM's logits drift by ~1e-3 in float32.
    """
    enc = _sample_encoding(source, family)
    expected = _torch_outputs(source, family, enc)
    got = ort_outputs(onnx_dir, family, enc)
    mask = enc.get("attention_mask")
    worst, scale = 0.0, 0.0
    for key, ref in expected.items():
        if key not in got:
            continue
        out = got[key]
        delta = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        if mask is not None and delta.ndim >= 2 and delta.shape[:2] == mask.shape:
            keep = mask.astype(bool)
            delta, ref = delta[keep], ref[keep]
        worst = max(worst, float(delta.max()))
        scale = max(scale, float(np.abs(ref).max()))
    return worst, 1e-4 * scale + 1e-4


def check_vits_tokenizer(source: Path) -> None:
    """Refuse a VITS folder whose tokenizer the serving pipeline cannot reproduce."""
    from taskorch.inference.pipelines.vits import VitsTokens

    if not (source / "vocab.json").exists():
        raise InvalidArgument(f"{source} has no vocab.json (a VITS tokenizer)", field="src")
    settings_file = source / "tokenizer_config.json"
    settings = (
        json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.exists() else {}
    )
    VitsTokens(json.loads((source / "vocab.json").read_text(encoding="utf-8")), settings)


def check_audio_classifier(source: Path) -> None:
    """Refuse an audio classifier folder whose input the serving pipeline cannot reproduce:
    no ``preprocessor_config.json``, an extractor other than Wav2Vec2's or AST's, or an AST
    extractor whose frames or mel bins are not the model's."""
    from taskorch.inference.pipelines.ast_features import ASTFeatures
    from taskorch.inference.pipelines.audio_classification import audio_features

    if not (source / "preprocessor_config.json").is_file():
        raise InvalidArgument(
            f"{source} has no preprocessor_config.json (its feature extractor)", field="src"
        )
    features = audio_features(source)
    if isinstance(features, ASTFeatures):
        hf_config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        for key in ("max_length", "num_mel_bins"):
            model_value = hf_config.get(key)
            if model_value is not None and int(model_value) != getattr(features, key):
                raise InvalidArgument(
                    f"{source}: preprocessor_config.json's {key} is {getattr(features, key)}, "
                    f"config.json's {model_value}: the extractor must make the model's input",
                    field="src",
                )


AUDIO_PROBABILITY_TOLERANCE = 1e-4


def validate_audio_classifier(source: Path, onnx_dir: Path, log: Log = print) -> dict[str, float]:
    """Compare what serving computes with what Hugging Face computes, end to end.

    On two sample waveforms (a tone in noise; 1 s, padded by AST's extractor, and 12 s, cut):
    our numpy ``input_values`` (``pipelines.audio_classification``) against the source's
    feature extractor's, and the softmax of the ONNX graph's logits on ours against the
    PyTorch model's on the extractor's: the top label must be the same (unless PyTorch's best
    two are within the tolerance of each other) and every probability within 1e-4.

    Returns:
        ``features_max_abs_diff`` and ``probabilities_max_abs_diff``, for model.yaml.

    Raises:
        ExportError: the features, the top label or the probabilities disagree.
    """
    import onnxruntime as ort
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    from taskorch.inference.pipelines.audio_classification import audio_features, softmax

    features = audio_features(source)
    with quiet_export():
        extractor = _any(AutoFeatureExtractor).from_pretrained(source)
        model = _any(AutoModelForAudioClassification).from_pretrained(source, dtype=torch.float32)
    model.eval()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), options, ["CPUExecutionProvider"])
    rate = features.sampling_rate
    rng = np.random.default_rng(7)
    worst_features, worst_probs = 0.0, 0.0
    for seconds in (1, 12):
        t = np.arange(rate * seconds) / rate
        waveform = (0.3 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 0.05, t.size)).astype(
            np.float32
        )
        with quiet_export():
            theirs = np.asarray(
                extractor(waveform, sampling_rate=rate, return_tensors="np")["input_values"],
                dtype=np.float32,
            )
        ours = features.input_values(waveform)[np.newaxis]
        if ours.shape != theirs.shape:
            raise ExportError(
                f"our audio features have shape {ours.shape}, the extractor's {theirs.shape}"
            )
        worst_features = max(worst_features, float(np.abs(ours - theirs).max()))
        with torch.no_grad():
            logits = model(input_values=torch.from_numpy(theirs)).logits[0].double().numpy()
        expected = softmax(logits)
        got = softmax(np.asarray(session.run(["logits"], {"input_values": ours})[0][0]))
        worst_probs = max(worst_probs, float(np.abs(got - expected).max()))
        ranked = np.sort(expected)[::-1]
        tie = ranked.size > 1 and ranked[0] - ranked[1] <= AUDIO_PROBABILITY_TOLERANCE
        if int(got.argmax()) != int(expected.argmax()) and not tie:
            raise ExportError(
                f"the ONNX model's top class is {int(got.argmax())}, PyTorch's "
                f"{int(expected.argmax())} on a {seconds} s sample"
            )
    log(
        f"validation: audio features max abs diff {worst_features:.3g} vs the feature "
        f"extractor's, softmax max abs diff {worst_probs:.3g} vs PyTorch, same top label"
    )
    if not worst_features <= AUDIO_PROBABILITY_TOLERANCE:
        raise ExportError(
            f"our audio features differ from the feature extractor's by {worst_features:.3g}"
        )
    if not worst_probs <= AUDIO_PROBABILITY_TOLERANCE:
        raise ExportError(
            f"the ONNX model's probabilities differ from PyTorch's by {worst_probs:.3g} "
            f"(> {AUDIO_PROBABILITY_TOLERANCE:g})"
        )
    return {"features_max_abs_diff": worst_features, "probabilities_max_abs_diff": worst_probs}


CAPTIONER_TYPE = "vision-encoder-decoder"
CAPTION_CHECK_TOKENS = 16


def check_captioner(source: Path) -> None:
    """Refuse an image_to_text folder that is not a captioner optimum exports and we serve.

    Raises:
        InvalidArgument: (field ``src``) not a vision-encoder-decoder model, or without the
            image processor or tokenizer the serving pipeline loads.
    """
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{source}/config.json cannot be read: {exc}", field="src") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != CAPTIONER_TYPE:
        raise InvalidArgument(
            f"image_to_text imports Hugging Face captioners of model_type {CAPTIONER_TYPE} "
            f"(VisionEncoderDecoderModel: ViT + GPT2, TrOCR, ...) or PP-OCR graphs; "
            f"{source} holds a {model_type!r} model",
            field="src",
        )
    if not (source / "preprocessor_config.json").exists():
        raise InvalidArgument(
            f"{source} has no preprocessor_config.json (the model's image processor)",
            field="src",
        )
    if not any((source / f).exists() for f in ("tokenizer.json", "vocab.json", "vocab.txt")):
        raise InvalidArgument(f"{source} has no tokenizer (tokenizer.json, ...)", field="src")


def sample_images(count: int = 2) -> list[Any]:
    """Deterministic noise images of two sizes (RGB PIL images) to compare exports on."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(48, 64), (80, 56)]
    return [
        Image.fromarray(rng.integers(0, 255, (*sizes[i % 2], 3), dtype=np.uint8))
        for i in range(count)
    ]


def validate_captions(source: Path, onnx_dir: Path, config: ModelConfig, log: Log = print) -> int:
    """Caption sample images greedily with the export as it is served (``LoadedModel`` on the
    folder: its image processor, tokenizer and the seq2seq generator on ONNX Runtime) and with
    PyTorch's ``generate`` (plain greedy, ``CAPTION_CHECK_TOKENS`` new tokens); the ids must be
    equal.

    Returns:
        How many images were compared.

    Raises:
        ExportError: the generated ids differ.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from transformers import GenerationConfig, VisionEncoderDecoderModel

    from taskorch.inference.generation import GenerationOutcome, GenerationSettings
    from taskorch.inference.pipelines.image_captioning import pixel_values
    from taskorch.inference.runtime import LoadedModel

    with quiet_export():
        reference = _any(VisionEncoderDecoderModel).from_pretrained(source, dtype=torch.float32)
    reference.eval()
    served = LoadedModel.load("caption-check", onnx_dir, config, prefer_gpu=False, threads=1)
    assert served.seq2seq is not None
    generator = served.seq2seq
    tokens = max(1, min(CAPTION_CHECK_TOKENS, config.max_input_length - 1))
    pixels = [pixel_values(served, image) for image in sample_images()]

    async def generate_all() -> list[GenerationOutcome]:
        try:
            settings = GenerationSettings(max_new_tokens=tokens)
            return [
                await generator.generate(
                    [generator.decoder_start_id], settings, encoder_feed={"pixel_values": p}
                )
                for p in pixels
            ]
        finally:
            await served.close()

    # On a thread of its own: import_model may be called from a running event loop.
    with ThreadPoolExecutor(1) as pool:
        outcomes = pool.submit(asyncio.run, generate_all()).result()
    own = reference.generation_config
    plain = _any(GenerationConfig)(
        decoder_start_token_id=own.decoder_start_token_id,
        bos_token_id=own.bos_token_id,
        eos_token_id=own.eos_token_id,
        pad_token_id=own.pad_token_id,
    )
    eos = own.eos_token_id if isinstance(own.eos_token_id, list) else [own.eos_token_id]
    for index, (p, outcome) in enumerate(zip(pixels, outcomes, strict=True)):
        with torch.no_grad(), quiet_export():
            ids = reference.generate(
                pixel_values=torch.from_numpy(p),
                generation_config=plain,
                max_new_tokens=tokens,
                do_sample=False,
                num_beams=1,
            )[0].tolist()
        ours = [generator.decoder_start_id, *outcome.token_ids]
        if outcome.finish_reason == "eos" and ids[-1] in eos:
            ours.append(ids[-1])
        if ours != ids:
            raise ExportError(
                f"greedy caption of sample image {index}: the export generates {ours}, "
                f"PyTorch {ids}"
            )
    log(f"validation: greedy captions of {len(pixels)} images equal PyTorch's ({tokens} tokens)")
    return len(pixels)


VITS_NOISE = ("noise_scale", "noise_scale_duration")


def validate_vits(source: Path, onnx_dir: Path, log: Log = print) -> tuple[float, float]:
    """Max absolute difference between the exported VITS waveform and ``VitsModel``'s.

    The graph draws its noise inside (no noise or seed input), scaled by the config's
    ``noise_scale`` and ``noise_scale_duration``: both sides are compared with those at 0
    (deterministic). When the config's are not 0, a second export of a copy of the folder
    with them at 0 is the one compared (same weights, same tracing), then discarded.
    """
    import onnxruntime as ort
    import torch

    with quiet_export():  # modeling_vits's torch.jit.script warns of its deprecation
        from transformers import AutoTokenizer, VitsModel

    hf_config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    check_dir = onnx_dir
    scratch = onnx_dir / "_vits_check"
    try:
        if any(float(hf_config.get(key, 0.0) or 0.0) != 0.0 for key in VITS_NOISE):
            log("validation: exporting a copy with noise_scale 0 to compare deterministically")
            silent = scratch / "source"
            silent.mkdir(parents=True)
            for item in source.iterdir():
                if item.name != "config.json" and not item.name.startswith("_"):
                    (silent / item.name).symlink_to(item.resolve())
            zeroed = {**hf_config, **dict.fromkeys(VITS_NOISE, 0.0)}
            (silent / "config.json").write_text(json.dumps(zeroed), encoding="utf-8")
            from optimum.exporters.onnx import main_export

            with quiet_export():
                main_export(
                    str(silent),
                    scratch / "onnx",
                    task="text-to-audio",
                    do_validation=False,
                    library_name="transformers",
                )
            check_dir = scratch / "onnx"
        with quiet_export():
            tokenizer = _any(AutoTokenizer).from_pretrained(source)
            model = VitsModel.from_pretrained(source, dtype=torch.float32).eval()
        model.noise_scale = 0.0
        model.noise_scale_duration = 0.0
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            str(check_dir / "model.onnx"), options, ["CPUExecutionProvider"]
        )
        worst, scale = 0.0, 0.0
        for text in SAMPLE_TEXTS:
            enc = tokenizer(text, return_tensors="np")
            feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
            with torch.no_grad():
                expected = model(
                    **{k: torch.from_numpy(v) for k, v in feed.items()}
                ).waveform.numpy()
            got = session.run(["waveform"], feed)[0]
            if got.shape != expected.shape:
                raise ExportError(
                    f"the ONNX waveform has shape {got.shape}, PyTorch's {expected.shape}"
                )
            worst = max(worst, float(np.abs(got.astype(np.float64) - expected).max()))
            scale = max(scale, float(np.abs(expected).max()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return worst, 1e-4 * scale + 1e-4


SPEECHT5_VOCODER_DIR = "vocoder"  # the SpeechT5HifiGan's folder inside a SpeechT5 source
SPEECHT5_SPEAKER_FILE = "speaker_embedding.npy"  # optional: the default x-vector
SPEECHT5_GRAPHS = (
    "encoder_model.onnx",
    "decoder_model_merged.onnx",
    "decoder_postnet_and_vocoder.onnx",
)


def check_speecht5_source(source: Path) -> npt.NDArray[np.float32] | None:
    """Refuse a SpeechT5 folder without its vocoder or with an unusable default speaker.

    Returns:
        The folder's default x-vector (``speaker_embedding.npy``), or None when it has none.
    """
    hf_config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    architectures = hf_config.get("architectures") or ["SpeechT5ForTextToSpeech"]
    if "SpeechT5ForTextToSpeech" not in architectures:  # speecht5_asr and _vc share model_type
        raise InvalidArgument(
            f"{source} is a {', '.join(map(str, architectures))}: text_to_speech takes a "
            "SpeechT5ForTextToSpeech",
            field="src",
        )
    vocoder = source / SPEECHT5_VOCODER_DIR / "config.json"
    if not vocoder.is_file():
        raise InvalidArgument(
            f"{source} is a SpeechT5 model: its vocoder (a SpeechT5HifiGan folder, "
            f"save_pretrained) must be in {SPEECHT5_VOCODER_DIR}/ inside it",
            field="src",
        )
    model_type = json.loads(vocoder.read_text(encoding="utf-8")).get("model_type")
    if model_type != "hifigan":
        raise InvalidArgument(
            f"{vocoder} is a {model_type!r} model, not a SpeechT5HifiGan (model_type hifigan)",
            field="src",
        )
    speaker_file = source / SPEECHT5_SPEAKER_FILE
    if not speaker_file.exists():
        return None
    size = int(hf_config.get("speaker_embedding_dim") or 512)
    try:
        speaker = np.asarray(np.load(speaker_file), dtype=np.float32).reshape(-1)
    except (ValueError, OSError) as exc:
        raise InvalidArgument(f"{speaker_file} is not a numpy array: {exc}", field="src") from exc
    if speaker.size != size or not np.isfinite(speaker).all():
        raise InvalidArgument(
            f"{speaker_file} must hold {size} finite numbers (an x-vector), has {speaker.size}",
            field="src",
        )
    return speaker


def export_speecht5(source: Path, out_dir: Path) -> None:
    """Export a SpeechT5ForTextToSpeech folder and its ``vocoder/`` with optimum
    (``text-to-audio``, ``model_kwargs={"vocoder": ...}``) into ``out_dir``: the encoder, the
    decoder without and with past merged into ``decoder_model_merged.onnx`` (optimum 2.1 leaves
    them apart for this task) and the postnet + vocoder; the vocoder's config and the default
    speaker x-vector beside them."""
    speaker = check_speecht5_source(source)
    from optimum.exporters.onnx import main_export

    with quiet_export():
        main_export(
            str(source),
            out_dir,
            task=EXPORT_TASK_OF_FAMILY[ModelFamily.SPEECHT5_TTS],
            do_validation=False,
            library_name="transformers",
            model_kwargs={"vocoder": str(source / SPEECHT5_VOCODER_DIR)},
        )
        merged = out_dir / "decoder_model_merged.onnx"
        if not merged.exists():
            from optimum.onnx import merge_decoders

            merge_decoders(
                decoder=out_dir / "decoder_model.onnx",
                decoder_with_past=out_dir / "decoder_with_past_model.onnx",
                save_path=merged,
                strict=False,
            )
    for unmerged in ("decoder_model.onnx", "decoder_with_past_model.onnx"):
        (out_dir / unmerged).unlink(missing_ok=True)
        (out_dir / f"{unmerged}_data").unlink(missing_ok=True)
    missing = [g for g in SPEECHT5_GRAPHS if not (out_dir / g).exists()]
    if missing:
        raise ExportError(f"the SpeechT5 export did not write {', '.join(missing)}")
    (out_dir / SPEECHT5_VOCODER_DIR).mkdir(exist_ok=True)
    shutil.copy2(
        source / SPEECHT5_VOCODER_DIR / "config.json",
        out_dir / SPEECHT5_VOCODER_DIR / "config.json",
    )
    if speaker is None:
        hf_config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        speaker = np.zeros(int(hf_config.get("speaker_embedding_dim") or 512), np.float32)
    np.save(out_dir / SPEECHT5_SPEAKER_FILE, speaker)


SPEECHT5_DROPOUT = "speech_decoder_prenet_dropout"
SPEECHT5_CHECK_MAXLENRATIO = 2.0  # bounds the check's decoding (random models never stop)


def validate_speecht5(source: Path, onnx_dir: Path, log: Log = print) -> tuple[float, float]:
    """Max absolute difference between our loop on the exported graphs and
    ``SpeechT5ForTextToSpeech.generate_speech`` (with the vocoder), on the sample texts with the
    default speaker and a random x-vector, threshold 0.5 and maxlenratio 2.

    The decoder prenet's dropout runs at inference on both sides with their own random draws,
    so both are compared with it off: a copy of the folder with ``speech_decoder_prenet_dropout``
    0 is exported for the check when the config's is not 0 (optimum's graph keeps a unit when a
    uniform draw exceeds p: all of them at 0), and PyTorch's prenet gets the identity for its
    ``_consistent_dropout`` (its Bernoulli mask keeps a unit with probability p, so at p = 0 it
    would zero the prenet).
    """
    import torch

    from taskorch.inference.pipelines.speecht5 import Decoding, SpeechT5Voice, generate_speech
    from taskorch.inference.sessions import ModelSession

    with quiet_export():
        from transformers import AutoTokenizer, SpeechT5ForTextToSpeech, SpeechT5HifiGan

    hf_config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    check_dir = onnx_dir
    scratch = onnx_dir / "_speecht5_check"
    try:
        if float(hf_config.get(SPEECHT5_DROPOUT, 0.0) or 0.0) != 0.0:
            log("validation: exporting a copy with the prenet dropout at 0 to compare it")
            silent = scratch / "source"
            silent.mkdir(parents=True)
            for item in source.iterdir():
                if item.name != "config.json" and not item.name.startswith("_"):
                    (silent / item.name).symlink_to(item.resolve())
            zeroed = {**hf_config, SPEECHT5_DROPOUT: 0.0}
            (silent / "config.json").write_text(json.dumps(zeroed), encoding="utf-8")
            export_speecht5(silent, scratch / "onnx")
            check_dir = scratch / "onnx"
        with quiet_export():
            tokenizer = _any(AutoTokenizer).from_pretrained(source)
            model = SpeechT5ForTextToSpeech.from_pretrained(source, dtype=torch.float32).eval()
            vocoder = SpeechT5HifiGan.from_pretrained(
                source / SPEECHT5_VOCODER_DIR, dtype=torch.float32
            ).eval()
        prenet = model.speecht5.decoder.prenet
        prenet._consistent_dropout = lambda inputs_embeds, p: inputs_embeds

        def session(file: str) -> ModelSession:
            return ModelSession(
                check_dir / file, providers=["CPUExecutionProvider"], prefer_gpu=False
            )

        encoder, decoder, postnet = (session(file) for file in SPEECHT5_GRAPHS)
        voice = SpeechT5Voice.read(
            onnx_dir,
            hf_config,
            {"speaker_embedding": SPEECHT5_SPEAKER_FILE, "vocoder_config": "vocoder/config.json"},
        )
        rng = np.random.default_rng(0)
        speakers = (voice.default_speaker, rng.standard_normal(voice.speaker_size, np.float32))
        worst, scale = 0.0, 0.0
        for text, speaker in zip(SAMPLE_TEXTS, (*speakers, speakers[0]), strict=True):
            ids = [int(i) for i in tokenizer(text)["input_ids"]]
            with torch.no_grad():
                expected = model.generate_speech(
                    torch.tensor([ids]),
                    torch.from_numpy(speaker)[None],
                    threshold=0.5,
                    maxlenratio=SPEECHT5_CHECK_MAXLENRATIO,
                    vocoder=vocoder,
                ).numpy()
            got = generate_speech(
                encoder,
                decoder,
                postnet,
                ids,
                speaker,
                reduction_factor=voice.reduction_factor,
                decoding=Decoding(threshold=0.5, maxlenratio=SPEECHT5_CHECK_MAXLENRATIO),
            ).waveform
            if got.shape != expected.shape:
                raise ExportError(
                    f"the ONNX waveform has shape {got.shape}, PyTorch's {expected.shape}"
                )
            worst = max(worst, float(np.abs(got.astype(np.float64) - expected).max()))
            scale = max(scale, float(np.abs(expected).max()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # The loop feeds its own frames back: float32 differences compound over the steps.
    return worst, 1e-3 * scale + 1e-4


def read_report(model_dir: Path) -> Mapping[str, Any]:
    """The validation figures recorded in a model folder's ``model.yaml``."""
    figures = load_model_config(model_dir).extra.get("validation", {})
    return figures if isinstance(figures, Mapping) else {}
