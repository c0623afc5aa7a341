"""Development and the embedded demo: SQLite under var/, database-backed worker, local media."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
