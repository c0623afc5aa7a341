"""Folders, archives, manifests and URLs turned into items; unsafe members refused, others kept."""

from __future__ import annotations

import csv
import io
import stat
import tarfile
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.ingestion.sources import (
    SourceError,
    SourceItem,
    SourceLimits,
    iter_items,
)
from tests.curation.ingestion.factories import encode, photo_jpeg, sticker_rgba

PNG = encode(sticker_rgba(size=24), "PNG")


def outcomes(items: list[SourceItem]) -> dict[str, bytes | str]:
    """origin -> bytes read, or the refusal reason."""
    found: dict[str, bytes | str] = {}
    for item in items:
        try:
            found[item.origin] = item.read()
        except SourceError as exc:
            found[item.origin] = str(exc)
    return found


def test_folders_are_walked_recursively_in_sorted_order_skipping_hidden(tmp_path):
    for name in ["b.png", "a.png", "sub/z.png", "sub/deeper/c.png", ".hidden.png", ".git/x.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(PNG)
    items = list(iter_items([tmp_path]))
    relative = [item.origin[len(str(tmp_path)) + 1 :] for item in items]
    # A folder's own files come before its sub-folders', each level sorted by name.
    assert relative == ["a.png", "b.png", "sub/z.png", "sub/deeper/c.png"]
    assert [item.origin for item in iter_items([tmp_path])] == [item.origin for item in items]
    assert all(item.read() == PNG for item in items)


def test_missing_path_is_a_refused_item_not_an_exception(tmp_path):
    [item] = iter_items([tmp_path / "nowhere"])
    assert item.refusal == "no such file or directory"


def make_zip(path, members: dict[str, bytes], symlinks: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)


def test_zip_slip_and_symlink_members_are_refused_while_good_members_go_through(tmp_path):
    archive = tmp_path / "pool.zip"
    make_zip(
        archive,
        {"good.png": PNG, "../evil.png": PNG, "/etc/abs.png": PNG, "dir/ok.png": PNG},
        symlinks={"link.png": "/etc/passwd"},
    )
    found = outcomes(list(iter_items([archive])))
    assert found[f"{archive}!good.png"] == PNG
    assert found[f"{archive}!dir/ok.png"] == PNG
    assert "path traversal" in found[f"{archive}!../evil.png"]
    assert "absolute path" in found[f"{archive}!/etc/abs.png"]
    assert "symbolic link" in found[f"{archive}!link.png"]


def test_zip_member_count_and_size_caps(tmp_path):
    archive = tmp_path / "many.zip"
    make_zip(archive, {f"{i}.png": PNG for i in range(5)} | {"big.png": b"x" * 5000})
    items = list(iter_items([archive], limits=SourceLimits(max_members=4, max_member_bytes=4000)))
    found = outcomes(items)
    assert [found[f"{archive}!{i}.png"] for i in range(4)] == [PNG] * 4
    assert found[str(archive)] == (
        "archive has 2 more members beyond the 4 member cap; they were not read"
    )

    limits = SourceLimits(max_member_bytes=4000, max_archive_bytes=len(PNG) * 2 + 10)
    found = outcomes(list(iter_items([archive], limits=limits)))
    assert "above the 4,000 bytes per-member limit" in found[f"{archive}!big.png"]
    assert found[f"{archive}!1.png"] == PNG
    assert "total uncompressed size would exceed" in found[f"{archive}!2.png"]


def test_not_a_zip_is_refused_with_a_reason(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip at all")
    [item] = iter_items([fake])
    assert item.refusal.startswith("not a readable zip archive")


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz")])
def test_tar_links_devices_and_traversal_are_refused(tmp_path, suffix, mode):
    archive = tmp_path / f"pool{suffix}"
    with tarfile.open(archive, mode) as tar:
        for name in ["a.png", "../up.png", "sub/b.png"]:
            info = tarfile.TarInfo(name)
            info.size = len(PNG)
            tar.addfile(info, io.BytesIO(PNG))
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
        hard = tarfile.TarInfo("hard.png")
        hard.type, hard.linkname = tarfile.LNKTYPE, "a.png"
        tar.addfile(hard)
        device = tarfile.TarInfo("dev.png")
        device.type = tarfile.CHRTYPE
        tar.addfile(device)
    found = outcomes(list(iter_items([archive])))
    assert found[f"{archive}!a.png"] == PNG and found[f"{archive}!sub/b.png"] == PNG
    assert "path traversal" in found[f"{archive}!../up.png"]
    assert "symbolic link to '/etc/shadow'" in found[f"{archive}!link.png"]
    assert "hard link" in found[f"{archive}!hard.png"]
    assert "device" in found[f"{archive}!dev.png"]


def test_truncated_tar_gz_keeps_members_read_before_the_damage(tmp_path):
    archive = tmp_path / "cut.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(3):
            data = photo_jpeg(i)
            info = tarfile.TarInfo(f"{i}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) * 2 // 3])
    items = list(iter_items([archive]))
    assert items[0].read()[:2] == b"\xff\xd8"
    assert "truncated or corrupt" in (items[-1].refusal or "")


def test_csv_manifest_with_missing_file_caption_and_relative_paths(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "good.png").write_bytes(PNG)
    manifest = tmp_path / "list.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_path", "caption"])
        writer.writerow(["imgs/good.png", "a red disc"])
        writer.writerow(["imgs/missing.png", ""])
        writer.writerow(["", "no path"])
        writer.writerow(["ftp://example.org/x.png", ""])
    items = list(iter_items([manifest]))
    assert [i.caption for i in items[:2]] == ["a red disc", None]
    found = outcomes(items)
    assert found[str(tmp_path / "imgs" / "good.png")] == PNG
    assert found[str(tmp_path / "imgs" / "missing.png")] == "no such file"
    assert found[f"{manifest}:row 4"] == "empty path/URL cell"
    assert "unsupported URL scheme" in found["ftp://example.org/x.png"]


def test_manifest_without_a_path_column_names_what_it_found(tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("name,size\nx,1\n")
    [item] = iter_items([manifest])
    assert "no path/URL column" in item.refusal and "found name, size" in item.refusal


def test_parquet_manifest(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    table = pa.table({"path": [str(tmp_path / "a.png"), "b.png"], "text": ["first", None]})
    pq.write_table(table, tmp_path / "m.parquet")
    items = list(iter_items([tmp_path / "m.parquet"]))
    assert [(i.origin, i.caption) for i in items] == [
        (str(tmp_path / "a.png"), "first"),
        (str(tmp_path / "b.png"), None),
    ]
    assert items[0].read() == PNG


def test_manifest_paths_and_file_urls_stay_inside_allowed_roots(tmp_path):
    inside, outside = tmp_path / "set", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    (inside / "a.png").write_bytes(PNG)
    (outside / "b.png").write_bytes(PNG)
    (inside / "link.png").symlink_to(outside / "b.png")
    manifest = inside / "list.csv"
    rows = ["a.png", "../elsewhere/b.png", str(outside / "b.png"), f"file://{outside}/b.png"]
    manifest.write_text("path\n" + "\n".join(rows + ["link.png"]) + "\n")
    found = outcomes(list(iter_items([manifest])))
    assert found[str(inside / "a.png")] == PNG
    refused = {o: r for o, r in found.items() if isinstance(r, str)}
    assert len(refused) == 4 and all("INGEST_LOCAL_ROOTS" in r for r in refused.values())
    allowed = SourceLimits(manifest_roots=(str(outside),))
    found = outcomes(list(iter_items([manifest], limits=allowed)))
    assert len(found) == 4 and set(found.values()) == {PNG}
