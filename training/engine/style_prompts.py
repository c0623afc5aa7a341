"""The style descriptor of a style run ("in flat sticker style"), appended to prompts.

StyleDrop names the style in words so content and style stay separable in the prompt; the
descriptor must then be on every prompt the run trains on and every prompt it samples with,
whatever the recipe. `run_style_descriptor(config)` says which descriptor a run has (the
`styledrop_iterative` setting, else `adapter_params.style_descriptor`), `with_style_descriptor`
appends it once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.engine.config import TrainConfig


def with_style_descriptor(prompt: str, descriptor: str) -> str:
    """Append the style descriptor once ("a cat" -> "a cat, in flat sticker style").

    Idempotent, so prompts coming back from a previous iteration (or captions that already end
    with the descriptor) are not suffixed twice.
    """
    prompt, descriptor = prompt.strip(), descriptor.strip()
    if not descriptor or prompt.lower().endswith(descriptor.lower()):
        return prompt
    return f"{prompt}, {descriptor}" if prompt else descriptor


def run_style_descriptor(config: TrainConfig) -> str:
    """The descriptor `config`'s run appends: `styledrop.style_descriptor` when the iterative
    recipe sets one, else the adapter's `style_descriptor` param, else none ("")."""
    if config.recipe == "styledrop_iterative":
        explicit = (config.styledrop or {}).get("style_descriptor")
        if explicit is not None:
            return str(explicit).strip()
    return str(config.adapter_params.get("style_descriptor") or "").strip()
