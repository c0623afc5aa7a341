"""Demo stage: from the fixture pool to a frozen domain dataset version, in one call.

Everything runs in this process through the same services the jobs call (no worker needed):
ingest a pool, embed it, build an index, run the built-in heuristics recipe stored as Recipe
`demo-stickers`, and freeze a version. The demo gives the toy world's pool (its photographs and
stickers with their captions) and the toy CLIP; without them the fixture pool is embedded with
tiny-clip at random weights (seed 0), which the heuristics recipe does not need.

The one step a person does in real use — the data lead's clicks in the review grid — is
stood in for by accepting, programmatically, the images the recipe scores at or above its
threshold (at most DEMO_ACCEPT_LIMIT of them). Nothing else differs from the real path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.models import DatasetVersion, RecipeScore
from curation.services.embeddings import ensure_space, pending_shards, plan_embedding
from curation.services.embeddings import run_embed_shard as _embed
from curation.services.indexes import build_vector_index
from curation.services.recipes import (
    ensure_heuristics_recipe,
    heuristics_lf_configs,
    run_recipe_job,
    start_recipe_run,
)
from curation.services.review import freeze_domain_version
from curation.services.versions import VersionUnchanged

DEMO_SPACE = "demo-tiny-clip"
TOY_SPACE = "toy-world-clip"
TOY_SOURCE = "toy-world-pool"
DEMO_RECIPE = "demo-stickers"
DEMO_DATASET = "demo-stickers-domain"
DEMO_ACCEPT_LIMIT = 200
DEMO_SHARD_SIZE = 16
# The fixture pool's "photos" are blurred smooth gradients: at the built-in thresholds they need
# only 10-13 colours and are 93 % flat, so the colour and border LFs would call them stickers and
# every image would score 1.0. A data lead would tighten those two thresholds for this pool in
# the admin; the demo recipe does the same (its description says so).
DEMO_LF_OVERRIDES = {
    "few_colours": {"max_colours": 6, "photo_min_colours": 8},
    "uniform_border": {"negative_below": 0.8},
}


def demo_domain_dataset(
    user: Any, *, pool: Path | None = None, clip_weights: str | None = None
) -> DatasetVersion:
    """Run the retrieval stage on the demo pool (or the toy world's `pool`, embedded with its
    CLIP `clip_weights`) and return the frozen domain version."""
    from curation.services.ingest import DEMO_SOURCE, demo_ingest_pool

    demo_ingest_pool(pool, TOY_SOURCE if pool else DEMO_SOURCE)
    space = ensure_space("tiny-clip", clip_weights, name=TOY_SPACE if clip_weights else DEMO_SPACE)
    plan_embedding(space, DEMO_SHARD_SIZE)
    for shard in pending_shards(space):
        _embed(shard)
    build_vector_index(space)
    recipe = ensure_heuristics_recipe(
        DEMO_RECIPE,
        description="Demo: the built-in heuristics recipe (no CLIP weights needed), with the "
        "few_colours and uniform_border thresholds tightened for the fixture pool's smooth photos.",
        labelling_functions=[
            {**lf, **DEMO_LF_OVERRIDES.get(lf["kind"], {})} for lf in heuristics_lf_configs()
        ],
        threshold=0.5,
    )
    run = run_recipe_job(start_recipe_run(recipe, user=user, space=space, run_async=False))
    # Stand-in for the data lead's clicks in the review grid (see the module docstring).
    chosen = list(
        RecipeScore.objects.filter(run=run, score__gte=recipe.threshold)
        .order_by("-score", "pk")
        .values_list("pk", flat=True)[:DEMO_ACCEPT_LIMIT]
    )
    RecipeScore.objects.filter(pk__in=chosen).update(decision=RecipeScore.Decision.ACCEPTED)
    try:
        return freeze_domain_version(
            run,
            dataset_name=DEMO_DATASET,
            reason=f"demo: top {len(chosen)} images of {recipe.name} run #{run.pk} above "
            f"threshold {recipe.threshold}, accepted programmatically in place of a data lead",
            user=user,
            default_caption="a sticker",
        )
    except VersionUnchanged:
        # A rerun picked the same images: the version frozen last time is the demo's version.
        latest = (
            DatasetVersion.objects.filter(
                dataset__name=DEMO_DATASET, state=DatasetVersion.State.FROZEN
            )
            .order_by("-number")
            .first()
        )
        assert latest is not None  # VersionUnchanged means a frozen parent exists
        return latest
