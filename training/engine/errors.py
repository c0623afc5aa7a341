"""Errors every engine module may raise, kept apart so that no module imports another just for
its exception (config.py and styledrop_settings.py used to import each other for this)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is missing or invalid; `field` is its dotted path."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class BaseModelError(ValueError):
    """A base model folder or file cannot be used; the message names the missing or bad part."""
