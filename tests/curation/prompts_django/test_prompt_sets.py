"""Prompt sets on the Django side without the sentence model: import, templates, freeze, roles."""

from __future__ import annotations

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from curation.models import Job, Prompt, PromptSet
from curation.models.prompts import FrozenPromptSetError
from curation.services.prompts import (
    expand_template,
    freeze_prompt_set,
    import_prompt_file,
    remove_near_duplicates,
)

LONG = " ".join(["sticker"] * 90)
CSV = (
    b"prompt,category,tags\n"
    b"a corgi in sunglasses,animals,dog;beach\n"
    b",animals,\n"
    b"a caf\xe9 at dusk,places,\n"
    b'"' + LONG.encode() + b'",misc,\n'
    b"a fox asleep under a tree,animals,fox\n"
)
SLOTS = {
    "subject": ["a corgi:3", "a fox"],
    "action": ["dancing", "sleeping"],
    "emotion": ["happy", "sad"],
}


def _run_import(path, *args: str) -> dict:
    out = io.StringIO()
    call_command("import_prompts", str(path), "--name", "animals", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.django_db
def test_import_command_keeps_good_rows_and_reports_bad_lines(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_bytes(CSV)
    first = _run_import(path)
    assert first["prompts"] == 2 and first["version"] == 1
    bad = {(e["line"], e["field"]) for e in first["errors"]}
    assert bad == {(3, "prompt"), (4, "prompt"), (5, "prompt")}
    assert "UTF-8" in next(e["message"] for e in first["errors"] if e["line"] == 4)
    assert "tokens" in next(e["message"] for e in first["errors"] if e["line"] == 5)
    prompt_set = PromptSet.objects.get(pk=first["prompt_set"])
    assert [p.text for p in prompt_set.prompts.all()] == [
        "a corgi in sunglasses",
        "a fox asleep under a tree",
    ]
    assert prompt_set.prompts.first().tags == ["dog", "beach"]
    assert prompt_set.stats["import"]["bad_rows"] == 3

    second = _run_import(path, "--purpose", "evaluation")
    newer = PromptSet.objects.get(pk=second["prompt_set"])
    assert (newer.version, newer.parent_id, newer.purpose) == (2, prompt_set.pk, "evaluation")


@pytest.mark.django_db
def test_import_of_only_bad_rows_makes_no_version(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"\n\xff\xfe broken\n")
    with pytest.raises(CommandError, match="line 2"):
        call_command("import_prompts", str(path), "--name", "bad", stdout=io.StringIO())
    assert not PromptSet.objects.filter(name="bad").exists()


@pytest.mark.django_db
def test_template_expansion_stores_slots_and_is_seeded(data_lead):
    everything = expand_template("scenes", "{subject} {action}, {emotion}", SLOTS, user=data_lead)
    prompts = list(everything.prompts.all())
    assert len(prompts) == 8 and everything.version == 1
    assert prompts[0].text == "a corgi dancing, happy"
    assert prompts[0].slots == {"subject": "a corgi", "action": "dancing", "emotion": "happy"}
    assert prompts[0].subject == "a corgi"
    assert len({p.text for p in prompts}) == 8

    one = expand_template("scenes", "{subject} {action}, {emotion}", SLOTS, n=5, seed=7)
    two = expand_template("scenes", "{subject} {action}, {emotion}", SLOTS, n=5, seed=7)
    texts = [[p.text for p in s.prompts.all()] for s in (one, two)]
    assert len(texts[0]) == 5 and texts[0] == texts[1]
    assert (two.version, two.parent_id) == (3, one.pk)
    assert all(p.slots["emotion"] in p.text for p in one.prompts.all())


@pytest.mark.django_db
def test_frozen_prompt_set_is_immutable(data_lead, client):
    prompt_set = expand_template("frozen", "{subject} {action}", SLOTS)
    prompt = prompt_set.prompts.first()
    freeze_prompt_set(prompt_set, user=data_lead)
    prompt.text = "changed"
    with pytest.raises(FrozenPromptSetError):
        prompt.save()
    with pytest.raises(FrozenPromptSetError):
        prompt.delete()
    with pytest.raises(FrozenPromptSetError):
        Prompt.objects.create(prompt_set=prompt_set, text="new")
    prompt_set.description = "edited"
    with pytest.raises(FrozenPromptSetError):
        prompt_set.save()
    with pytest.raises(FrozenPromptSetError):
        prompt_set.delete()
    with pytest.raises(ValueError, match="frozen"):
        remove_near_duplicates(prompt_set)
    with pytest.raises(ValueError, match="already frozen"):
        freeze_prompt_set(prompt_set)
    assert Prompt.objects.get(pk=prompt.pk).text != "changed"

    client.force_login(data_lead)
    page = client.get(reverse("admin:curation_promptset_change", args=[prompt_set.pk]))
    assert page.status_code == 200
    assert b'name="description"' not in page.content  # every field read-only
    assert b"prompts-0-text" not in page.content  # inline prompts not editable


@pytest.mark.django_db
def test_api_refuses_edits_of_frozen_prompts(api_client, data_lead):
    prompt_set = expand_template("api-frozen", "{subject} {action}", SLOTS)
    freeze_prompt_set(prompt_set)
    api_client.force_authenticate(data_lead)
    prompt = prompt_set.prompts.first()
    url = reverse("prompt-detail", args=[prompt.pk])
    assert api_client.patch(url, {"text": "x"}, format="json").status_code == 409
    assert api_client.delete(url).status_code == 409
    assert api_client.delete(reverse("promptset-detail", args=[prompt_set.pk])).status_code == 409


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["freeze", "analyse", "split"])
def test_api_actions_per_role(api_client, annotator, data_lead, action):
    prompt_set = expand_template("roles", "{subject} {action}", SLOTS)
    url = reverse(f"promptset-{action}", args=[prompt_set.pk])
    api_client.force_authenticate(annotator)
    assert api_client.post(url, {}, format="json").status_code == 403
    api_client.force_authenticate(data_lead)
    response = api_client.post(url, {"threshold": 0.8}, format="json")
    if action == "freeze":
        assert response.status_code == 200 and response.json()["frozen"] is True
        assert api_client.post(url, {}, format="json").status_code == 409
    else:
        assert response.status_code == 202
        job = Job.objects.get(pk=response.json()["id"])
        assert job.kind == f"prompts.{action}" and job.queue == "cpu"
        assert job.params["prompt_set_id"] == prompt_set.pk and job.params["threshold"] == 0.8
    prompt_set.refresh_from_db()
    assert prompt_set.frozen is (action == "freeze")


@pytest.mark.django_db
def test_admin_import_upload(client, data_lead):
    client.force_login(data_lead)
    url = reverse("admin:curation_promptset_import")
    assert client.get(url).status_code == 200
    upload = SimpleUploadedFile("batch.jsonl", b'{"prompt": "a corgi"}\n{"prompt": ""}\n')
    response = client.post(
        url, {"file": upload, "name": "uploaded", "purpose": "generation", "format": ""}
    )
    prompt_set = PromptSet.objects.get(name="uploaded")
    assert response.status_code == 302 and str(prompt_set.pk) in response["Location"]
    assert [p.text for p in prompt_set.prompts.all()] == ["a corgi"]
    assert prompt_set.stats["import"]["errors"] == ["line 2, prompt: empty"]


def test_import_service_needs_a_format_for_bytes():
    with pytest.raises(ValueError, match="suffix"):
        import_prompt_file(b"a corgi\n", "x")


@pytest.mark.django_db
def test_admin_shows_analysis_and_freezes(client, data_lead):
    prompt_set = expand_template("admin", "{subject} {action}", SLOTS)
    analysis = {
        "prompts": 4,
        "threshold": 0.9,
        "exact_groups": 0,
        "near_groups": 1,
        "duplicates": 1,
        "diversity": {"mean_pairwise_distance": 0.4321, "cluster_coverage": 1.0},
        "largest_groups": [{"size": 2, "texts": ["a corgi dancing", "a corgi dances"]}],
    }
    PromptSet.objects.filter(pk=prompt_set.pk).update(stats={"analysis": analysis})
    client.force_login(data_lead)
    page = client.get(reverse("admin:curation_promptset_change", args=[prompt_set.pk]))
    assert b"0.432" in page.content and b"a corgi dancing | a corgi dances" in page.content
    changelist = reverse("admin:curation_promptset_changelist")
    client.post(changelist, {"action": "freeze", "_selected_action": [prompt_set.pk]})
    prompt_set.refresh_from_db()
    assert prompt_set.frozen
    client.post(changelist, {"action": "analyse", "_selected_action": [prompt_set.pk]})
    assert Job.objects.filter(kind="prompts.analyse", target_id=prompt_set.pk).exists()
