"""A round's evaluation report: scorer identity, paired intervals, grids, human results."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from django.urls import reverse

from curation.models import (
    Annotation,
    AnnotationRound,
    Image,
    LabelTask,
    Prompt,
    PromptSet,
    StyleDescriptor,
)
from training.models import Checkpoint, Generation, GenerationBatch, RetrainRound
from training.services import eval_metrics
from training.services.eval_scorer import load_eval_scorer
from training.services.evaluation import build_report, refresh_human_results

PROMPTS = [
    ("a red circle", "shapes"),
    ("a blue square", "shapes"),
    ("a cat", "animals"),
    ("a dog", "animals"),
]
SEEDS = [0, 1, 2]


@pytest.fixture
def arms(db):
    """Three arms' eval batches on the same prompts and seeds, with one image per generation."""
    root = Checkpoint.objects.create(name="root", path="/r")
    previous = Checkpoint.objects.create(name="previous", path="/p", parent=root)
    new = Checkpoint.objects.create(name="new", path="/n", parent=previous)
    prompt_set = PromptSet.objects.create(name="eval", purpose="evaluation")
    prompts = [Prompt.objects.create(prompt_set=prompt_set, text=t, category=c) for t, c in PROMPTS]
    descriptor = StyleDescriptor.objects.create(name="sticker-test", suffix=", sticker")
    counter = itertools.count()
    batches = {}
    for arm, checkpoint, style in (
        ("new", new, None),
        ("previous", previous, None),
        ("prompt_engineered_base", root, descriptor),
    ):
        batch = GenerationBatch.objects.create(
            name=f"r eval {arm}",
            checkpoint=checkpoint,
            prompt_set=prompt_set,
            style_descriptor=style,
        )
        for prompt, seed in itertools.product(prompts, SEEDS):
            image = Image.objects.create(sha256=f"{next(counter):064x}", storage_key=f"k{seed}")
            Generation.objects.create(
                batch=batch, prompt=prompt, prompt_text=prompt.text, seed=seed, image=image
            )
        batches[arm] = batch
    round_ = RetrainRound.objects.create(
        name="r",
        base_checkpoint=previous,
        checkpoint=new,
        prompt_set=prompt_set,
        eval_prompt_set=prompt_set,
        seeds=SEEDS,
    )
    return round_, batches


def _scored(batch: GenerationBatch, shift: float, rng: np.random.Generator) -> dict:
    """Planted per-image scores: a shared prompt effect plus the arm's shift plus noise."""
    effect = {t: e for (t, _), e in zip(PROMPTS, (0.0, 0.1, -0.1, 0.05), strict=True)}
    rows = [
        {
            "generation": g.pk,
            "image_key": g.image.storage_key,
            "prompt": g.prompt.text,
            "category": g.prompt.category,
            "seed": g.seed,
            "text_score": 0.3 + effect[g.prompt.text] + shift + rng.normal(0, 0.005),
            "style_score": 0.5 + shift,
            "content_leakage": 0.2,
        }
        for g in batch.generations.select_related("prompt", "image")
    ]
    return {"rows": rows, "diversity_by_prompt": {t: 0.1 + shift for t, _ in PROMPTS}}


@pytest.mark.django_db
def test_report_pairs_arms_by_prompt_and_names_a_random_scorer(
    arms, client, data_lead, api_client, settings
):
    settings.EVAL_CLIP_WEIGHTS = ""
    round_, batches = arms
    rng = np.random.default_rng(0)
    scored = {
        "new": _scored(batches["new"], 0.05, rng),
        "previous": _scored(batches["previous"], 0.0, rng),
        "prompt_engineered_base": _scored(batches["prompt_engineered_base"], -0.02, rng),
    }
    scorer = load_eval_scorer().describe()
    assert scorer["random_weights"] and not scorer["measurement"] and len(scorer["sha256"]) == 64
    report = build_report(round_, scored, batches, scorer)
    vs_previous = report["comparisons"]["previous"]["text_score"]["difference"]
    # The prompt effect (sd ~0.08) is shared and cancels: the paired interval is tight around 0.05.
    assert vs_previous["ci"][0] > 0.04 and vs_previous["ci"][1] < 0.06
    assert vs_previous["prompts"] == len(PROMPTS)
    relative = report["comparisons"]["prompt_engineered_base"]["style_score"]["relative"]
    assert relative["estimate"] == pytest.approx(0.07 / 0.48, abs=1e-3)
    assert report["summary"]["new"]["text_score_ci"] is not None
    assert set(report["by_category"]["new"]) == {"shapes", "animals"}
    assert report["by_category"]["new"]["animals"]["text_score_ci"] is not None
    # 12 images are fewer than two grids of 8: one ranked grid, nothing shown twice.
    assert len(report["ranked"]) == 12 and report["best"] == report["worst"] == []
    ranks = [r["text_score"] for r in report["ranked"]]
    assert ranks == sorted(ranks, reverse=True)

    RetrainRound.objects.filter(pk=round_.pk).update(report=report)
    client.force_login(data_lead)
    page = client.get(reverse("round-report", args=[round_.pk])).content.decode()
    assert 'id="scorer-warning"' in page and "Not a measurement" in page
    assert scorer["sha256"][:16] in page
    assert 'id="grid-ranked"' in page and 'id="grid-best"' not in page
    api_client.force_authenticate(data_lead)
    body = api_client.get(reverse("retrainround-detail", args=[round_.pk])).json()
    assert body["scorer"]["measurement"] is False and "random weights" in body["scorer"]["warning"]


def test_grids_split_only_when_they_cannot_overlap():
    rows = [{"text_score": i / 20, "prompt": f"p{i}"} for i in range(20)]
    grids = eval_metrics.ranked_grids(rows)
    assert grids["ranked"] == [] and len(grids["best"]) == len(grids["worst"]) == 8
    assert not {r["prompt"] for r in grids["best"]} & {r["prompt"] for r in grids["worst"]}
    assert grids["best"][0]["text_score"] == 0.95 and grids["worst"][0]["text_score"] == 0.0


def _rate(round_kind: str, generation: Generation, counter, **answer) -> None:
    rating_round, _ = AnnotationRound.objects.get_or_create(
        name=f"rating {round_kind}", kind=round_kind
    )
    task = LabelTask.objects.create(
        round=rating_round,
        key=f"t{next(counter)}",
        generation=generation,
        other_generation=answer.pop("other", None),
    )
    Annotation.objects.create(task=task, labelstudio_id=next(counter), raw={}, **answer)


@pytest.mark.django_db
def test_human_results_fit_all_arms_with_ties(arms):
    round_, batches = arms
    counter = itertools.count(1)
    new = list(batches["new"].generations.order_by("id"))
    previous = list(batches["previous"].generations.order_by("id"))
    base = list(batches["prompt_engineered_base"].generations.order_by("id"))
    # new beats previous on most prompts, ties some; both beat the prompt-engineered base.
    for i, (n, p, b) in enumerate(zip(new, previous, base, strict=True)):
        _rate("pairwise", n, counter, other=p, preferred="left" if i % 3 else "tie")
        _rate("pairwise", b, counter, other=n, preferred="right")
        _rate("pairwise", p, counter, other=b, preferred="left" if i % 4 else "right")
        _rate("style", n, counter, passed=i % 4 != 0)
        _rate("style", p, counter, passed=i % 2 == 0)
    report = {"batches": {arm: b.pk for arm, b in batches.items()}}
    RetrainRound.objects.filter(pk=round_.pk).update(report=report)
    round_.refresh_from_db()
    human = refresh_human_results(round_)["human"]

    bt = human["bradley_terry"]
    assert bt["ranking"] == ["new", "previous", "prompt_engineered_base"]
    assert bt["votes"] == 36 and bt["ties"] == 4 and bt["prompts"] == len(PROMPTS)
    assert bt["tie_strength"] > 0
    low, high = bt["scores"]["new"]["ci"]
    assert low <= bt["scores"]["new"]["score"] <= high
    vs_previous = human["win_rates"]["previous"]
    assert vs_previous["win_rate"] == pytest.approx((8 * 1 + 4 * 0.5) / 12)
    assert vs_previous["ties"] == 4
    assert human["win_rates"]["prompt_engineered_base"]["win_rate"] == 1.0
    assert human["style_pass_rate"]["new"]["rate"] == pytest.approx(9 / 12)
    assert human["style_pass_rate"]["previous"]["rate"] == pytest.approx(6 / 12)
    difference = human["differences"]["previous"]["style_pass_rate"]
    assert difference["estimate"] == pytest.approx(0.25) and difference["prompts"] == len(PROMPTS)
    assert human["style_pass_rate"]["prompt_engineered_base"]["ratings"] == 0


def test_preference_scores_are_summarised_per_model_with_prompt_intervals():
    rows = [
        {
            "prompt": f"p{i % 4}",
            "text_score": 0.1,
            "style_score": 0.2,
            "content_leakage": None,
            "preference": {"pickscore": 20.0 + i % 4},
        }
        for i in range(12)
    ]
    summary = eval_metrics.summarise({"rows": rows, "diversity_by_prompt": {}})
    pick = summary["preference"]["pickscore"]
    assert pick["mean"] == pytest.approx(21.5)
    assert pick["ci"][0] < 21.5 < pick["ci"][1]
    assert summary["content_leakage"] is None and summary["content_leakage_ci"] is None
