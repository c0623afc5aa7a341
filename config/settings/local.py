"""Development and the embedded demo: SQLite under var/, database-backed worker, local media."""

from .base import *  # noqa: F403
from .base import BASE_DIR, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# The demo's sample pool can be ingested again from the admin by naming its folder.
INGEST_ROOTS = env.list("INGEST_ROOTS", default=[str(BASE_DIR / "fixtures")])
