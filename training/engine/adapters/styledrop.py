"""StyleDrop's adapter (Sohn et al., 2023): a small LoRA on every attention projection.

StyleDrop tunes well under 1% of the weights so that one or a few references are enough, and
names the style in words ("in flat sticker style", `style_descriptor`) so that content and style
stay separable in the prompt (`training.engine.style_prompts`). The paper's adapter sat in
Muse's transformer layers; on a UNet the attention projections are the equivalent spot. Its
iterative training with feedback is the `styledrop_iterative` recipe
(`training.engine.styledrop_iterative`, selection in `styledrop_feedback`).
"""

from __future__ import annotations

from typing import Any

from training.engine.adapters.peft_lora import lora_adapter
from training.engine.adapters.registry import register_adapter

NAME = "styledrop"
ATTENTION_PROJECTIONS = r".*attn[12]\.(to_q|to_k|to_v|to_out\.0)"

DEFAULTS: dict[str, Any] = {
    "rank": 4,
    "alpha": None,  # None: alpha = rank, so the adapter's scale is 1 whatever the rank
    "dropout": 0.0,
    "target_modules": ATTENTION_PROJECTIONS,
    "style_descriptor": "",
}

ADAPTER = register_adapter(
    lora_adapter(
        NAME,
        peft_name=NAME,
        defaults=DEFAULTS,
        description="StyleDrop: low-rank adapter on the attention projections (<1%), style "
        "descriptor, iterative feedback",
    )
)
apply, save, load = ADAPTER.apply, ADAPTER.save, ADAPTER.load
