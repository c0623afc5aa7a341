"""Settings shared by every environment; everything that differs comes from the environment.

Follows cookiecutter-django: split settings, 12-factor variables read with django-environ.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(environ.Env().str("PLATFORM_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
env_file = BASE_DIR / ".env"
if env_file.exists():
    env.read_env(str(env_file))

# The development default; production settings refuse to start with it (or without a key).
INSECURE_DEFAULT_SECRET_KEY = "insecure-dev-key-change-me-in-production-0123456789"
SECRET_KEY = env.str("SECRET_KEY", default=INSECURE_DEFAULT_SECRET_KEY)
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    # The admin with its index grouped in the order of the loop (config/admin_site.py).
    "config.admin_site.PlatformAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    # Swagger UI and Redoc served from our own static files: /api/docs/ works offline.
    "drf_spectacular_sidecar",
    "django_tasks",
    "django_tasks_db",
    "django_rq",
    "curation",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'platform.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Workers and the web app share one SQLite file: WAL and a busy timeout keep them from
    # failing each other with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            # Writers take the lock when a transaction starts, not mid-way, so concurrent
            # writers wait for each other instead of failing with "database is locked".
            "transaction_mode": "IMMEDIATE",
        }
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGIN_URL = "admin:login"

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Project-wide static files (the favicon); apps keep their own under <app>/static/.
STATICFILES_DIRS = [BASE_DIR / "static"]

# Media are content-addressed and never served from a public directory: browsers get them
# through signed, expiring URLs (curation.media). MEDIA_URL is therefore not routed.
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "/media-not-public/"
SIGNED_MEDIA_MAX_AGE = env.int("SIGNED_MEDIA_MAX_AGE", default=3600)
# Image URLs inside Label Studio tasks must outlive a rating round.
LABEL_STUDIO_MEDIA_MAX_AGE = env.int("LABEL_STUDIO_MEDIA_MAX_AGE", default=60 * 60 * 24 * 60)

# Working files of jobs (embedding shards, indexes, training runs, model folders, caches,
# exports): local disk of the machine that runs the job, never served to browsers.
ARTIFACTS_ROOT = Path(env.str("ARTIFACTS_ROOT", default=str(VAR_DIR)))
EMBEDDINGS_ROOT = ARTIFACTS_ROOT / "embeddings"
INDEXES_ROOT = ARTIFACTS_ROOT / "indexes"
EXPORTS_ROOT = ARTIFACTS_ROOT / "exports"
TRAINING_RUNS_DIR = ARTIFACTS_ROOT / "runs"
TRAINING_MODELS_DIR = ARTIFACTS_ROOT / "models"
TRAINING_CACHE_DIR = ARTIFACTS_ROOT / "cache" / "training"

STORAGE_BACKEND = env.str("STORAGE_BACKEND", default="local")
if STORAGE_BACKEND == "s3":
    STORAGES = {
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": env.str("AWS_STORAGE_BUCKET_NAME"),
                "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default=None),
                "region_name": env.str("AWS_S3_REGION_NAME", default=None),
                "access_key": env.str("AWS_ACCESS_KEY_ID", default=None),
                "secret_key": env.str("AWS_SECRET_ACCESS_KEY", default=None),
                "default_acl": None,
                "querystring_auth": True,
                "file_overwrite": False,
            },
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
else:
    STORAGES = {
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": MEDIA_URL},
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }

# --- Ingest: what URLs and manifest paths may reach (docs/operations.md, "Ingestion safety") ---
# URLs resolving to loopback, private, link-local (cloud metadata), multicast or reserved
# addresses are refused unless they lie in one of these networks, e.g. "10.8.0.0/16".
INGEST_URL_ALLOW_NETWORKS = env.list("INGEST_URL_ALLOW_NETWORKS", default=[])
# Proxy environment variables are ignored; downloads go through this proxy only when set.
INGEST_URL_PROXY = env.str("INGEST_URL_PROXY", default="")
INGEST_URL_TIMEOUT_SECONDS = env.float("INGEST_URL_TIMEOUT_SECONDS", default=10.0)
INGEST_URL_DEADLINE_SECONDS = env.float("INGEST_URL_DEADLINE_SECONDS", default=120.0)
# Folders a manifest may name local files in, besides the manifest's own folder.
INGEST_LOCAL_ROOTS = env.list("INGEST_LOCAL_ROOTS", default=[])
# Folders the admin's "start an ingest" page may name (nothing else on the server's disk), and
# where archives and manifests uploaded there are written for the ingest job to read.
INGEST_ROOTS = env.list("INGEST_ROOTS", default=[])
INGEST_UPLOAD_DIR = Path(
    env.str("INGEST_UPLOAD_DIR", default=str(ARTIFACTS_ROOT / "ingest-uploads"))
)
INGEST_UPLOAD_MAX_BYTES = env.int("INGEST_UPLOAD_MAX_BYTES", default=2 * 1024**3)

# --- Jobs: Django's tasks API through the django-tasks backport -------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
TASK_BACKEND = env.str("TASK_BACKEND", default="database")
JOB_QUEUES = ["default", "cpu", "gpu"]
# django_rq is always installed (it reads RQ_QUEUES once, at import), so a test can switch a
# process to the RQ backend with override_settings(TASKS=...).
RQ_QUEUES = {name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 60 * 60 * 24} for name in JOB_QUEUES}
# Every RQ view (dashboard, registry clean-up) must load jobs as django-tasks jobs, or the
# clean-up of a dead worker's job crashes in django_tasks_rq's failure callback.
RQ = {"JOB_CLASS": "django_tasks_rq.Job"}
TASK_BACKENDS = {
    "database": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": JOB_QUEUES},
    "rq": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": JOB_QUEUES},
    "immediate": {
        "BACKEND": "django_tasks.backends.immediate.ImmediateBackend",
        "QUEUES": JOB_QUEUES,
    },
}
if TASK_BACKEND not in TASK_BACKENDS:
    raise ValueError(f"TASK_BACKEND={TASK_BACKEND!r}; choose one of {sorted(TASK_BACKENDS)}")
TASKS = {"default": TASK_BACKENDS[TASK_BACKEND]}

JOB_HEARTBEAT_SECONDS = env.float("JOB_HEARTBEAT_SECONDS", default=5.0)
JOB_STALE_AFTER = timedelta(seconds=env.float("JOB_STALE_AFTER_SECONDS", default=60.0))
# A run that could not record a heartbeat for this long stops itself; keep it well under
# JOB_STALE_AFTER, after which the scheduler requeues the job for another attempt.
JOB_HEARTBEAT_GIVE_UP_SECONDS = env.float(
    "JOB_HEARTBEAT_GIVE_UP_SECONDS", default=JOB_STALE_AFTER.total_seconds() / 2
)
# The scheduler dispatches again a queued job that no live task has carried for this long.
JOB_DISPATCH_GRACE_SECONDS = env.float("JOB_DISPATCH_GRACE_SECONDS", default=30.0)
JOB_MAX_ATTEMPTS = env.int("JOB_MAX_ATTEMPTS", default=3)
JOB_RETRY_BACKOFF_SECONDS = env.float("JOB_RETRY_BACKOFF_SECONDS", default=10.0)
SCHEDULER_TICK_SECONDS = env.float("SCHEDULER_TICK_SECONDS", default=15.0)

# --- REST API --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an unauthenticated API client gets 401 with a WWW-Authenticate header.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["curation.api.permissions.RolePermission"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "curation.api.pagination.IdCursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sticker curation platform API",
    "DESCRIPTION": "Images, datasets and versions, prompt sets, rounds, training runs and jobs.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ImageStatusEnum": "curation.models.images.Image.Status",
        "JobStatusEnum": "curation.models.jobs.Job.Status",
        "ShardStatusEnum": "curation.models.embeddings.EmbeddingShard.Status",
        "RunStatusEnum": "training.models.runs.TrainingRun.Status",
        "AnnotationRoundKindEnum": "curation.models.rounds.AnnotationRound.Kind",
        "AnnotationRoundStateEnum": "curation.models.rounds.AnnotationRound.State",
    },
}

# --- Label Studio ----------------------------------------------------------------------------
LABEL_STUDIO_URL = env.str("LABEL_STUDIO_URL", default="http://127.0.0.1:8089")
# The platform's Label Studio credential: a personal access token (a legacy token still works
# where the organization accepts those). When unset, the file below is read at each use; it is
# what `manage.py labelstudio start` / `labelstudio token` write (docs/operations.md, rotation).
LABEL_STUDIO_API_KEY = env.str("LABEL_STUDIO_API_KEY", default="")
LABEL_STUDIO_API_KEY_FILE = env.str(
    "LABEL_STUDIO_API_KEY_FILE", default=str(VAR_DIR / "labelstudio" / "api-key")
)
LABEL_STUDIO_WEBHOOK_SECRET = env.str("LABEL_STUDIO_WEBHOOK_SECRET", default="")
LABEL_STUDIO_ADMIN_EMAIL = env.str("LABEL_STUDIO_ADMIN_EMAIL", default="admin@example.com")
LABEL_STUDIO_ADMIN_PASSWORD = env.str("LABEL_STUDIO_ADMIN_PASSWORD", default="")
LABEL_STUDIO_DATA_DIR = env.str(
    "LABEL_STUDIO_DATA_DIR", default=str(VAR_DIR / "labelstudio" / "data")
)
PLATFORM_PUBLIC_URL = env.str("PLATFORM_PUBLIC_URL", default="http://127.0.0.1:8000")

# Console: our INFO lines, the libraries' warnings only (config/console_logging.py); LOG_LIBRARIES=1
# shows their INFO lines too. LOG_FILE adds a file with everything at LOG_LEVEL.
LOG_FILE = env.str("LOG_FILE", default="")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"quiet_libraries": {"()": "config.console_logging.QuietLibraries"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": [] if env.bool("LOG_LIBRARIES", default=False) else ["quiet_libraries"],
        },
        **(
            {"file": {"class": "logging.FileHandler", "filename": LOG_FILE, "formatter": "plain"}}
            if LOG_FILE
            else {}
        ),
    },
    "root": {
        "handlers": ["console", "file"] if LOG_FILE else ["console"],
        "level": env.str("LOG_LEVEL", default="INFO"),
    },
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Modules whose @job_handler functions a worker must know.
JOB_HANDLER_MODULES = ["curation.tasks", "training.tasks"]
JOB_HANDLER_MODULES += env.list("EXTRA_JOB_HANDLER_MODULES", default=[])

# Evaluation: a local open_clip model (name + weights path); tiny-clip is random-initialised.
EVAL_CLIP_MODEL = env.str("EVAL_CLIP_MODEL", default="tiny-clip")
EVAL_CLIP_WEIGHTS = env.str("EVAL_CLIP_WEIGHTS", default="")
# Optional preference scorers from local weights, a JSON list such as
# [{"name": "pickscore", "kind": "hf_clip", "weights": "/models/PickScore_v1"},
#  {"name": "hpsv2", "kind": "open_clip", "model": "ViT-H-14", "weights": "/models/HPS_v2.pt"}]
EVAL_PREFERENCE_MODELS = env.json("EVAL_PREFERENCE_MODELS", default=[])
