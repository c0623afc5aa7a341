"""Benchmark: the platform's pages and jobs on synthetic pools of 10k, 100k and 1M images.

Usage: python bench/scale.py [--quick | --full] [--sizes 10000,100000] [--database-url URL]
       [--pages-only]  (admin list and deep review page only; scores inserted by SQL)
       [--keep DIR]  (build each size's pool once into DIR, measure on a copy of it)
       [--skip recipe,export]  (scores inserted by SQL instead of a recipe run; no export)
Default sizes 10,000 and 100,000 (a few minutes on 2 cores); --full adds 1,000,000 (tens of
minutes: the rows are really inserted); --quick 2,000 and 10,000. Each size runs in its own
process on a fresh database (a new SQLite file, or a new PostgreSQL database named after the
--database-url one with `_<size>` appended, dropped afterwards).

A pool is rows, not files: N Image rows (a handful of real stored PNGs shared by all, so
thumbnails and exports have bytes to read), their cached LF features, and an embedding space
with N synthetic vectors in shards. Per size it times, in this order:
- admin_list_s: the images admin changelist (superuser, first page), best of 5 after a warm-up,
  alternating with admin_reference_s: the first grid page of a 100-row run (see _reference_page);
- recipe_run_s: the built-in heuristics recipe over the whole pool (features read back from the
  cache, label model, N RecipeScore rows written);
- review_page_s: a review grid page 90 % deep into that run (keyset cursor), best of 5,
  alternating with page_reference_s (the same reference page);
- freeze_review_s: `freeze_domain_version`, what the grid's freeze button runs, with every image
  of the run accepted and two text queries to caption them by (draft, N rows, captions,
  manifest, checksum);
- insert_rows_bare_s: the same N rows copied into another draft by one INSERT … SELECT (the
  cheapest way to write them);
- freeze_s: `freeze_version` of that draft (manifest read back, checksum, diff), vs
  pyarrow_manifest_s: a plain cursor reading the same rows 50,000 at a time, one Arrow
  conversion per batch, sorted by sha256 in Arrow and written by pyarrow's ParquetWriter with
  the same schema and options — asserted to be the very bytes both freezes stored;
- export_parquet_s: the Parquet export of the frozen version (image bytes embedded per row).
The last line is one JSON object: per-size figures and the ratios `admin_list_1m_vs_10k`,
`review_page_1m_vs_10k` (largest size vs smallest when 1M was not run; the key says which;
`…_same_load` divides each size's time by its own reference page first)
and `freeze_1m_vs_pyarrow` (freeze_review_s / pyarrow_manifest_s at the largest size; the
freeze step alone is `freeze_version_1m_vs_pyarrow`, freeze_s / pyarrow_manifest_s;
`freeze_1m_vs_bare_same_work` divides by a baseline that also writes the rows,
insert_rows_bare_s + pyarrow_manifest_s: the grid's freeze must write them, the manifest alone
need not).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scale_measure import run_size  # noqa: E402  (beside this script; ROOT first, for Django)


def _pg_admin(base_url: str) -> tuple[str, str, Any]:
    """(URL head, database name, a function running one autocommit statement on the server)."""
    import psycopg

    head, name = base_url.rsplit("/", 1)

    def run(sql: str) -> None:
        with psycopg.connect(f"{head}/postgres", autocommit=True) as conn:
            conn.execute(sql)

    return head, name, run


def _database_for(base_url: str | None, n: int, var_dir: Path) -> tuple[str, Any]:
    """A fresh database URL for one size, and a function that drops it afterwards."""
    if not base_url or base_url.startswith("sqlite"):
        return f"sqlite:///{var_dir / 'scale.sqlite3'}", lambda: None
    head, name, run = _pg_admin(base_url)
    name = f"{name}_{n}"
    run(f'DROP DATABASE IF EXISTS "{name}"')
    run(f'CREATE DATABASE "{name}"')
    return f"{head}/{name}", lambda: run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _spawn(n: int, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"size {n} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(n: int, url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"scale-{n}-") as folder:
        var_dir = Path(folder)
        database, drop = _database_for(url, n, var_dir)
        env = {**os.environ, "DATABASE_URL": database, "PLATFORM_VAR_DIR": folder}
        try:
            return _spawn(n, env)
        finally:
            drop()


def _kept_child(n: int, url: str | None, keep: Path) -> dict[str, Any]:
    """--keep DIR: the pool of each (database, size) is built once into DIR and kept pristine
    (a SQLite file, or a PostgreSQL database `<name>_<size>_pool`); every run measures on a
    copy of it (SQLite's backup API, or `CREATE DATABASE … TEMPLATE`), so the 1M pool's
    minutes of inserts are paid once per machine, not once per measurement."""
    import sqlite3

    postgres = bool(url) and not url.startswith("sqlite")
    folder = keep / (f"postgresql-{url.rsplit('/', 1)[1]}-{n}" if postgres else f"sqlite-{n}")
    var_dir = folder / "var"
    var_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PLATFORM_VAR_DIR": str(var_dir), "SCALE_REUSE_POOL": "1"}
    if postgres:
        head, name, run = _pg_admin(url)
        pool, work = f"{name}_{n}_pool", f"{name}_{n}"
        pool_url = f"{head}/{pool}"
    else:
        pool_file, work_file = folder / "pool.sqlite3", var_dir / "scale.sqlite3"
        pool_url = f"sqlite:///{pool_file}"
    built_now = not (var_dir / "pool.json").exists()
    if built_now:
        if postgres:
            run(f'DROP DATABASE IF EXISTS "{pool}"')
            run(f'CREATE DATABASE "{pool}"')
        else:
            pool_file.unlink(missing_ok=True)
        _spawn(n, {**env, "DATABASE_URL": pool_url, "SCALE_BUILD_ONLY": "1"})
    if postgres:
        run(f'DROP DATABASE IF EXISTS "{work}" WITH (FORCE)')
        run(f'CREATE DATABASE "{work}" TEMPLATE "{pool}"')
        database = f"{head}/{work}"
    else:
        with sqlite3.connect(pool_file) as source, sqlite3.connect(work_file) as target:
            source.backup(target)
        database = f"sqlite:///{work_file}"
    try:
        return {**_spawn(n, {**env, "DATABASE_URL": database}), "pool_reused": not built_now}
    finally:
        if postgres:
            run(f'DROP DATABASE IF EXISTS "{work}" WITH (FORCE)')
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{work_file}{suffix}").unlink(missing_ok=True)
        shutil.rmtree(var_dir / "export", ignore_errors=True)


def _ratio(figures: dict[int, dict[str, Any]], key: str) -> tuple[str, float]:
    small, large = min(figures), max(figures)
    label = "1m" if large == 1_000_000 else f"{large // 1000}k"
    base = "10k" if small == 10_000 else f"{small // 1000}k"
    return f"{label}_vs_{base}", round(figures[large][key] / figures[small][key], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2,000 and 10,000 images")
    mode.add_argument("--full", action="store_true", help="10k, 100k and 1M images")
    parser.add_argument("--sizes", default=None, help="comma-separated pool sizes")
    parser.add_argument("--database-url", default=None, help="PostgreSQL base URL (default SQLite)")
    parser.add_argument(
        "--pages-only",
        action="store_true",
        help="only the admin list and a deep review page (scores inserted by SQL, no jobs)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="build each size's pool once into DIR and measure on copies of it",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated jobs not to time: recipe (scores inserted by SQL), export",
    )
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_size(args.child, Path(os.environ["PLATFORM_VAR_DIR"]))))
        return
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [2_000, 10_000] if args.quick else [10_000, 100_000]
        if args.full:
            sizes.append(1_000_000)
    if args.pages_only:
        os.environ["SCALE_PAGES_ONLY"] = "1"
    unknown = set(filter(None, args.skip.split(","))) - {"recipe", "export"}
    if unknown:
        parser.error(f"--skip: unknown step(s) {sorted(unknown)}; choose recipe, export")
    os.environ["SCALE_SKIP"] = args.skip
    started = time.perf_counter()
    figures: dict[int, dict[str, Any]] = {}
    for n in sizes:
        figures[n] = (
            _kept_child(n, args.database_url, args.keep)
            if args.keep
            else _child(n, args.database_url)
        )
        print(f"{n:>9} images: " + ", ".join(f"{k} {v}" for k, v in figures[n].items()), flush=True)
    largest = figures[max(figures)]
    admin_key, admin_ratio = _ratio(figures, "admin_list_s")
    page_key, page_ratio = _ratio(figures, "review_page_s")
    summary = {
        "bench": "scale",
        "database": largest["database"],
        "sizes": sizes,
        f"admin_list_{admin_key}": admin_ratio,
        f"review_page_{page_key}": page_ratio,
    }
    # The same ratios with each size's time over its own reference page (measured alternately
    # with it): what is left is the growth, not the load the cores carried at the time.
    for name, reference in (
        ("admin_list", "admin_reference_s"),
        ("review_page", "page_reference_s"),
    ):
        if all(reference in f for f in figures.values()):
            key, ratio = _ratio(
                {n: {"q": f[f"{name}_s"] / f[reference]} for n, f in figures.items()}, "q"
            )
            summary[f"{name}_{key}_same_load"] = ratio
    if "freeze_s" in largest:
        size = "1m" if max(figures) == 1_000_000 else f"{max(figures) // 1000}k"
        baseline = largest["pyarrow_manifest_s"]
        summary[f"freeze_{size}_vs_pyarrow"] = round(largest["freeze_review_s"] / baseline, 3)
        summary[f"freeze_version_{size}_vs_pyarrow"] = round(largest["freeze_s"] / baseline, 3)
        both = baseline + largest["insert_rows_bare_s"]
        summary[f"freeze_{size}_vs_bare_same_work"] = round(largest["freeze_review_s"] / both, 3)
    summary |= {
        "per_size": {str(n): f for n, f in figures.items()},
        "total_s": round(time.perf_counter() - started, 1),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
