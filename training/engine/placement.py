"""Where a run computes: the device, the precision and the accelerate `Accelerator` for them.

One process may run many jobs (a GPU worker), and one worker per GPU names its own device
(`cuda:1`). accelerate keeps its device in a process-wide singleton (`PartialState`) that it
fills once from `ACCELERATE_TORCH_DEVICE` or, failing that, with the index-less "cuda" (the
current device); so a single-process run resets that singleton and hands accelerate its device
through that variable, and also makes it torch's current device for code that allocates on
"cuda" (autocast, generators). Under `accelerate launch` each rank's device is accelerate's
business; a device argument that disagrees with it is refused rather than ignored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from training.engine.errors import ConfigError

logger = logging.getLogger(__name__)

DEVICE_VARIABLE = "ACCELERATE_TORCH_DEVICE"


def requested_device(device: str | torch.device | None) -> torch.device:
    """The device a run asked for: the given one (a bare "cuda" made the current CUDA device),
    else the current CUDA device when there is one, else the CPU."""
    try:
        wanted = torch.device(device) if device else None
    except (RuntimeError, TypeError) as error:
        raise ConfigError("device", f"{device!r} is not a torch device ({error})") from error
    if wanted is None:
        wanted = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device", f"{wanted} requested, but CUDA is not available here")
        index = torch.cuda.current_device() if wanted.index is None else wanted.index
        if index >= torch.cuda.device_count():
            raise ConfigError(
                "device", f"{wanted}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        wanted = torch.device("cuda", index)
    return wanted


def resolve_mixed_precision(requested: str, device: torch.device) -> str:
    """fp16/bf16 only on CUDA (CPU autocast is slower than fp32 here); bf16 falls back to fp16 on
    GPUs without it."""
    if requested == "no":
        return "no"
    if device.type != "cuda":
        logger.warning(
            "mixed_precision=%s ignored: %s has no fast half precision", requested, device
        )
        return "no"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        logger.warning("bf16 unsupported on this GPU; using fp16")
        return "fp16"
    return requested


@contextmanager
def _device_variable(device: torch.device) -> Iterator[None]:
    previous = os.environ.get(DEVICE_VARIABLE)
    os.environ[DEVICE_VARIABLE] = str(device)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DEVICE_VARIABLE, None)
        else:
            os.environ[DEVICE_VARIABLE] = previous


def build_accelerator(
    device: str | torch.device | None,
    *,
    mixed_precision: str,
    gradient_accumulation_steps: int,
) -> tuple[Any, str]:
    """(Accelerator placed on the run's device, the mixed precision actually used).

    `accelerator.device` is then the exact device (`cuda:1`, not "cuda"), which the loop uses
    for every tensor and module it places.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState

    launched = PartialState().num_processes > 1
    if launched:
        own = PartialState().device
        if device and requested_device(device) != own:
            raise ConfigError(
                "device",
                f"{device} requested, but accelerate launched this process (rank "
                f"{PartialState().process_index}) on {own}; leave the device to the launcher",
            )
        precision = resolve_mixed_precision(mixed_precision, own)
        accelerator = Accelerator(
            mixed_precision=precision, gradient_accumulation_steps=gradient_accumulation_steps
        )
        return accelerator, precision
    wanted = requested_device(device)
    precision = resolve_mixed_precision(mixed_precision, wanted)
    # The singletons hold the previous job's device and precision; both are this run's business.
    AcceleratorState._reset_state(reset_partial_state=True)
    if wanted.type == "cuda":
        torch.cuda.set_device(wanted)
    with _device_variable(wanted):
        accelerator = Accelerator(
            mixed_precision=precision,
            gradient_accumulation_steps=gradient_accumulation_steps,
            cpu=wanted.type == "cpu",
        )
    if accelerator.device != wanted:  # an accelerate that stopped reading the variable
        raise RuntimeError(f"accelerate placed the run on {accelerator.device}, not on {wanted}")
    return accelerator, precision
