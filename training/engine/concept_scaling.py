"""FineStyle's concept-oriented data scaling: one reference image -> several concept sub-images.

With one reference, a model cannot tell which pixels go with which words, so it copies the whole
picture (content leakage). FineStyle cuts the reference into sub-images, one per concept of its
prompt, each paired with a short sub-prompt ("a fox in flat sticker style"), located through the
base model's own cross-attention maps for that concept's words.

Two layers: `pairs_from_attention_maps` is pure (maps in, crops out) so a planted map tests the
cropping; `concept_pairs` gets the maps from the base model's denoiser by recording how image
positions attend to text tokens during a denoising pass of the noised reference latents. Prompt
encoding, noising and the forward come from the model's family (`families/`), so SD 1.x/2.x,
SDXL and the SD3 layout all work: UNets record their cross-attention (`attn2`), the SD3
transformer its joint attention's image-to-text block. Nouns come as an explicit word list: no
NLP model is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import training.engine  # noqa: F401  (torchvision shim before diffusers)
from training.engine.families import Geometry, ModelFamily, cast_conditioning

_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "with",
        "and",
        "or",
        "to",
        "for",
        "by",
        "from",
        "its",
        "it",
        "is",
        "are",
        "this",
        "that",
        "these",
        "those",
    ]
)


@dataclass
class ConceptPair:
    image: Image.Image
    prompt: str
    word: str
    box: tuple[int, int, int, int]  # left, upper, right, lower in source pixels
    mask_fraction: float  # share of the source image above threshold for this word


@dataclass
class ConceptScaling:
    pairs: list[ConceptPair]
    skipped: dict[str, str] = field(default_factory=dict)  # word -> why no pair was made
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # word -> latent-size map


def sub_prompt(word: str, descriptor: str = "", template: str | None = None) -> str:
    """ "a fox, in flat sticker style": the same descriptor suffix StyleDrop's prompts carry, so
    sub-prompts and full prompts name the style identically; `template` may use {word} and
    {descriptor} instead."""
    if template:
        return template.format(word=word, descriptor=descriptor).strip()
    descriptor = descriptor.strip()
    return f"a {word}, {descriptor}" if descriptor else f"a {word}"


def candidate_words(prompt: str, exclude: Sequence[str] = ()) -> list[str]:
    """A stand-in when no noun list is given: the prompt's content words minus `exclude`
    (typically the style descriptor's words), in order and without repeats."""
    excluded = {w.lower() for text in exclude for w in re.findall(r"[a-z]+", text.lower())}
    words: list[str] = []
    for word in re.findall(r"[a-z]+", prompt.lower()):
        if word not in _STOPWORDS and word not in excluded and word not in words and len(word) > 2:
            words.append(word)
    return words


def _normalised(map_: Any) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(map_, dtype=np.float32))
    if tensor.ndim != 2:
        raise ValueError(f"attention map: expected a 2-D map, got shape {tuple(tensor.shape)}")
    low, high = tensor.min(), tensor.max()
    if not torch.isfinite(high - low) or high - low <= 0:
        return torch.zeros_like(tensor)
    return (tensor - low) / (high - low)


def pairs_from_attention_maps(
    image: Image.Image,
    maps_by_word: Mapping[str, Any],
    threshold: float = 0.5,
    min_area: float = 0.02,
    *,
    descriptor: str = "",
    template: str | None = None,
    margin: float = 0.0,
) -> ConceptScaling:
    """Crop `image` to each word's attention region and pair the crop with its sub-prompt.

    Each map (any 2-D size) is min-max normalised, resized bilinearly to the image, and
    thresholded at `threshold`; the crop is the bounding box of the pixels above it, grown by
    `margin` (a fraction of the box size). A word whose region covers less than `min_area` of the
    image, or whose map is flat, is skipped with the reason.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold: must be in (0, 1), got {threshold}")
    if not 0 <= min_area < 1:
        raise ValueError(f"min_area: must be in [0, 1), got {min_area}")
    width, height = image.size
    result = ConceptScaling(pairs=[])
    for word, map_ in maps_by_word.items():
        normalised = _normalised(map_)
        result.maps[word] = normalised
        if normalised.max() <= 0:
            result.skipped[word] = "flat attention map"
            continue
        resized = F.interpolate(
            normalised[None, None], size=(height, width), mode="bilinear", align_corners=False
        )[0, 0]
        mask = resized >= threshold
        fraction = float(mask.float().mean())
        if fraction < min_area or not mask.any():
            result.skipped[word] = (
                f"region {fraction:.3f} of the image is below min_area {min_area}"
            )
            continue
        rows = torch.nonzero(mask.any(1)).flatten()
        cols = torch.nonzero(mask.any(0)).flatten()
        upper, lower = int(rows[0]), int(rows[-1]) + 1
        left, right = int(cols[0]), int(cols[-1]) + 1
        grow_x, grow_y = round((right - left) * margin), round((lower - upper) * margin)
        box = (
            max(0, left - grow_x),
            max(0, upper - grow_y),
            min(width, right + grow_x),
            min(height, lower + grow_y),
        )
        result.pairs.append(
            ConceptPair(
                image.crop(box), sub_prompt(word, descriptor, template), word, box, fraction
            )
        )
    return result


# ---- cross-attention maps from a real UNet ------------------------------------------------------
class _RecordingProcessor:
    """Wraps a layer's attention processor: computes and stores the probabilities with which
    image positions attend to text tokens, then lets the original processor produce the output,
    so the forward pass is unchanged."""

    def __init__(self, original: Any, name: str, store: dict[str, list[torch.Tensor]]) -> None:
        self.original, self.name, self.store = original, name, store

    def __call__(
        self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states=None, *args, **kwargs
    ):
        if encoder_hidden_states is not None:
            with torch.no_grad():
                self.store[self.name].append(
                    self._probabilities(attn, hidden_states, encoder_hidden_states)
                )
        return self.original(attn, hidden_states, encoder_hidden_states, *args, **kwargs)

    @staticmethod
    def _probabilities(
        attn: Any, hidden_states: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        if getattr(attn, "add_k_proj", None) is not None:
            return _joint_probabilities(attn, hidden_states, context)
        states = hidden_states
        if states.ndim == 4:
            batch, channels, h, w = states.shape
            states = states.view(batch, channels, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            states = attn.group_norm(states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        probs = attn.get_attention_scores(query, key, None)  # (batch*heads, pixels, tokens)
        batch = states.shape[0]
        return probs.view(batch, -1, *probs.shape[1:]).mean(1).float().cpu()  # mean over heads


def _joint_probabilities(
    attn: Any, hidden_states: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """MMDiT joint attention (SD3): image and text tokens attend over their concatenation; the
    image queries' weights on the text keys are the image-to-text map, (batch, pixels, tokens)."""
    batch = hidden_states.shape[0]
    query, key = attn.to_q(hidden_states), attn.to_k(hidden_states)
    text_key = attn.add_k_proj(context)
    head_dim = key.shape[-1] // attn.heads

    def heads(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

    query, key, text_key = heads(query), heads(key), heads(text_key)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    if attn.norm_added_k is not None:
        text_key = attn.norm_added_k(text_key)
    keys = torch.cat([key, text_key], dim=2)
    probs = torch.softmax(query @ keys.transpose(-1, -2) * head_dim**-0.5, dim=-1)
    return probs[..., key.shape[2] :].mean(1).float().cpu()  # text part, mean over heads


@contextmanager
def record_cross_attention(denoiser: Any) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Within the block, every layer where image positions attend to text (a UNet's `attn2`, an
    SD3 transformer's joint attention) appends (batch, pixels, tokens) probabilities per forward
    pass to `store[layer name]`; the denoiser's processors are restored on exit. Self-attention
    layers are called without text and record nothing."""
    original = dict(denoiser.attn_processors)
    store: dict[str, list[torch.Tensor]] = defaultdict(list)
    wrapped = {
        name: _RecordingProcessor(processor, name, store) for name, processor in original.items()
    }
    denoiser.set_attn_processor(wrapped)
    try:
        yield store
    finally:
        denoiser.set_attn_processor(dict(original))


def word_token_indices(tokenizer: Any, prompt: str, word: str) -> list[int]:
    """Positions of `word`'s BPE tokens in the padded prompt (start token included at 0)."""
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    pieces = tokenizer(word, add_special_tokens=False).input_ids
    if not pieces:
        return []
    for start in range(len(ids) - len(pieces) + 1):
        if ids[start : start + len(pieces)] == pieces:
            return list(range(start, start + len(pieces)))
    return []


def maps_for_tokens(
    store: Mapping[str, Sequence[torch.Tensor]],
    token_indices: Sequence[int],
    latent_size: tuple[int, int],
) -> torch.Tensor:
    """One (H, W) map: each layer's probabilities for the tokens, summed over the tokens, laid
    out on its own grid, resized to the latent size, then averaged over layers, passes and batch."""
    height, width = latent_size
    maps = []
    for records in store.values():
        for probs in records:
            pixels = probs.shape[1]
            scale = (height * width / pixels) ** 0.5
            h, w = round(height / scale), round(width / scale)
            if h * w != pixels:
                raise ValueError(
                    f"attention layer with {pixels} pixels does not tile {latent_size}"
                )
            grid = probs[:, :, list(token_indices)].sum(-1).view(-1, 1, h, w)
            maps.append(
                F.interpolate(
                    grid, size=(height, width), mode="bilinear", align_corners=False
                ).mean(0)[0]
            )
    if not maps:
        raise ValueError("unet: no cross-attention was recorded (does the UNet have attn2 layers?)")
    return torch.stack(maps).mean(0)


def _image_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    rgb = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)
    array = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def _family_of(components: Mapping[str, Any]) -> ModelFamily:
    """The components' family: `load_base_components` names it; a bare dict (such as
    `tiny.build_tiny_components()`) is told apart by the denoiser and text encoders it holds."""
    from training.engine.families import get_family

    if components.get("family") is not None:
        return components["family"]
    if "transformer" in components:
        return get_family("sd3")
    return get_family("sdxl" if "text_encoder_2" in components else "sd")


@torch.no_grad()
def attention_maps(
    image: Image.Image,
    prompt: str,
    words: Sequence[str],
    *,
    components: Mapping[str, Any],
    timesteps: Sequence[int] = (300, 500, 700),
    resolution: int | None = None,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Per word, the base model's image-to-text attention map while denoising the noised
    reference, for any family.

    `timesteps` are on the engine's noise axis (integers in [0, T), larger = noisier; sigma =
    t / T for flow matching). Several are averaged because single-step maps are noisy; noise is
    drawn from `seed`. Returns (maps, skipped) where skipped names words absent from the
    tokenized prompt (positions come from the first CLIP tokenizer, whose tokens lead the text
    sequence in every family).
    """
    family = _family_of(components)
    denoiser, vae, tokenizer = (
        components[family.denoiser],
        components["vae"],
        components["tokenizer"],
    )
    scheduler = components.get("noise_scheduler") or family.training_scheduler(
        components["scheduler"].config
    )
    device = next(denoiser.parameters()).device
    dtype = next(denoiser.parameters()).dtype
    scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = resolution or denoiser.config.sample_size * scale_factor
    pixels = _image_tensor(image, resolution).to(device, dtype=vae.dtype)
    scaling, shift = family.latent_scale(vae)
    latents = (vae.encode(pixels).latent_dist.mean - shift) * scaling
    pipeline = family.pipeline({**components, "scheduler": components["scheduler"]})
    geometry = Geometry((resolution, resolution), (0, 0), (resolution, resolution))
    conditioning = cast_conditioning(
        family.condition(pipeline, [prompt], [geometry], device), dtype
    )
    generator = torch.Generator(device="cpu").manual_seed(seed)
    indices = {w: word_token_indices(tokenizer, prompt, w) for w in words}
    skipped = {w: "not found in the tokenized prompt" for w, ids in indices.items() if not ids}
    with record_cross_attention(denoiser) as store:
        for step in timesteps:
            noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
            t = torch.tensor([int(step)], device=device)
            noisy, model_t, _ = family.noise(scheduler, latents, noise, t)
            family.predict(denoiser, noisy.to(dtype), model_t, conditioning)
    size = (int(latents.shape[-2]), int(latents.shape[-1]))
    maps = {w: maps_for_tokens(store, ids, size) for w, ids in indices.items() if ids}
    return maps, skipped


def concept_pairs(
    image: Image.Image,
    prompt: str,
    words: Sequence[str] | None,
    *,
    components: Mapping[str, Any],
    descriptor: str = "",
    template: str | None = None,
    threshold: float = 0.5,
    min_area: float = 0.02,
    margin: float = 0.0,
    timesteps: Sequence[int] = (300, 500, 700),
    seed: int = 0,
) -> ConceptScaling:
    """The whole FineStyle scaling step for one reference image and its prompt.

    `components` are a base model's, as `base_model.load_base_components(folder)` returns them
    (any family), or a bare dict such as `training.engine.tiny.build_tiny_components()`.
    `words` None falls back to `candidate_words(prompt, exclude=[descriptor])`.
    """
    words = list(words) if words is not None else candidate_words(prompt, exclude=[descriptor])
    if not words:
        raise ValueError(f"words: no concept words given or found in prompt {prompt!r}")
    maps, skipped = attention_maps(
        image, prompt, words, components=components, timesteps=timesteps, seed=seed
    )
    result = pairs_from_attention_maps(
        image,
        maps,
        threshold,
        min_area,
        descriptor=descriptor,
        template=template,
        margin=margin,
    )
    result.skipped = {**skipped, **result.skipped}
    return result


def write_concept_rows(
    scaling: ConceptScaling,
    out_dir: str | Path,
    *,
    source_sha256: str,
    source_prompt: str | None = None,
    source_path: str | None = None,
) -> list[dict[str, Any]]:
    """Save each crop as PNG named by its sha256 and return manifest rows with lineage.

    The Django side freezes these rows as a new DatasetVersion whose parent is the reference's
    version; `parent_sha256` and `box` say exactly where every sub-image came from. With
    `source_prompt` the full reference pair is kept as the first row, as FineStyle trains on both.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    if source_prompt is not None:
        rows.append(
            {
                "image_sha256": source_sha256,
                "image_path": source_path,
                "prompt": source_prompt,
                "concept": None,
                "parent_sha256": None,
                "box": None,
                "weight": 1.0,
                "split": "train",
            }
        )
    for pair in scaling.pairs:
        buffer = io.BytesIO()
        pair.image.save(buffer, format="PNG")
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        path = out / f"{digest}.png"
        if not path.exists():
            path.write_bytes(data)
        rows.append(
            {
                "image_sha256": digest,
                "image_path": path.name,
                "prompt": pair.prompt,
                "concept": pair.word,
                "parent_sha256": source_sha256,
                "box": list(pair.box),
                "weight": 1.0,
                "split": "train",
            }
        )
    return rows
