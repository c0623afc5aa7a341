"""FineStyle concept-oriented data scaling as a dataset operation: a frozen style version in, a
new frozen version out holding its references plus one sub-image / sub-prompt row per concept.

The engine (`training.engine.concept_scaling.concept_pairs`) finds each concept word's region
through the base model's cross-attention; this module feeds it the version's stored images,
stores every crop content-addressed like any ingested image, and freezes the result in the
"<name>-concepts" style dataset. The source version is never touched; the new version's lineage
says which source row and box every crop came from, with the threshold and words used, so the
scaling can be audited and repeated.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db import transaction

from curation.models import Dataset, DatasetItem, DatasetVersion, Image, Job
from curation.services.jobs import enqueue_job
from curation.services.storage import read_bytes, store_bytes
from curation.services.versions import add_items, create_draft_version, freeze_version
from training.models import Checkpoint

logger = logging.getLogger(__name__)

JOB_KIND = "finestyle.scale_concepts"
CONCEPT_LABEL = "concept"
ProgressFn = Callable[[int, int, str], None]
LogFn = Callable[[str], None]
WordsMap = Mapping[str, Sequence[str] | str]


class ConceptScalingError(ValueError):
    """Bad input; `field` names the argument or job parameter at fault."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def concepts_dataset_name(dataset: Dataset) -> str:
    return f"{dataset.name}-concepts"[: Dataset._meta.get_field("name").max_length]


def normalise_words(words_by_image_or_prompt: WordsMap | None) -> dict[str, list[str]]:
    """{key: [word, ...]}; a value may be a list or one comma-separated string."""
    if words_by_image_or_prompt is None:
        return {}
    if not isinstance(words_by_image_or_prompt, Mapping):
        raise ConceptScalingError(
            "words_by_image_or_prompt",
            f"must map an image sha256, image id or prompt to words, got "
            f"{type(words_by_image_or_prompt).__name__}",
        )
    result: dict[str, list[str]] = {}
    for key, value in words_by_image_or_prompt.items():
        words = value.split(",") if isinstance(value, str) else value
        if not isinstance(words, Sequence) or not all(isinstance(w, str) for w in words):
            raise ConceptScalingError(
                f"words_by_image_or_prompt[{key!r}]", f"must be a list of words, got {value!r}"
            )
        cleaned = [w.strip() for w in words if w.strip()]
        if not cleaned:
            raise ConceptScalingError(f"words_by_image_or_prompt[{key!r}]", "names no word")
        result[str(key)] = cleaned
    return result


def words_for(item: DatasetItem, words: Mapping[str, list[str]]) -> list[str] | None:
    """The row's words by image sha256, then image id, then its prompt; None lets the engine
    fall back to the prompt's content words."""
    for key in (item.image.sha256, str(item.image_id), item.caption):
        if key in words:
            return list(words[key])
    return None


def _check_inputs(
    version: DatasetVersion, base_checkpoint: Checkpoint | None, threshold: float, min_area: float
) -> None:
    if not version.is_frozen:
        raise ConceptScalingError("version", f"{version} is a draft; freeze it first")
    if version.dataset.kind != Dataset.Kind.STYLE:
        raise ConceptScalingError(
            "version", f"{version} is a {version.dataset.kind} version; scaling needs a style one"
        )
    if base_checkpoint is None:
        raise ConceptScalingError("base_checkpoint", "is required (its attention finds concepts)")
    if not 0 < threshold < 1:
        raise ConceptScalingError("threshold", f"must be in (0, 1), got {threshold}")
    if not 0 <= min_area < 1:
        raise ConceptScalingError("min_area", f"must be in [0, 1), got {min_area}")


def _load_components(base_checkpoint: Checkpoint) -> dict[str, Any]:
    from training.engine.base_model import load_base_components
    from training.services.checkpoints import BaseModelRefused, materialize_base_model

    try:
        path = materialize_base_model(base_checkpoint)
    except BaseModelRefused as error:
        raise ConceptScalingError("base_checkpoint", str(error)) from error
    components = load_base_components(path)
    for name in ("unet", "vae", "text_encoder"):
        components[name].eval()
    return components


def _store_crop(pil_image: Any, parent: Image, word: str, box: Sequence[int], prompt: str) -> Image:
    buffer = io.BytesIO()
    pil_image.save(buffer, format="PNG")
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    image, _ = Image.objects.get_or_create(
        sha256=digest,
        defaults={
            "storage_key": store_bytes(data, "png", sha256=digest),
            "width": pil_image.width,
            "height": pil_image.height,
            "format": "PNG",
            "has_alpha": pil_image.mode in ("RGBA", "LA"),
            "source": parent.source,
            "origin": f"finestyle crop of {parent.sha256} box {list(box)} for {word!r}",
            "caption": prompt,
        },
    )
    return image


def scale_row(
    item: DatasetItem,
    words: list[str] | None,
    components: Mapping[str, Any],
    *,
    threshold: float,
    min_area: float,
    descriptor: str = "",
    margin: float = 0.0,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(new dataset rows, lineage entry) for one reference row."""
    from PIL import Image as PILImage

    from training.engine.concept_scaling import candidate_words, concept_pairs

    with PILImage.open(io.BytesIO(read_bytes(item.image.storage_key))) as opened:
        picture = opened.convert("RGBA" if opened.mode in ("RGBA", "LA", "P") else "RGB")
    used = list(words) if words is not None else candidate_words(item.caption, [descriptor])
    scaling = concept_pairs(
        picture,
        item.caption,
        used,
        components=components,
        descriptor=descriptor,
        threshold=threshold,
        min_area=min_area,
        margin=margin,
        seed=seed,
    )
    rows, crops = [], []
    for pair in scaling.pairs:
        image = _store_crop(pair.image, item.image, pair.word, pair.box, pair.prompt)
        rows.append(
            {
                "image": image,
                "caption": pair.prompt,
                "label": CONCEPT_LABEL,
                "weight": item.weight,
                "split": item.split,
            }
        )
        crops.append(
            {
                "image": image.pk,
                "sha256": image.sha256,
                "word": pair.word,
                "sub_prompt": pair.prompt,
                "box": list(pair.box),
                "mask_fraction": round(pair.mask_fraction, 4),
                "whole_image": list(pair.box) == [0, 0, *picture.size],
            }
        )
    entry = {
        "image": item.image_id,
        "sha256": item.image.sha256,
        "prompt": item.caption,
        "words": used,
        "words_given": words is not None,
        "crops": crops,
        "skipped": dict(scaling.skipped),
    }
    return rows, entry


def scale_concepts(
    version: DatasetVersion,
    words_by_image_or_prompt: WordsMap | None,
    *,
    base_checkpoint: Checkpoint | None,
    threshold: float = 0.5,
    min_area: float = 0.02,
    user: Any = None,
    descriptor: str = "",
    margin: float = 0.0,
    seed: int = 0,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> DatasetVersion:
    """FineStyle's concept scaling of a frozen style `version`, frozen as a new version of the
    "<name>-concepts" style dataset: the reference rows, then each concept crop captioned with its
    sub-prompt (label "concept").

    Words per row come from `words_by_image_or_prompt`, keyed by image sha256, image id or the
    row's prompt; rows without an entry use the prompt's content words. A row that fails (missing
    file, word not in the prompt) is recorded in the lineage and skipped, never failing the rest.
    """
    version = DatasetVersion.objects.select_related("dataset").get(pk=version.pk)
    _check_inputs(version, base_checkpoint, threshold, min_area)
    words = normalise_words(words_by_image_or_prompt)
    say = log or logger.info
    components = _load_components(base_checkpoint)  # type: ignore[arg-type]
    items = list(version.items.select_related("image").order_by("pk"))
    new_rows: list[dict[str, Any]] = [
        {
            "image": item.image,
            "caption": item.caption,
            "label": item.label,
            "weight": item.weight,
            "split": item.split,
        }
        for item in items
    ]
    entries, failed = [], []
    seen = {item.image_id for item in items}
    for done, item in enumerate(items, start=1):
        try:
            rows, entry = scale_row(
                item,
                words_for(item, words),
                components,
                threshold=threshold,
                min_area=min_area,
                descriptor=descriptor,
                margin=margin,
                seed=seed,
            )
        except Exception as error:  # one bad reference must not lose the others' crops
            failed.append(
                {"image": item.image_id, "sha256": item.image.sha256, "error": str(error)}
            )
            say(f"image {item.image_id} ({item.image.sha256[:12]}): skipped, {error}")
        else:
            for row, crop in zip(rows, entry["crops"], strict=True):
                # A box covering the whole image is the reference again, not a concept; two words
                # sharing one box give one image, which a version holds once.
                crop["kept"] = not crop["whole_image"] and row["image"].pk not in seen
                if crop["kept"]:
                    seen.add(row["image"].pk)
                    new_rows.append(row)
            entries.append(entry)
        if progress is not None:
            progress(done, len(items), f"{done}/{len(items)} references scaled")
    crops = sum(1 for e in entries for c in e["crops"] if c["kept"])
    if not crops:
        raise ConceptScalingError(
            "threshold",
            f"no concept crop of {version} smaller than its image passed threshold "
            f"{threshold} and min_area {min_area}; a higher threshold gives tighter crops, a "
            "lower min_area keeps smaller ones"
            + (f" ({len(failed)} rows failed: {failed[0]['error']})" if failed else ""),
        )
    lineage = {
        "operation": "finestyle_concept_scaling",
        "source_version": {
            "id": version.pk,
            "dataset": version.dataset.name,
            "number": version.number,
            "checksum": version.checksum,
        },
        "base_checkpoint": {"id": base_checkpoint.pk, "name": base_checkpoint.name},  # type: ignore[union-attr]
        "threshold": threshold,
        "min_area": min_area,
        "margin": margin,
        "descriptor": descriptor,
        "seed": seed,
        "words": words,
        "rows": entries,
        "failed": failed,
    }
    reason = f"FineStyle concept scaling of {version}: {crops} concept crops"
    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(
            name=concepts_dataset_name(version.dataset), defaults={"kind": Dataset.Kind.STYLE}
        )
        if dataset.kind != Dataset.Kind.STYLE:
            raise ConceptScalingError(
                "version", f"dataset {dataset.name!r} exists as a {dataset.kind} dataset"
            )
        parent = (
            dataset.versions.filter(state=DatasetVersion.State.FROZEN).order_by("-number").first()
        )
        draft = create_draft_version(dataset, reason=reason, lineage=lineage)
        draft.parent = parent  # the previous scaling in this dataset, so its diff reads naturally
        draft.save(update_fields=["parent"])
        add_items(draft, new_rows)
        scaled = freeze_version(draft, user=user, reason=reason)
    say(f"{scaled}: {len(items)} references + {crops} concept crops ({scaled.row_count} rows)")
    return scaled


def enqueue_concept_scaling(
    version: DatasetVersion,
    words_by_image_or_prompt: WordsMap | None,
    *,
    base_checkpoint: Checkpoint,
    threshold: float = 0.5,
    min_area: float = 0.02,
    descriptor: str = "",
    user: Any = None,
) -> Job:
    """Run `scale_concepts` as a `finestyle.scale_concepts` job on the gpu queue."""
    _check_inputs(version, base_checkpoint, threshold, min_area)
    words = normalise_words(words_by_image_or_prompt)
    return enqueue_job(
        JOB_KIND,
        params={
            "version_id": version.pk,
            "base_checkpoint_id": base_checkpoint.pk,
            "words": words,
            "threshold": threshold,
            "min_area": min_area,
            "descriptor": descriptor,
        },
        queue="gpu",
        user=user,
        target=version,
    )
