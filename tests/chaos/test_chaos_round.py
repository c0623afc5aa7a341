"""Chaos: the whole demo round finishes, identical to an undisturbed one, while workers are killed.

The round (tests/chaos/demo_round.py: ingest → embed → index → recipe → freeze → train →
generate → Label Studio push → ratings by the demo script → curate → retrain round, against the
session's real Label Studio) runs three times on fresh databases: once undisturbed (the
reference, database backend on SQLite), then once per backend while a controller SIGKILLs the
worker running a job (with its work horse) every few seconds, once per stage, and — on RQ with
PostgreSQL — restarts the private Redis once (losing every queued task) and the private
PostgreSQL once. Two workers and a scheduler serve each run, restarted by a supervisor when they
die, as systemd would. Then: every table's row count, every frozen manifest's checksum and every
generated image equal the reference's, every job succeeded, and no job was completed by more
than one attempt. The demo's pseudo-ratings depend on image content and usernames only, so the
disturbed runs rate exactly what the reference rated.

Cost: measured 2026-12-02 on the shared 2-core dev machine at load average 13–15 (six sessions):
the module took 18 min 53 s wall (reference round 274 s, RQ/PostgreSQL chaos round 342 s, SQLite
chaos round 234 s, the rest Label Studio start-up, initdb and migrations) and 398 s of CPU (user
+ sys of pytest and the processes it waited for); a second run at load 10–12: 15 min 18 s, 313 s
of CPU (rounds 154 / 372 / 250 s). Alone on an idle 2-core machine that is about 5–7 minutes for
both tests: the CPU spread over two cores plus the stale-heartbeat waits of ~15 kills (6 s each). The round is already minimal: tiny model, 4 + 2 training steps, 6 prompts × 1
seed, 32 px; what remains is mostly worker boots (~5 s of CPU each, Django importing torch).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from curation.labelstudio.server import free_port
from tests.chaos.infra import Fleet, PrivatePostgres, PrivateRedis, running_job_pids
from tests.conftest import PYTHON, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]

KILL_EVERY = (2.0, 4.0)
# One kill per stage spreads them over every kind of job; each costs the stale wait and a worker
# boot, so more would mostly buy minutes of CI.
KILLS_PER_STAGE = 1
SEED = 14
# The database backend needs no Redis; nothing listens here, so a stray use fails at once.
NO_REDIS = "redis://127.0.0.1:1/0"
# Short enough that a killed worker's job is taken over within seconds.
JOB_TIMINGS = {
    "JOB_HEARTBEAT_SECONDS": "0.5",
    "JOB_HEARTBEAT_GIVE_UP_SECONDS": "3",
    "JOB_STALE_AFTER_SECONDS": "6",
    "JOB_RETRY_BACKOFF_SECONDS": "0.5",
    "JOB_DISPATCH_GRACE_SECONDS": "3",
    "JOB_MAX_ATTEMPTS": "30",
}


def _env(database_url: str, backend: str, redis_url: str, ls, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO"))}
    env.update(
        JOB_TIMINGS,
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=database_url,
        CONN_MAX_AGE="0",
        TASK_BACKEND=backend,
        TEST_REDIS_URL=redis_url,
        MEDIA_ROOT=str(folder / "media"),
        ARTIFACTS_ROOT=str(folder / "artifacts"),
        LABEL_STUDIO_URL=ls.url,
        LABEL_STUDIO_API_KEY=ls.token,
        LABEL_STUDIO_ADMIN_EMAIL=ls.username,
        LABEL_STUDIO_ADMIN_PASSWORD=ls.password,
        LABEL_STUDIO_WEBHOOK_SECRET="chaos",
        # Nothing listens there: Label Studio's webhooks fail fast; reconcile is the record.
        PLATFORM_PUBLIC_URL=f"http://127.0.0.1:{free_port()}",
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="INFO",
    )
    return env


class Chaos(threading.Thread):
    """SIGKILLs a random worker every few seconds; restarts Redis and PostgreSQL once each."""

    def __init__(
        self,
        fleet: Fleet,
        status: Path,
        database_url: str,
        redis: PrivateRedis | None,
        postgres: PrivatePostgres | None,
    ) -> None:
        super().__init__(daemon=True)
        self.fleet, self.status, self.redis, self.postgres = fleet, status, redis, postgres
        self.database_url = database_url
        self.rng = random.Random(SEED)
        self.done = threading.Event()
        self.events: list[str] = []

    def stage(self) -> str:
        try:
            return self.status.read_text()
        except FileNotFoundError:
            return ""

    def run(self) -> None:
        per_stage: dict[str, int] = {}
        while not self.done.wait(self.rng.uniform(*KILL_EVERY)):
            stage = self.stage()
            if not stage.startswith("waiting:"):
                continue
            if self.postgres and stage in ("waiting:train", "waiting:retrain"):
                self.postgres.restart()
                self.events.append(f"postgres restarted during {stage}")
                self.postgres = None
            elif self.redis and stage in ("waiting:embed", "waiting:generate", "waiting:recipe"):
                self.redis.restart()
                self.events.append(f"redis restarted during {stage}")
                self.redis = None
            elif per_stage.get(stage, 0) < KILLS_PER_STAGE:
                pids = running_job_pids(self.database_url)
                name = self.fleet.kill_worker_running(pids, self.rng)
                if name:
                    self.events.append(f"killed {name} during {stage}")
                    per_stage[stage] = per_stage.get(stage, 0) + 1


def _migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def _sqlite_copy(schema: Path, folder: Path) -> str:
    (folder / "db.sqlite3").write_bytes(schema.read_bytes())
    return f"sqlite:///{folder}/db.sqlite3"


def _round(
    backend: str,
    database_url: str,
    redis_url: str,
    ls,
    chaos: bool,
    folder: Path,
    redis: PrivateRedis | None = None,
    postgres: PrivatePostgres | None = None,
) -> dict:
    (folder / "logs").mkdir()
    env = _env(database_url, backend, redis_url, ls, folder)
    if not database_url.startswith("sqlite:"):  # SQLite rounds start from a migrated copy
        _migrate(env)
    fleet = Fleet(env, folder / "logs")
    status = folder / "status"
    controller = Chaos(fleet, status, database_url, redis, postgres) if chaos else None
    fleet.start()
    if controller:
        controller.start()
    started = time.monotonic()
    try:
        driver = subprocess.run(
            [
                PYTHON,
                "-m",
                "tests.chaos.demo_round",
                str(folder / "out.json"),
                str(status),
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        if controller:
            controller.done.set()
            controller.join(30)
        fleet.stop()
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in (folder / "logs").iterdir())
    assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-5000:] + logs
    report = json.loads((folder / "out.json").read_text())
    report["completions"] = fleet.completions()
    report["events"] = controller.events if controller else []
    report["kills"] = len(fleet.kills)
    report["seconds"] = round(time.monotonic() - started)
    print(
        f"{backend} {'chaos' if chaos else 'calm'} round: {report['seconds']} s, "
        f"stages: {report['stages']}, events: {report['events']}"
    )
    return report


def _compare(calm: dict, stormy: dict) -> None:
    assert stormy["counts"] == calm["counts"]
    assert stormy["frozen"] == calm["frozen"] and calm["frozen"]
    assert stormy["generated"] == calm["generated"] and calm["generated"]
    assert all(j["status"] == "succeeded" for j in stormy["jobs"]), stormy["jobs"]
    twice = {job: n for job, n in stormy["completions"].items() if n > 1}
    assert not twice, f"jobs completed by more than one attempt: {twice}"
    retried = [j for j in stormy["jobs"] if j["attempt"] > 1]
    assert retried, "no job was ever interrupted: the chaos did nothing"


@pytest.fixture(scope="module")
def sqlite_schema(ls_server, tmp_path_factory) -> Path:
    """A migrated SQLite database that each SQLite round copies: a migrate costs ~18 s of CPU."""
    folder = tmp_path_factory.mktemp("chaos-schema")
    _migrate(_env(f"sqlite:///{folder}/db.sqlite3", "database", NO_REDIS, ls_server, folder))
    assert not (folder / "db.sqlite3-wal").exists(), "the migrated copy must be one file"
    return folder / "db.sqlite3"


@pytest.fixture(scope="module")
def calm(ls_server, sqlite_schema, tmp_path_factory) -> dict:
    """The undisturbed reference, run once for both chaos tests: the database backend on SQLite.

    Its outcome is the backend's business no more than the chaos's: an RQ/PostgreSQL round must
    leave exactly the same rows, manifests and images (the calm rounds of both backends were
    compared equal when this was written), so one reference serves both and saves a round.
    """
    folder = tmp_path_factory.mktemp("chaos-calm")
    database = _sqlite_copy(sqlite_schema, folder)
    return _round("database", database, NO_REDIS, ls_server, False, folder)


@pytest.mark.redis
def test_demo_round_survives_chaos_on_rq_and_postgresql(calm, ls_server, tmp_path):
    postgres = PrivatePostgres()
    redis = PrivateRedis()
    try:
        stormy = _round(
            "rq",
            postgres.create_database("stormy"),
            redis.url,
            ls_server,
            chaos=True,
            folder=tmp_path,
            redis=redis,
            postgres=postgres,
        )
    finally:
        redis.stop()
        postgres.stop()
    assert any("redis restarted" in e for e in stormy["events"]), stormy["events"]
    assert any("postgres restarted" in e for e in stormy["events"]), stormy["events"]
    _compare(calm, stormy)


def test_demo_round_survives_chaos_on_the_database_backend_with_sqlite(
    calm, ls_server, sqlite_schema, tmp_path
):
    database = _sqlite_copy(sqlite_schema, tmp_path)
    stormy = _round("database", database, NO_REDIS, ls_server, True, tmp_path)
    _compare(calm, stormy)
