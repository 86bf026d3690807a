"""image_generation: a prompt in, a PNG artifact out, from a Stable Diffusion export.

Runs the three graphs optimum exports (CLIP text encoder, UNet, VAE decoder) the way diffusers'
``StableDiffusionPipeline`` does, on our own sessions and in numpy (no torch, no diffusers):
prompt and negative prompt tokenized to the tokenizer's full length and encoded;
classifier-free guidance (``uncond + guidance_scale * (cond - uncond)``, the UNet run on both
at once) when ``guidance_scale`` > 1; the scheduler the export declares
(``taskorch.inference.schedulers``) over ``num_inference_steps``; the latents divided by the
VAE's ``scaling_factor`` and decoded; ``(x / 2 + 0.5)`` clipped to [0, 1], times 255, rounded.

Input ``{"prompt": "..."}`` (or ``inputs``), optional ``negative_prompt`` (in ``input_data``
or ``parameters``). Parameters: ``num_inference_steps`` (alias ``steps``; 25, 1 to 150),
``guidance_scale`` (7.5, 0 to 30), ``seed`` (random when left out; the result says which),
``width`` and ``height`` (the UNet's trained size by default; multiples of 8, 64 to 1024).
The initial latents are ``numpy.random.default_rng(seed).standard_normal`` in float32, so a
seed draws the same image on every server. One progress event per denoising step.

Result: ``{"artifacts": [{"name": "image.png", "content_type": "image/png", "size"}],
"width", "height", "seed", "num_inference_steps", "guidance_scale", "scheduler"}``; the PNG
(8-bit RGB) is at ``GET /v1/tasks/{task_id}/artifacts/image.png``.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.artifacts import Artifact
from taskorch.domain.errors import InternalError, InvalidArgument
from taskorch.inference.pipelines.base import (
    OnText,
    param_float,
    param_int,
    report_step,
    string_field,
)
from taskorch.inference.runtime import LoadedModel
from taskorch.inference.schedulers import scheduler_for

ARTIFACT_NAME = "image.png"
MAX_PROMPT_CHARS = 2000
MIN_SIDE, MAX_SIDE = 64, 1024
MAX_STEPS = 150
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
MAX_SEED = 2**32 - 1

Array = npt.NDArray[np.float32]


def prompt_tokenizer(folder: Path, text_encoder: Mapping[str, Any]) -> Any:
    """The prompt tokenizer, as diffusers calls CLIP's: every prompt padded (with the pad
    token) and truncated to the tokenizer's length, start and end tokens included.

    ``tokenizers`` alone (the import wrote ``tokenizer.json``): transformers would import torch.
    """
    from tokenizers import Tokenizer

    settings: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").exists():
        settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    length = min(
        int(settings.get("model_max_length") or 77),
        int(text_encoder.get("max_position_embeddings") or 77),
    )
    pad = settings.get("pad_token") or "<|endoftext|>"
    pad = str(pad["content"] if isinstance(pad, Mapping) else pad)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pad_id = tokenizer.token_to_id(pad)
    if pad_id is None:
        raise InternalError(f"the tokenizer in {folder} has no pad token {pad!r}")
    tokenizer.enable_truncation(max_length=length)
    tokenizer.enable_padding(length=length, pad_id=pad_id, pad_token=pad)
    return tokenizer


@dataclass(frozen=True)
class Diffusion:
    """What the pipeline reads from an export's folder once: tokenizer and configs."""

    tokenizer: Any
    scheduler_config: Mapping[str, Any]
    latent_channels: int
    vae_scale: int  # pixels per latent cell (2 ** (VAE blocks - 1))
    scaling_factor: float
    sample_size: int  # the UNet's trained latent size
    timestep_dtype: Any

    @property
    def default_side(self) -> int:
        return self.sample_size * self.vae_scale


def diffusion_of(model: LoadedModel) -> Diffusion:
    """The export's tokenizer and configs (read once, kept on the model)."""
    cached = model.media.get("diffusion")
    if cached is None:

        def config(role: str) -> dict[str, Any]:
            file = model.config.file(role)
            if file is None:
                raise InternalError(f"model {model.name!r} has no files.{role}")
            data = json.loads((model.path / file).read_text(encoding="utf-8"))
            assert isinstance(data, dict)
            return data

        unet, vae = config("unet_config"), config("vae_config")
        timestep = next(i for i in model.session.session.get_inputs() if i.name == "timestep")
        cached = Diffusion(
            tokenizer=prompt_tokenizer(model.path / "tokenizer", config("text_encoder_config")),
            scheduler_config=config("scheduler"),
            latent_channels=int(unet.get("in_channels", 4)),
            vae_scale=2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1),
            scaling_factor=float(vae.get("scaling_factor", 0.18215)),
            sample_size=int(unet.get("sample_size", 64)),
            timestep_dtype=np.int64 if "int64" in timestep.type else np.float32,
        )
        model.media["diffusion"] = cached
    assert isinstance(cached, Diffusion)
    return cached


@dataclass(frozen=True)
class Request:
    """One image's settings, checked."""

    prompt: str
    negative_prompt: str
    steps: int
    guidance_scale: float
    seed: int
    width: int
    height: int


def _prompt(input_data: Mapping[str, Any], parameters: Mapping[str, Any]) -> tuple[str, str]:
    key = "prompt" if "prompt" in input_data or "inputs" not in input_data else "inputs"
    prompt = string_field(input_data, key)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidArgument(
            f"{key} is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}",
            field=f"input_data.{key}",
        )
    negative: Any = ""
    for where, source in (("input_data", input_data), ("parameters", parameters)):
        if source.get("negative_prompt") is not None:
            negative = source["negative_prompt"]
            if not isinstance(negative, str) or len(negative) > MAX_PROMPT_CHARS:
                raise InvalidArgument(
                    f"negative_prompt must be a string of at most {MAX_PROMPT_CHARS} characters",
                    field=f"{where}.negative_prompt",
                )
    return prompt, negative


def _side(parameters: Mapping[str, Any], key: str, default: int) -> int:
    value = param_int(parameters, key, default, low=MIN_SIDE, high=MAX_SIDE)
    if value % 8:
        raise InvalidArgument(
            f"{key} must be a multiple of 8 (between {MIN_SIDE} and {MAX_SIDE}), got {value}",
            field=f"parameters.{key}",
        )
    return value


def request_of(
    diffusion: Diffusion, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
) -> Request:
    """The checked settings of a request (``InvalidArgument`` names the field)."""
    prompt, negative = _prompt(input_data, parameters)
    steps_key = "num_inference_steps" if "num_inference_steps" in parameters else "steps"
    steps = param_int(parameters, steps_key, DEFAULT_STEPS, low=1, high=MAX_STEPS)
    guidance = param_float(parameters, "guidance_scale", DEFAULT_GUIDANCE, low=0.0, high=30.0)
    if parameters.get("seed") is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    else:
        seed = param_int(parameters, "seed", 0, low=0, high=MAX_SEED)
    side = min(max(diffusion.default_side, MIN_SIDE), MAX_SIDE)
    return Request(
        prompt=prompt,
        negative_prompt=negative,
        steps=steps,
        guidance_scale=guidance,
        seed=seed,
        width=_side(parameters, "width", side),
        height=_side(parameters, "height", side),
    )


def initial_latents(seed: int, shape: tuple[int, ...]) -> Array:
    """The starting noise of a seed (a test hands the same latents to diffusers)."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def encode_prompts(model: LoadedModel, diffusion: Diffusion, texts: list[str]) -> Array:
    """The text encoder's last hidden state of each text, padded to the tokenizer's length."""
    ids = np.array([e.ids for e in diffusion.tokenizer.encode_batch(texts)], dtype=np.int64)
    out = model.extra_sessions["text_encoder"].run({"input_ids": ids}, ["last_hidden_state"])
    return np.asarray(out["last_hidden_state"], dtype=np.float32)


def to_png(decoded: Array) -> bytes:
    """An 8-bit RGB PNG of the VAE's (3, H, W) output in [-1, 1]."""
    from PIL import Image

    pixels = np.clip(decoded / 2 + 0.5, 0.0, 1.0).transpose(1, 2, 0)
    out = io.BytesIO()
    Image.fromarray((pixels * 255).round().astype(np.uint8), mode="RGB").save(out, "PNG")
    return out.getvalue()


class ImageGeneration:
    """Draw an image from a text prompt with Stable Diffusion."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        request_of(diffusion_of(model), input_data, parameters)

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        diffusion = diffusion_of(model)
        request = request_of(diffusion, input_data, parameters)
        guided = request.guidance_scale > 1.0
        texts = [request.negative_prompt, request.prompt] if guided else [request.prompt]
        embeddings = await asyncio.to_thread(encode_prompts, model, diffusion, texts)
        scheduler = scheduler_for(diffusion.scheduler_config)
        timesteps = scheduler.set_timesteps(request.steps)
        shape = (
            1,
            diffusion.latent_channels,
            request.height // diffusion.vae_scale,
            request.width // diffusion.vae_scale,
        )
        latents = initial_latents(request.seed, shape) * np.float32(scheduler.init_noise_sigma)

        def denoise(latents: Array, timestep: int) -> Array:
            sample = scheduler.scale_model_input(np.concatenate([latents] * len(texts)), timestep)
            noise = model.session.run(
                {
                    "sample": sample,
                    "timestep": np.array(timestep, dtype=diffusion.timestep_dtype),
                    "encoder_hidden_states": embeddings,
                },
                ["out_sample"],
            )["out_sample"]
            if guided:
                uncond, cond = noise[:1], noise[1:]
                noise = uncond + np.float32(request.guidance_scale) * (cond - uncond)
            return scheduler.step(noise, timestep, latents)

        for done, timestep in enumerate(timesteps, start=1):
            if cancel is not None and cancel.is_set():
                raise asyncio.CancelledError("cancelled by request")
            latents = await asyncio.to_thread(denoise, latents, timestep)
            await report_step(done, len(timesteps))

        def decode() -> bytes:
            scaled = (latents / np.float32(diffusion.scaling_factor)).astype(np.float32)
            out = model.extra_sessions["vae_decoder"].run({"latent_sample": scaled}, ["sample"])
            return to_png(np.asarray(out["sample"][0], dtype=np.float32))

        artifact = Artifact(ARTIFACT_NAME, "image/png", await asyncio.to_thread(decode))
        return {
            "artifacts": [artifact.to_transport()],
            "width": request.width,
            "height": request.height,
            "seed": request.seed,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance_scale,
            "scheduler": str(diffusion.scheduler_config.get("_class_name")),
        }
