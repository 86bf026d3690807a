"""Diffusion noise schedulers in numpy, for image_generation's denoising loop (no torch).

Each follows the diffusers class its export declares in ``scheduler/scheduler_config.json``
(``_class_name``) step for step, with that config's keys:

===============  ==================================================================
DDIMScheduler    deterministic DDIM (eta 0): ``prediction_type`` epsilon, v_prediction
                 or sample; ``clip_sample``; ``set_alpha_to_one``
PNDMScheduler    PLMS (``skip_prk_steps: true``, as Stable Diffusion 1.x ships it):
                 linear multistep on the last four noise predictions
===============  ==================================================================

Both take ``beta_schedule`` linear or scaled_linear, ``steps_offset`` and ``timestep_spacing``
leading, trailing or linspace. ``scheduler_for`` refuses any other class or setting, naming it,
so an unsupported export is refused at import rather than drawing a wrong picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InvalidArgument

Array = npt.NDArray[np.float32]
SUPPORTED = ("DDIMScheduler", "PNDMScheduler")


def _alphas_cumprod(config: Mapping[str, Any]) -> npt.NDArray[np.float64]:
    steps = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], dtype=np.float32)
    elif schedule == "linear":
        betas = np.linspace(start, end, steps, dtype=np.float32)
    elif schedule == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, steps, dtype=np.float32) ** 2
    else:
        raise ValueError(f"beta_schedule {schedule!r}")
    # float32 like diffusers' torch tensors, so the schedules agree to the last bit
    return np.cumprod(1.0 - betas, dtype=np.float32).astype(np.float64)


def _check(config: Mapping[str, Any]) -> None:
    name = config.get("_class_name")
    unsupported = {
        "beta_schedule": config.get("beta_schedule", "linear") not in ("linear", "scaled_linear"),
        "timestep_spacing": config.get("timestep_spacing", "leading")
        not in ("leading", "trailing", "linspace"),
        "thresholding": bool(config.get("thresholding", False)),
        "rescale_betas_zero_snr": bool(config.get("rescale_betas_zero_snr", False)),
        "prediction_type": config.get("prediction_type", "epsilon")
        not in ("epsilon", "v_prediction", "sample"),
        "skip_prk_steps": name == "PNDMScheduler" and not config.get("skip_prk_steps", False),
        # PNDM takes epsilon or v_prediction outputs only
        "prediction_type ": name == "PNDMScheduler"
        and config.get("prediction_type", "epsilon") == "sample",
    }
    bad = [key.strip() for key, is_bad in unsupported.items() if is_bad]
    if bad:
        raise InvalidArgument(
            f"the export's {name} sets {', '.join(f'{k}={config.get(k)!r}' for k in bad)}, "
            "which taskorch's schedulers do not implement",
            field="src",
        )


class DDIM:
    """diffusers' ``DDIMScheduler`` with eta 0 (the deterministic sampler)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self.train_steps = int(config.get("num_train_timesteps", 1000))
        self.alphas_cumprod = _alphas_cumprod(config)
        self.final_alpha = (
            1.0 if config.get("set_alpha_to_one", True) else float(self.alphas_cumprod[0])
        )
        self.init_noise_sigma = 1.0
        self.timesteps: list[int] = []
        self._ratio = 1

    def set_timesteps(self, steps: int) -> list[int]:
        """The timesteps of a run of ``steps`` denoising steps (one UNet call each)."""
        self.timesteps = _spaced(self.config, self.train_steps, steps)
        self._ratio = self.train_steps // steps
        return self.timesteps

    def scale_model_input(self, sample: Array, timestep: int) -> Array:
        return sample

    def step(self, noise: Array, timestep: int, sample: Array) -> Array:
        prev = timestep - self._ratio
        alpha = float(self.alphas_cumprod[timestep])
        alpha_prev = float(self.alphas_cumprod[prev]) if prev >= 0 else self.final_alpha
        x0, eps = _predictions(self.config, noise, sample, alpha)
        if self.config.get("clip_sample", True):
            limit = float(self.config.get("clip_sample_range", 1.0))
            x0 = np.clip(x0, -limit, limit)
        out = alpha_prev**0.5 * x0 + (1.0 - alpha_prev) ** 0.5 * eps
        return np.asarray(out, dtype=np.float32)


class PNDM:
    """diffusers' ``PNDMScheduler`` with ``skip_prk_steps`` (PLMS): one more timestep than
    steps asked for (the first is taken twice), each a UNet call."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self.train_steps = int(config.get("num_train_timesteps", 1000))
        self.alphas_cumprod = _alphas_cumprod(config)
        self.final_alpha = (
            1.0 if config.get("set_alpha_to_one", False) else float(self.alphas_cumprod[0])
        )
        self.init_noise_sigma = 1.0
        self.timesteps: list[int] = []
        self._ratio = 1
        self._ets: list[Array] = []
        self._counter = 0
        self._first: Array | None = None

    def set_timesteps(self, steps: int) -> list[int]:
        ascending = _spaced(self.config, self.train_steps, steps)[::-1]
        self._ratio = self.train_steps // steps
        self.timesteps = [*ascending[:-1], *ascending[-2:-1], *ascending[-1:]][::-1]
        self._ets, self._counter, self._first = [], 0, None
        return self.timesteps

    def scale_model_input(self, sample: Array, timestep: int) -> Array:
        return sample

    def step(self, noise: Array, timestep: int, sample: Array) -> Array:
        prev = timestep - self._ratio
        if self._counter != 1:
            self._ets = [*self._ets[-3:], noise]
        else:
            prev, timestep = timestep, timestep + self._ratio
        ets = self._ets
        eps: npt.NDArray[Any] = noise
        if len(ets) == 1 and self._counter == 0:
            self._first = sample
        elif len(ets) == 1 and self._counter == 1:
            assert self._first is not None
            eps = (eps + ets[-1]) / 2
            sample, self._first = self._first, None
        elif len(ets) == 2:
            eps = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            eps = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            eps = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
        self._counter += 1
        alpha = float(self.alphas_cumprod[timestep])
        alpha_prev = float(self.alphas_cumprod[prev]) if prev >= 0 else self.final_alpha
        beta, beta_prev = 1.0 - alpha, 1.0 - alpha_prev
        if self.config.get("prediction_type", "epsilon") == "v_prediction":
            eps = alpha**0.5 * eps + beta**0.5 * sample
        denominator = alpha * beta_prev**0.5 + (alpha * beta * alpha_prev) ** 0.5
        out = (alpha_prev / alpha) ** 0.5 * sample - (alpha_prev - alpha) * eps / denominator
        return np.asarray(out, dtype=np.float32)


def _spaced(config: Mapping[str, Any], train_steps: int, steps: int) -> list[int]:
    """diffusers' ``timestep_spacing``: the timesteps of ``steps`` steps, descending."""
    spacing = config.get("timestep_spacing", "leading")
    offset = int(config.get("steps_offset", 0))
    values: npt.NDArray[Any]
    if spacing == "linspace":
        values = np.linspace(0, train_steps - 1, steps).round()[::-1]
    elif spacing == "trailing":
        values = np.round(np.arange(train_steps, 0, -train_steps / steps)) - 1
    else:
        values = (np.arange(0, steps) * (train_steps // steps)).round()[::-1] + offset
    return [int(v) for v in values]


def _predictions(
    config: Mapping[str, Any], output: Array, sample: Array, alpha: float
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """The denoised sample and the noise, from the UNet's output of the config's kind."""
    beta = 1.0 - alpha
    kind = config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        return (sample - beta**0.5 * output) / alpha**0.5, output
    if kind == "sample":
        return output, (sample - alpha**0.5 * output) / beta**0.5
    return alpha**0.5 * sample - beta**0.5 * output, alpha**0.5 * output + beta**0.5 * sample


Scheduler = DDIM | PNDM


def scheduler_for(config: Mapping[str, Any]) -> Scheduler:
    """A fresh scheduler (each run needs its own: PLMS keeps state) for an export's config.

    Raises:
        InvalidArgument: a scheduler class or setting not implemented here (named; ``src``).
    """
    name = config.get("_class_name")
    if name not in SUPPORTED:
        raise InvalidArgument(
            f"the export's scheduler is {name!r}; taskorch runs {' and '.join(SUPPORTED)} "
            "(set scheduler/scheduler_config.json to one of them)",
            field="src",
        )
    _check(config)
    return DDIM(config) if name == "DDIMScheduler" else PNDM(config)
