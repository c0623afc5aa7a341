"""StyleDrop: a small low-rank adapter on the UNet's attention, a style descriptor on every prompt,
and iterative training on generations selected by feedback (Sohn et al., 2023).

StyleDrop tunes well under 1% of the weights so that one or a few references are enough, and
names the style in words ("in flat sticker style") so that content and style stay separable in
the prompt. Its second half is the loop the platform runs anyway: train on the references,
generate, keep the generations that feedback accepts (CLIP text score x style similarity, or
human pass/fail from an AnnotationRound of kind `style`), and train the next round on those.

The adapter is peft LoRA on the attention projections (the paper's adapter sat in Muse's
transformer layers; on a UNet the attention projections are the equivalent spot). The LoRA
helpers here are shared with FineStyle, which differs only in where its adapters go.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import torch

import training.engine  # noqa: F401  (torchvision shim before diffusers/peft)
from training.engine.adapters import Adapter, register_adapter
from training.engine.config import ConfigError

if TYPE_CHECKING:
    from diffusers.loaders.peft import PeftAdapterMixin

NAME = "styledrop"
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
ATTENTION_PROJECTIONS = r".*attn[12]\.(to_q|to_k|to_v|to_out\.0)"

DEFAULTS: dict[str, Any] = {
    "rank": 4,
    "alpha": None,  # None: alpha = rank, so the adapter's scale is 1 whatever the rank
    "dropout": 0.0,
    "target_modules": ATTENTION_PROJECTIONS,
    "style_descriptor": "",
}


class _KeyReport(Protocol):
    """torch's _IncompatibleKeys, which set_peft_model_state_dict returns; peft annotates it as
    a bare `namedtuple`."""

    missing_keys: list[str]
    unexpected_keys: list[str]


# ---- LoRA plumbing shared with FineStyle --------------------------------------------------------
def merged_params(params: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with `params`; an unknown key is a typo worth stopping for."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ConfigError(
            f"adapter_params.{unknown[0]}", f"unknown parameter (known: {', '.join(defaults)})"
        )
    merged = {**defaults, **params}
    rank = merged["rank"]
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ConfigError("adapter_params.rank", f"must be a positive integer, got {rank!r}")
    alpha = merged.get("alpha")
    if alpha is not None and (not isinstance(alpha, int | float) or alpha <= 0):
        raise ConfigError("adapter_params.alpha", f"must be a positive number, got {alpha!r}")
    dropout = merged.get("dropout", 0.0)
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError("adapter_params.dropout", f"must be in [0, 1), got {dropout!r}")
    return merged


def add_lora(unet: torch.nn.Module, adapter_name: str, params: Mapping[str, Any]) -> list[Any]:
    """Freeze `unet`, inject a named peft LoRA adapter and return its (trainable) parameters."""
    from peft import LoraConfig

    alpha = params["alpha"] if params.get("alpha") is not None else params["rank"]
    config = LoraConfig(
        r=params["rank"],
        lora_alpha=alpha,
        lora_dropout=float(params.get("dropout", 0.0)),
        target_modules=params["target_modules"],
        init_lora_weights="gaussian",
    )
    unet.requires_grad_(False)
    try:
        # The UNet is a diffusers model; its PeftAdapterMixin supplies add_adapter/set_adapter.
        cast("PeftAdapterMixin", unet).add_adapter(config, adapter_name=adapter_name)
    except ValueError as error:
        if "matching" in str(error) or "not found" in str(error):
            raise ConfigError(
                "adapter_params.target_modules",
                f"{params['target_modules']!r} matches no module of this UNet ({error})",
            ) from error
        raise
    trainable = [p for n, p in unet.named_parameters() if f".{adapter_name}." in n]
    for parameter in trainable:
        parameter.requires_grad_(True)
    return trainable


def save_lora(unet: torch.nn.Module, adapter_name: str, out_dir: str | Path, extra: dict) -> Path:
    """Adapter weights only (peft's key names) plus the config needed to rebuild the adapter."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    if adapter_name not in getattr(unet, "peft_config", {}):
        raise ValueError(f"unet: no {adapter_name!r} adapter to save (was apply() called?)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"adapter": adapter_name})
    (out / CONFIG_FILE).write_text(
        json.dumps({"adapter": adapter_name, **extra}, indent=2, sort_keys=True)
    )
    return out


def read_adapter_config(out_dir: str | Path, adapter_name: str) -> dict[str, Any]:
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no adapter config (not a saved {adapter_name} adapter)")
    config = json.loads(path.read_text())
    if config.get("adapter") != adapter_name:
        raise ValueError(f"{path}: adapter is {config.get('adapter')!r}, expected {adapter_name!r}")
    return config


def load_lora(
    unet: torch.nn.Module, adapter_name: str, out_dir: str | Path, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Rebuild the adapter from its saved config (unless present) and load its weights exactly."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    config = read_adapter_config(out_dir, adapter_name)
    params = merged_params(config.get("params", {}), defaults)
    if adapter_name not in getattr(unet, "peft_config", {}):
        add_lora(unet, adapter_name, params)
    weights = Path(out_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: adapter weights missing")
    state = load_file(str(weights))
    result = cast(_KeyReport, set_peft_model_state_dict(unet, state, adapter_name=adapter_name))
    missing = [k for k in result.missing_keys if f".{adapter_name}." in k or "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{weights}: does not fit this UNet (missing {missing[:3]}, "
            f"unexpected {list(result.unexpected_keys)[:3]})"
        )
    cast("PeftAdapterMixin", unet).set_adapter(adapter_name)
    return params


# ---- the adapter interface ----------------------------------------------------------------------
def apply(unet: torch.nn.Module, params: Mapping[str, Any] | None = None) -> list[Any]:
    """Freeze the UNet and add StyleDrop's low-rank adapter; returns the trainable parameters.

    params: rank (4), alpha (rank), dropout (0), target_modules (all attention projections, a
    peft regex or list of names), style_descriptor (appended to prompts; recipe-level).
    """
    merged = merged_params(params, DEFAULTS)
    # torch types Module.__setattr__ as Tensor | Module only; plain attributes work at runtime.
    unet._styledrop_params = merged  # type: ignore[assignment]  # read back by save()
    return add_lora(unet, NAME, merged)


def save(unet: torch.nn.Module, out_dir: str | Path) -> Path:
    params = getattr(unet, "_styledrop_params", DEFAULTS)
    return save_lora(unet, NAME, out_dir, {"params": params})


def load(unet: torch.nn.Module, out_dir: str | Path) -> None:
    unet._styledrop_params = load_lora(unet, NAME, out_dir, DEFAULTS)  # type: ignore[assignment]


register_adapter(
    Adapter(
        NAME,
        apply,
        save,
        load,
        "StyleDrop: low-rank adapter on the attention projections (<1%), style descriptor, iterative feedback",
    )
)


# ---- prompts ------------------------------------------------------------------------------------
def with_style_descriptor(prompt: str, descriptor: str) -> str:
    """Append the style descriptor once ("a cat" -> "a cat, in flat sticker style").

    Idempotent so that prompts coming back from a previous iteration are not suffixed twice.
    """
    prompt, descriptor = prompt.strip(), descriptor.strip()
    if not descriptor or prompt.lower().endswith(descriptor.lower()):
        return prompt
    return f"{prompt}, {descriptor}" if prompt else descriptor


# ---- feedback -----------------------------------------------------------------------------------
@dataclass
class Generation:
    """One generated image under review. `prompt` is the content prompt without the descriptor,
    so the text score measures content fidelity and not the descriptor's words."""

    id: str
    prompt: str
    image: Any  # PIL image or path
    seed: int | None = None
    # what the recipe knows about the image (sha256, full prompt, sampler, iteration, checkpoint),
    # so a human-feedback callback can create its annotation tasks without reading files back
    metadata: dict[str, Any] = field(default_factory=dict)


class FeedbackPending(Exception):
    """Raised by a human-feedback callback while annotators have not judged the generations yet.

    The `styledrop_iterative` driver saves its state before asking for feedback and lets this
    propagate: the generations stay on disk under the same ids, and running the recipe again with
    the same config and output_dir resumes at the selection (nothing is retrained or regenerated).
    On the way out the driver sets `iteration` (which iteration's generations wait) and
    `generations`; `details` is whatever the callback passed (e.g. an annotation round id).
    """

    def __init__(self, message: str = "waiting for annotators", **details: Any) -> None:
        super().__init__(message)
        self.details = details
        self.iteration: int | None = None
        self.generations: list[Generation] = []


@dataclass
class Decision:
    generation_id: str
    selected: bool
    score: float | None = None
    text_score: float | None = None
    style_score: float | None = None
    reason: str = ""


def _score(decision: Decision) -> float:
    """The score of a decision already known to be scored (ranked ones are)."""
    assert decision.score is not None
    return decision.score


@dataclass
class FeedbackSelection:
    mode: str
    selected: list[Generation]
    decisions: list[Decision]

    @property
    def rejected_ids(self) -> list[str]:
        return [d.generation_id for d in self.decisions if not d.selected]


HumanFeedback = Callable[[Sequence[Generation]], Mapping[str, bool]]


def select_by_feedback(
    generations: Sequence[Generation],
    mode: Literal["clip", "human"] = "clip",
    *,
    clip: Any = None,
    style_references: Sequence[Any] = (),
    threshold: float | None = None,
    top_k: int | None = None,
    human_feedback: HumanFeedback | None = None,
) -> FeedbackSelection:
    """Pick the generations the next StyleDrop iteration trains on.

    `clip`: score = max(text score, 0) x max(style score, 0) (cosines from `metrics`, clamped so
    two negative cosines never multiply into a good score); keep those >= `threshold` and/or the
    best `top_k` (at least one of the two is required). `clip` is a `metrics` encoder bundle.
    `human`: `human_feedback(generations)` returns {generation id: passed}; a generation without a
    judgement is not selected (reason "no judgement"), never guessed. The callback may raise
    `FeedbackPending` to say the judgements are not in yet; it propagates unchanged.
    A generation whose image cannot be scored is rejected with the reason, not the batch.
    """
    if mode == "human":
        return _select_by_human(generations, human_feedback)
    if mode != "clip":
        raise ValueError(f"mode: expected 'clip' or 'human', got {mode!r}")
    if clip is None:
        raise ValueError("clip: a CLIP encoder bundle is required for mode='clip'")
    if not style_references:
        raise ValueError("style_references: at least one style reference image is required")
    if threshold is None and top_k is None:
        raise ValueError("threshold/top_k: give a score threshold, a top_k, or both")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k: must be >= 1, got {top_k}")
    from training.engine import metrics

    images = [g.image for g in generations]
    errors: list[tuple[int, str]] = []
    image_embeddings = metrics.embed_images(clip, images, errors=errors)
    text_embeddings = metrics.embed_texts(clip, [g.prompt for g in generations])
    text = metrics.cosine_pairs(image_embeddings, text_embeddings)
    reference_embeddings = metrics.embed_images(clip, list(style_references))
    style = metrics.mean_similarity(image_embeddings, reference_embeddings)
    failed = dict(errors)
    scored: list[Decision] = []
    for index, generation in enumerate(generations):
        t, s = float(text[index]), float(style[index])
        if index in failed or math.isnan(t) or math.isnan(s):
            reason = failed.get(index, "could not be scored")
            scored.append(Decision(generation.id, False, reason=f"unscorable: {reason}"))
            continue
        score = max(t, 0.0) * max(s, 0.0)
        scored.append(Decision(generation.id, True, score, t, s))
    ranked = sorted((d for d in scored if d.score is not None), key=lambda d: -_score(d))
    passing = [d for d in ranked if threshold is None or _score(d) >= threshold]
    keep = {d.generation_id for d in (passing[:top_k] if top_k is not None else passing)}
    for decision in ranked:
        decision.selected = decision.generation_id in keep
        if not decision.selected:
            below = threshold is not None and _score(decision) < threshold
            decision.reason = "below threshold" if below else "outside top_k"
    by_id = {g.id: g for g in generations}
    selected = [by_id[d.generation_id] for d in ranked if d.generation_id in keep]
    return FeedbackSelection("clip", selected, scored)


def _select_by_human(
    generations: Sequence[Generation], human_feedback: HumanFeedback | None
) -> FeedbackSelection:
    if human_feedback is None:
        raise ValueError("human_feedback: a callback returning {generation id: passed} is required")
    verdicts = dict(human_feedback(generations))
    known = {g.id for g in generations}
    stray = sorted(set(verdicts) - known)
    if stray:
        raise ValueError(f"human_feedback: verdicts for unknown generation ids {stray[:5]}")
    decisions, selected = [], []
    for generation in generations:
        verdict = verdicts.get(generation.id)
        if verdict is None:
            decisions.append(Decision(generation.id, False, reason="no judgement"))
            continue
        passed = bool(verdict)
        decisions.append(Decision(generation.id, passed, reason="" if passed else "failed review"))
        if passed:
            selected.append(generation)
    return FeedbackSelection("human", selected, decisions)


# ---- the iterative recipe -----------------------------------------------------------------------
@dataclass
class StyleExample:
    """One training pair of an iteration: a reference or a selected generation."""

    image: Any
    prompt: str  # content prompt; the descriptor is added by `training_prompts`
    origin: Literal["reference", "generation"] = "reference"
    generation_id: str | None = None
    iteration: int = 0


@dataclass(frozen=True)
class IterationStep:
    iteration: int
    stage: Literal["train", "generate", "select"]


def styledrop_iteration_plan(iterations: int) -> list[IterationStep]:
    """The stages of `styledrop_iterative` in order: train on the references, then per further
    iteration generate, select and train again. The Django side turns each stage into a job
    (human feedback waits for an AnnotationRound between `generate` and `select`)."""
    if not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(
            "adapter_params.iterations", f"must be a positive integer, got {iterations!r}"
        )
    steps = [IterationStep(0, "train")]
    for iteration in range(1, iterations):
        steps += [
            IterationStep(iteration, "generate"),
            IterationStep(iteration, "select"),
            IterationStep(iteration, "train"),
        ]
    return steps


def next_training_set(
    references: Sequence[StyleExample],
    selection: FeedbackSelection,
    iteration: int,
    *,
    keep_references: bool = True,
    min_selected: int = 1,
) -> list[StyleExample]:
    """Training pairs for `iteration`: the selected generations (plus the references, by default).

    Raises when fewer than `min_selected` generations passed: training "on the selection" of an
    empty selection would silently repeat the previous round.
    """
    if len(selection.selected) < min_selected:
        raise ValueError(
            f"selection: {len(selection.selected)} generations passed {selection.mode} feedback, "
            f"need at least {min_selected} for iteration {iteration}"
        )
    chosen = [
        StyleExample(g.image, g.prompt, "generation", g.id, iteration) for g in selection.selected
    ]
    return (list(references) if keep_references else []) + chosen


def training_prompts(examples: Sequence[StyleExample], descriptor: str) -> list[str]:
    return [with_style_descriptor(e.prompt, descriptor) for e in examples]


@dataclass
class IterationRecord:
    iteration: int
    training_set: list[StyleExample]
    checkpoint: Any = None
    generations: list[Generation] = field(default_factory=list)
    selection: FeedbackSelection | None = None


def run_styledrop_iterative(
    references: Sequence[StyleExample],
    *,
    iterations: int,
    train: Callable[[list[StyleExample], int], Any],
    generate: Callable[[Any, int], list[Generation]],
    select: Callable[[list[Generation]], FeedbackSelection],
    keep_references: bool = True,
    min_selected: int = 1,
) -> list[IterationRecord]:
    """Run the plan synchronously (CLIP feedback, or a blocking human callback in tests).

    `train(examples, iteration) -> checkpoint`, `generate(checkpoint, iteration) -> generations`
    and `select(generations) -> FeedbackSelection` are injected so that the same loop drives the
    tiny CPU engine in tests and real jobs; each record keeps what the iteration trained on.
    """
    if not references:
        raise ValueError("references: StyleDrop needs at least one style reference")
    records: list[IterationRecord] = []
    training_set = list(references)
    current: IterationRecord | None = None
    for step in styledrop_iteration_plan(iterations):
        if step.stage == "train":
            current = IterationRecord(step.iteration, training_set)
            current.checkpoint = train(training_set, step.iteration)
            records.append(current)
        elif step.stage == "generate":
            assert current is not None
            current.generations = generate(current.checkpoint, step.iteration)
        else:
            assert current is not None
            current.selection = select(current.generations)
            training_set = next_training_set(
                references,
                current.selection,
                step.iteration,
                keep_references=keep_references,
                min_selected=min_selected,
            )
    return records
