"""Test settings: the local stack, fast hashing, a per-run media folder, a file test database."""

import os
import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import DATABASES, JOB_HANDLER_MODULES, JOB_QUEUES, STATIC_ROOT, STORAGES, VAR_DIR, env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=tempfile.mkdtemp(prefix="platform-test-media-")))
# Job working files per test process too, so two runs never resume each other's run folders.
ARTIFACTS_ROOT = Path(
    env.str("ARTIFACTS_ROOT", default=tempfile.mkdtemp(prefix="platform-test-artifacts-"))
)
EMBEDDINGS_ROOT = ARTIFACTS_ROOT / "embeddings"
INDEXES_ROOT = ARTIFACTS_ROOT / "indexes"
EXPORTS_ROOT = ARTIFACTS_ROOT / "exports"
TRAINING_RUNS_DIR = ARTIFACTS_ROOT / "runs"
TRAINING_MODELS_DIR = ARTIFACTS_ROOT / "models"
TRAINING_CACHE_DIR = ARTIFACTS_ROOT / "cache" / "training"
INGEST_UPLOAD_DIR = ARTIFACTS_ROOT / "ingest-uploads"
if STORAGES["default"]["BACKEND"].endswith("FileSystemStorage"):
    STORAGES["default"]["OPTIONS"]["location"] = str(MEDIA_ROOT)

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not :memory:, so worker subprocesses started by tests see the same database;
    # one per test process, so two test runs on one machine never share it.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-platform-{os.getpid()}.sqlite3")}
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# In-process tests run jobs synchronously; a beating thread would touch the database from
# another thread in the middle of a test transaction. Worker subprocess tests recover jobs with
# stale_after=0, so they need no beat either.
JOB_HEARTBEAT_SECONDS = env.float("JOB_HEARTBEAT_SECONDS", default=600.0)
JOB_RETRY_BACKOFF_SECONDS = env.float("JOB_RETRY_BACKOFF_SECONDS", default=0.0)
JOB_HANDLER_MODULES = [*JOB_HANDLER_MODULES, "tests.job_handlers"]

# Tests use their own Redis database so they never touch queues of a running demo.
REDIS_URL = env.str("TEST_REDIS_URL", default="redis://127.0.0.1:6379/15")
RQ_QUEUES = {name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600} for name in JOB_QUEUES}

# Never the demo's Label Studio credential from var/: a test sets LABEL_STUDIO_API_KEY itself.
LABEL_STUDIO_API_KEY_FILE = env.str("LABEL_STUDIO_API_KEY_FILE", default="")
