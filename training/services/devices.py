"""Which device a training or generation job runs on.

A GPU worker is started with `manage.py worker --queues gpu --device cuda:0`, which sets
PLATFORM_DEVICE for the jobs it runs. When the named GPU is absent (or none was named and none
exists) the job still runs, on the CPU, and says so in its log: a slow run is better than a failed
one for tiny models and the demo, and the warning tells an operator why a real run crawls.
"""

from __future__ import annotations

import os
from collections.abc import Callable

DEVICE_ENV = "PLATFORM_DEVICE"


def resolve_device(log: Callable[[str], None] | None = None) -> str:
    """'cuda:N' / 'cuda' / 'mps' when present, else 'cpu' with a warning through `log`."""
    import torch

    wanted = os.environ.get(DEVICE_ENV, "").strip()
    say = log or (lambda _line: None)
    if wanted == "cpu":
        return "cpu"
    if wanted.startswith("cuda") or not wanted:
        if torch.cuda.is_available():
            index = wanted.partition(":")[2]
            if index and int(index) >= torch.cuda.device_count():
                say(
                    f"WARNING: {DEVICE_ENV}={wanted} but this host has "
                    f"{torch.cuda.device_count()} GPU(s); using cuda:0"
                )
                return "cuda:0"
            return wanted or "cuda"
        say(
            f"WARNING: no CUDA GPU available ({DEVICE_ENV}={wanted or 'unset'}); falling back to "
            "the CPU, which is only practical for tiny models"
        )
        return "cpu"
    if wanted == "mps":
        if torch.backends.mps.is_available():
            return "mps"
        say(f"WARNING: {DEVICE_ENV}=mps but MPS is unavailable; falling back to the CPU")
        return "cpu"
    say(f"WARNING: {DEVICE_ENV}={wanted!r} is not cpu, cuda[:N] or mps; using the CPU")
    return "cpu"
