"""The grid's one-pass freeze writes the manifest on a worker thread while the rows go into the
database: a failure on either side leaves nothing behind, and each image of a frozen row is
still guaranteed by the database."""

from __future__ import annotations

import threading

import pytest
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction

from curation.models import DatasetItem, DatasetVersion, Image, Recipe
from curation.services import freeze_pass, manifests
from curation.services.recipes import run_recipe_job, start_recipe_run
from curation.services.review import freeze_domain_version
from curation.services.versions import build_manifest

pytestmark = pytest.mark.django_db


@pytest.fixture
def accepted_run(pool, monkeypatch):
    """A run with all 20 images accepted, read back 3 rows a batch (7 batches)."""
    monkeypatch.setattr(manifests, "MANIFEST_BATCH_ROWS", 3)
    recipe = Recipe.objects.create(name="overlap", labelling_functions=[], top_k=20)
    run = run_recipe_job(start_recipe_run(recipe, run_async=False))
    run.scores.update(decision="accepted")
    return run


def _stored_manifests() -> list[str]:
    if not default_storage.exists("manifests"):
        return []
    folders, files = default_storage.listdir("manifests")
    found = list(files)
    for folder in folders:
        found += [f"{folder}/{name}" for name in default_storage.listdir(f"manifests/{folder}")[1]]
    return sorted(found)


def _fails_on_call(number: int, real):
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == number:
            raise OSError(f"injected failure on call {number}")
        return real(*args, **kwargs)

    return failing


def _assert_nothing_left(before_files: list[str]) -> None:
    assert not DatasetVersion.objects.filter(dataset__name="overlap").exists()
    assert not DatasetItem.objects.exists()
    assert _stored_manifests() == before_files
    assert not [t for t in threading.enumerate() if t.name == "manifest-writer"]


def test_the_freeze_writes_the_manifest_of_its_rows(accepted_run):
    version = freeze_domain_version(accepted_run, dataset_name="overlap", reason="test")
    assert version.row_count == 20 == version.items.count()
    assert build_manifest(version) == default_storage.open(version.manifest_path).read()


def test_a_failure_writing_the_manifest_leaves_no_version_rows_or_file(accepted_run, monkeypatch):
    before = _stored_manifests()
    monkeypatch.setattr(freeze_pass, "manifest_part", _fails_on_call(2, freeze_pass.manifest_part))
    with pytest.raises(RuntimeError, match="writing the manifest failed: injected failure"):
        freeze_domain_version(accepted_run, dataset_name="overlap", reason="test")
    _assert_nothing_left(before)


def test_a_failure_writing_the_rows_leaves_no_version_rows_or_file(accepted_run, monkeypatch):
    before = _stored_manifests()
    # PostgreSQL copies each batch as it is read; SQLite inserts all rows by one statement.
    monkeypatch.setattr(freeze_pass, "_copy_items", _fails_on_call(3, freeze_pass._copy_items))
    monkeypatch.setattr(
        freeze_pass, "_insert_selected", _fails_on_call(1, freeze_pass._insert_selected)
    )
    with pytest.raises(OSError, match="injected failure"):
        freeze_domain_version(accepted_run, dataset_name="overlap", reason="test")
    _assert_nothing_left(before)


def test_an_image_of_a_frozen_row_cannot_be_deleted_behind_djangos_back(accepted_run, pool):
    """The key to the image keeps its database constraint (the key to the version does not):
    deleting the image by SQL, as a racing transaction or a script would, is refused."""
    version = freeze_domain_version(accepted_run, dataset_name="overlap", reason="test")
    image = pool["stickers"][0]
    assert version.items.filter(image=image).exists()
    table = connection.ops.quote_name(Image._meta.db_table)
    with pytest.raises(IntegrityError), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE id = %s", [image.pk])
        connection.check_constraints(table_names=[DatasetItem._meta.db_table])
    assert version.items.filter(image=image).exists()
