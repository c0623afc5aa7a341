"""Errors every part of the Label Studio client raises (kept apart so `auth` and `base` share them)."""

from __future__ import annotations


class LabelStudioError(RuntimeError):
    """A Label Studio call failed or answered something unexpected; the message says which."""


class LabelStudioAuthError(LabelStudioError):
    """Label Studio refused the credential; the message names the setting that holds it."""
