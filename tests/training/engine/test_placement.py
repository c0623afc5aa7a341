"""A run's device reaches accelerate: one worker per GPU names its own (`cuda:1`).

No GPU here, so CUDA is simulated (two devices); what is asserted is accelerate's placement
config, which `prepare` and the loop use for every module and tensor.
"""

from __future__ import annotations

import pytest
import torch

from training.engine.errors import ConfigError
from training.engine.placement import build_accelerator, requested_device


@pytest.fixture
def two_gpus(monkeypatch):
    chosen: list[torch.device] = []
    current = [0]

    def set_device(device):
        device = torch.device(device)
        chosen.append(device)
        current[0] = device.index

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    yield chosen
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def test_named_gpu_is_the_accelerator_device(two_gpus) -> None:
    accelerator, precision = build_accelerator(
        "cuda:1", mixed_precision="no", gradient_accumulation_steps=1
    )
    # Accelerator() alone would say "cuda" (whatever device is current); the run said cuda:1.
    assert accelerator.device == torch.device("cuda", 1)
    assert two_gpus == [torch.device("cuda", 1)]  # also torch's current device, for autocast
    assert precision == "no"

    # The next job of the same worker process is placed afresh, not on the previous one's GPU.
    again, _ = build_accelerator("cuda:0", mixed_precision="no", gradient_accumulation_steps=1)
    assert again.device == torch.device("cuda", 0)
    on_cpu, _ = build_accelerator("cpu", mixed_precision="fp16", gradient_accumulation_steps=1)
    assert on_cpu.device == torch.device("cpu")


def test_bare_cuda_means_the_current_device(two_gpus) -> None:
    torch.cuda.set_device(torch.device("cuda", 1))
    assert requested_device("cuda") == torch.device("cuda", 1)
    assert requested_device(None) == torch.device("cuda", 1)


def test_impossible_devices_are_refused_naming_the_field(two_gpus) -> None:
    with pytest.raises(ConfigError, match="2 CUDA device") as error:
        requested_device("cuda:3")
    assert error.value.field == "device"
    with pytest.raises(ConfigError, match="not a torch device"):
        requested_device("gpu-one")


def test_cuda_without_a_gpu_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available") as error:
        requested_device("cuda:1")
    assert error.value.field == "device"
