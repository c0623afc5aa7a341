"""`lora`: peft LoRA layers on the denoiser's attention projections; the base stays frozen.

Params: `rank` (4), `alpha` (= rank), `target_modules` (the four attention projections, as in
diffusers' LoRA examples), `dropout` (0), `init` ("gaussian"). Built by the shared plumbing in
`peft_lora.py`; the peft adapter keeps peft's default name, as diffusers' own trainers do.
"""

from __future__ import annotations

from typing import Any

from training.engine.adapters.peft_lora import lora_adapter
from training.engine.adapters.registry import register_adapter

DEFAULTS: dict[str, Any] = {
    "rank": 4,
    "alpha": None,
    "target_modules": ["to_k", "to_q", "to_v", "to_out.0"],
    "dropout": 0.0,
    "init": "gaussian",
}

ADAPTER = register_adapter(
    lora_adapter(
        "lora",
        peft_name="default",
        defaults=DEFAULTS,
        description="peft LoRA on the attention projections",
    )
)
