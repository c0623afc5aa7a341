"""Analysis job and split with the real all-MiniLM-L6-v2 (bundled, offline) on a planted set."""

from __future__ import annotations

import pytest

from curation.models import Job, Prompt, PromptSet
from curation.prompts.embeddings import PromptEmbedder
from curation.prompts.splits import check_split_leaks
from curation.services.jobs import enqueue_job, execute_job
from curation.services.prompts import remove_near_duplicates, split_prompt_set

THRESHOLD = 0.85
PARAPHRASES = [
    ("a happy corgi wearing sunglasses on a beach", "a cheerful corgi in sunglasses at the beach"),
    ("an astronaut riding a horse on the moon", "an astronaut on horseback on the moon"),
    ("a red fox sleeping under a tree in autumn", "a red fox asleep beneath a tree in the fall"),
    (
        "a cup of coffee with latte art shaped like a heart",
        "a coffee cup with heart-shaped latte art",
    ),
    (
        "a robot watering plants in a greenhouse",
        "A robot watering plants in a greenhouse!",
    ),  # exact
]
DISTINCT = [
    "a dragon made of clouds over mountains",
    "a bowl of ramen with chopsticks",
    "a penguin skateboarding down a street",
    "a lighthouse in a storm at night",
    "a cat playing the piano",
    "a stack of pancakes with blueberries",
    "a wizard reading a glowing book",
    "a hot air balloon over a desert",
    "a koala hugging a eucalyptus branch",
    "a snowman holding an umbrella",
]


@pytest.fixture
def planted() -> PromptSet:
    prompt_set = PromptSet.objects.create(name="planted")
    texts = [t for pair in PARAPHRASES for t in pair] + DISTINCT
    Prompt.objects.bulk_create(Prompt(prompt_set=prompt_set, text=t) for t in texts)
    return prompt_set


@pytest.mark.django_db
def test_analyse_job_flags_planted_paraphrases(planted, data_lead):
    job = enqueue_job(
        "prompts.analyse",
        params={"prompt_set_id": planted.pk, "threshold": THRESHOLD},
        user=data_lead,
        target=planted,
    )
    execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.queue == "cpu" and job.result["duplicates"] == len(PARAPHRASES)

    by_text = {p.text: p for p in planted.prompts.all()}
    flagged = {p.text: p.near_duplicate_of.text for p in by_text.values() if p.near_duplicate_of}
    # Precision and recall are both 1: exactly the second of each planted pair points at the first.
    assert flagged == {second: first for first, second in PARAPHRASES}

    planted.refresh_from_db()
    analysis = planted.stats["analysis"]
    assert analysis["exact_groups"] == 1 and analysis["near_groups"] == len(PARAPHRASES)
    assert all(group["size"] == 2 for group in analysis["largest_groups"])
    assert 0.5 < analysis["diversity"]["mean_pairwise_distance"] < 1.0

    assert remove_near_duplicates(planted) == len(PARAPHRASES)
    assert planted.prompts.count() == len(PARAPHRASES) + len(DISTINCT)
    assert not planted.prompts.filter(near_duplicate_of__isnull=False).exists()


@pytest.mark.django_db
def test_split_is_leak_free_and_both_halves_frozen(planted):
    generation, evaluation = split_prompt_set(
        planted, eval_fraction=0.3, seed=3, threshold=THRESHOLD
    )
    assert generation.frozen and evaluation.frozen
    assert generation.parent_id == planted.pk == evaluation.parent_id
    assert (generation.name, generation.version) == ("planted", 2)
    assert (evaluation.name, evaluation.purpose) == ("planted-eval", "evaluation")
    gen_texts = [p.text for p in generation.prompts.all()]
    eval_texts = [p.text for p in evaluation.prompts.all()]
    assert sorted(gen_texts + eval_texts) == sorted(p.text for p in planted.prompts.all())
    assert len(eval_texts) == 6
    for first, second in PARAPHRASES:
        assert (first in gen_texts) == (second in gen_texts), f"{first!r} crosses the split"
    embedder = PromptEmbedder()
    leaks = check_split_leaks(embedder.embed(gen_texts), embedder.embed(eval_texts), THRESHOLD)
    assert leaks == []
    assert generation.stats["split"]["leaks"] == 0
