"""The numpy schedulers of image_generation step for step against diffusers' own (PyTorch), on
random model outputs: DDIM in each timestep spacing and prediction type, PNDM's PLMS."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.schedulers import scheduler_for

SD_SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "set_alpha_to_one": False,
}


def _diffusers_run(name: str, config: dict[str, Any], steps: int) -> tuple[list[int], np.ndarray]:
    import diffusers
    import torch

    scheduler = getattr(diffusers, name).from_config(config)
    scheduler.set_timesteps(steps)
    rng = np.random.default_rng(1)
    sample = torch.from_numpy(rng.standard_normal((1, 4, 8, 8), dtype=np.float32))
    timesteps = [int(t) for t in scheduler.timesteps]
    for t in timesteps:
        output = torch.from_numpy(rng.standard_normal((1, 4, 8, 8), dtype=np.float32))
        sample = scheduler.step(output, t, sample).prev_sample
    return timesteps, sample.numpy()


def _our_run(name: str, config: dict[str, Any], steps: int) -> tuple[list[int], np.ndarray]:
    scheduler = scheduler_for({"_class_name": name, **config})
    timesteps = scheduler.set_timesteps(steps)
    rng = np.random.default_rng(1)
    sample = rng.standard_normal((1, 4, 8, 8), dtype=np.float32)
    for t in timesteps:
        output = rng.standard_normal((1, 4, 8, 8), dtype=np.float32)
        sample = scheduler.step(output, t, scheduler.scale_model_input(sample, t))
    return timesteps, sample


@pytest.mark.parametrize(
    ("name", "config", "steps"),
    [
        ("DDIMScheduler", {**SD_SCHEDULE, "clip_sample": False}, 10),
        ("DDIMScheduler", {**SD_SCHEDULE, "timestep_spacing": "trailing"}, 7),
        ("DDIMScheduler", {"timestep_spacing": "linspace", "beta_schedule": "linear"}, 5),
        ("DDIMScheduler", {**SD_SCHEDULE, "prediction_type": "v_prediction"}, 6),
        ("DDIMScheduler", {**SD_SCHEDULE, "prediction_type": "sample"}, 3),
        ("PNDMScheduler", {**SD_SCHEDULE, "skip_prk_steps": True}, 10),
        ("PNDMScheduler", {**SD_SCHEDULE, "skip_prk_steps": True}, 1),
        (
            "PNDMScheduler",
            {**SD_SCHEDULE, "skip_prk_steps": True, "prediction_type": "v_prediction"},
            4,
        ),
    ],
)
def test_a_run_matches_diffusers_step_for_step(
    name: str, config: dict[str, Any], steps: int
) -> None:
    expected_timesteps, expected = _diffusers_run(name, config, steps)
    timesteps, got = _our_run(name, config, steps)
    assert timesteps == expected_timesteps
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, float(np.abs(expected).max()))


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"_class_name": "EulerDiscreteScheduler"}, "EulerDiscreteScheduler"),
        ({"_class_name": "PNDMScheduler", "skip_prk_steps": False}, "skip_prk_steps"),
        ({"_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2"}, "beta_schedule"),
        ({"_class_name": "DDIMScheduler", "thresholding": True}, "thresholding"),
    ],
)
def test_what_is_not_implemented_is_refused_naming_it(config: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        scheduler_for(config)
    assert named in caught.value.message
