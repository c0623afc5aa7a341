"""Production: every secret comes from the environment and `check --deploy` is clean."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import INSECURE_DEFAULT_SECRET_KEY, env


def refuse_insecure(debug: bool, secret_key: str) -> None:
    """Refuse to start rather than serve with debug pages or a guessable session signing key."""
    if debug:
        raise ImproperlyConfigured(
            "DJANGO_DEBUG is on with the production settings: debug pages show settings and "
            "code to anyone; unset DJANGO_DEBUG (or use config.settings.local on a laptop)"
        )
    problem = None
    if not secret_key:
        problem = "SECRET_KEY is empty"
    elif secret_key == INSECURE_DEFAULT_SECRET_KEY or secret_key.startswith(
        ("django-insecure", "insecure")
    ):
        problem = "SECRET_KEY is the development default"
    elif len(secret_key) < 50 or len(set(secret_key)) < 5:
        problem = "SECRET_KEY is shorter than 50 characters or has fewer than 5 distinct ones"
    if problem:
        raise ImproperlyConfigured(
            f"{problem}: it signs sessions and media links. Generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(64))'`"
        )


DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
refuse_insecure(DEBUG, SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
