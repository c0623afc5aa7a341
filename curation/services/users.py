"""Platform users and their roles."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from curation.roles import ROLES, STAFF_ROLES


@transaction.atomic
def upsert_user(*, username: str, password: str, role: str, email: str = "") -> Any:
    """Create or update a user with exactly one role; staff flag follows the role."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {ROLES}")
    User = get_user_model()
    user, _ = User.objects.get_or_create(username=username, defaults={"email": email})
    user.email = email or user.email
    user.is_staff = role in STAFF_ROLES
    user.set_password(password)
    user.save()
    user.groups.set([Group.objects.get(name=role)])
    return user
