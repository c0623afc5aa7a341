"""Label Studio accounts and browser sessions: sign-up, login, password, active flag.

Label Studio Community (1.23.2) has no API for a person's password or for switching an account
off: its user API ignores passwords (users made through it can never log in) and its only
password tools are the `label-studio reset_password` CLI and its own Django admin. So:

- new accounts go through the organization's invite-link sign-up form, as a person would;
- a password is set, and an account switched on or off (`is_active`), through Label Studio's
  own Django admin (`/admin/users/user/<id>/...`), logged in as the Label Studio superuser the
  platform started it with (`LABEL_STUDIO_ADMIN_EMAIL` / password). That works against a remote
  server too, where the CLI would not;
- an account's own API token comes from logging in as it: a new personal access token
  (`tokens.session_token`), or its legacy token where the organization accepts only those.

An inactive account cannot log in (the login form says "don't match"), its sessions and API
token stop working at once (Django and DRF both refuse inactive users), and it stays in the
organization, so switching it on again restores everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from typing import Any

import httpx

from curation.labelstudio.auth import make_sdk
from curation.labelstudio.parsing import parse_datetime
from curation.labelstudio.sessions import form_login, open_session
from curation.labelstudio.tokens import session_token


class LabelStudioAccountError(RuntimeError):
    """An account operation failed; the message names the account and what Label Studio said."""


@dataclass(frozen=True)
class LabelStudioUser:
    """An account as Label Studio's user list shows it."""

    user_id: int
    email: str
    last_activity: datetime | None = None
    date_joined: datetime | None = None


@dataclass(frozen=True)
class LabelStudioAccount:
    """An account the platform made or found; `token` is its own API token when we logged in
    (a personal access token, freshly issued: any earlier one of the account is revoked)."""

    user_id: int
    email: str
    token: str | None = field(repr=False, default=None)


class LabelStudioAccounts:
    """Accounts on one Label Studio server, administered with the admin's token and login."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        admin_email: str = "",
        admin_password: str = "",
        timeout: float = 30.0,
        source: str = "LABEL_STUDIO_API_KEY",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.sdk, self.auth = make_sdk(self.base_url, api_key, source=source, timeout=timeout)
        self.admin_email = admin_email
        self._admin_password = admin_password
        self.timeout = timeout

    # -- reading ---------------------------------------------------------------------------

    def users(self) -> dict[str, LabelStudioUser]:
        """e-mail (lower case) -> account, for every account in the admin's organization."""
        found: dict[str, LabelStudioUser] = {}
        for user in self.sdk.users.list():
            email = (user.email or "").lower()
            if not email or user.id is None:
                continue
            extra = user.model_dump() if hasattr(user, "model_dump") else {}
            found[email] = LabelStudioUser(
                user_id=int(user.id),
                email=email,
                last_activity=parse_datetime(extra.get("last_activity")),
                date_joined=parse_datetime(extra.get("date_joined")),
            )
        return found

    def find_user(self, email: str) -> int | None:
        user = self.users().get(email.lower())
        return user.user_id if user else None

    def invite_url(self) -> str:
        """Label Studio's sign-up link for the organization (anyone holding it can join)."""
        invite = self.sdk.organizations.invites.get_invite_link()
        return f"{self.base_url}/user/signup/?token={invite.token}"

    # -- sessions --------------------------------------------------------------------------

    def session(self) -> httpx.Client:
        return open_session(self.base_url, timeout=self.timeout)

    def login(self, session: httpx.Client, email: str, password: str) -> bool:
        """Log the session in through Label Studio's own login form; False when refused."""
        return form_login(session, email, password)

    def can_log_in(self, email: str, password: str) -> bool:
        with self.session() as session:
            return self.login(session, email, password)

    def token_for(self, email: str, password: str) -> str | None:
        """A new API token for the account (a PAT where the organization accepts them: its
        previous one is revoked), by logging in as it; None when the login is refused."""
        with self.session() as session:
            if not self.login(session, email, password):
                return None
            return session_token(session)

    # -- writing ---------------------------------------------------------------------------

    def sign_up(self, email: str, password: str) -> LabelStudioAccount:
        """A new account through the invite link, with `password`; raises if it exists."""
        email = email.lower()
        invite = self.sdk.organizations.invites.get_invite_link()
        params = {"token": invite.token}
        with self.session() as session:
            session.get("/user/signup/", params=params)
            response = session.post(
                "/user/signup/",
                params=params,
                data={
                    "email": email,
                    "password": password,
                    "csrfmiddlewaretoken": session.cookies.get("csrftoken", ""),
                },
                headers={"Referer": f"{self.base_url}/user/signup/"},
            )
            if response.status_code != 302:
                raise LabelStudioAccountError(
                    f"signup of {email} failed ({response.status_code}): "
                    + _form_errors(response.text)
                )
            token = session_token(session)
        user_id = self.find_user(email)
        if user_id is None:
            raise LabelStudioAccountError(f"signup of {email} reported success but no user exists")
        return LabelStudioAccount(user_id=user_id, email=email, token=token)

    def ensure_annotator(
        self, email: str, password: str, *, first_name: str = "", last_name: str = ""
    ) -> LabelStudioAccount:
        """An account that can log in to the browser with `password` (signed up when absent).

        For an existing account the token is fetched by logging in (None when the password
        does not match: nothing is changed then).
        """
        email = email.lower()
        user_id = self.find_user(email)
        if user_id is None:
            account = self.sign_up(email, password)
        else:
            account = LabelStudioAccount(
                user_id=user_id, email=email, token=self.token_for(email, password)
            )
        if first_name or last_name:
            self.sdk.users.update(account.user_id, first_name=first_name, last_name=last_name)
        return account

    def set_password(self, user_id: int, password: str) -> None:
        """Set an account's password through Label Studio's Django admin (as the superuser)."""
        with self._admin_session() as session:
            path = f"/admin/users/user/{int(user_id)}/password/"
            page = session.get(path)
            if page.status_code != 200:
                raise LabelStudioAccountError(
                    f"Label Studio user {user_id}: password page answered {page.status_code}"
                )
            response = session.post(
                path,
                data={
                    "csrfmiddlewaretoken": _csrf(session, page.text),
                    "usable_password": "true",
                    "password1": password,
                    "password2": password,
                },
                headers={"Referer": f"{self.base_url}{path}"},
            )
            if response.status_code != 302:
                raise LabelStudioAccountError(
                    f"Label Studio refused the new password for user {user_id}: "
                    + _form_errors(response.text)
                )

    def set_active(self, user_id: int, active: bool) -> bool:
        """Switch an account on or off; returns whether anything changed."""
        with self._admin_session() as session:
            path = f"/admin/users/user/{int(user_id)}/change/"
            page = session.get(path)
            if page.status_code != 200:
                raise LabelStudioAccountError(
                    f"Label Studio user {user_id}: admin page answered {page.status_code}"
                )
            form = _FormFields.read(page.text, having="is_active")
            if not form:
                raise LabelStudioAccountError(
                    f"Label Studio user {user_id}: its admin page has no is_active field"
                )
            if ("is_active" in form) == active:
                return False
            data = {k: v for k, v in form.items() if not k.endswith(":absent")}
            data.pop("is_active", None)
            if active:
                data["is_active"] = "on"
            data["csrfmiddlewaretoken"] = _csrf(session, page.text)
            data["_save"] = "Save"
            response = session.post(path, data=data, headers={"Referer": f"{self.base_url}{path}"})
            if response.status_code != 302:
                raise LabelStudioAccountError(
                    f"Label Studio refused to switch user {user_id} {'on' if active else 'off'}: "
                    + _form_errors(response.text)
                )
            return True

    def is_active(self, user_id: int) -> bool:
        with self._admin_session() as session:
            page = session.get(f"/admin/users/user/{int(user_id)}/change/")
            if page.status_code != 200:
                raise LabelStudioAccountError(
                    f"Label Studio user {user_id}: admin page answered {page.status_code}"
                )
            return "is_active" in _FormFields.read(page.text, having="is_active")

    @contextmanager
    def _admin_session(self) -> Iterator[httpx.Client]:
        if not self.admin_email or not self._admin_password:
            raise LabelStudioAccountError(
                "setting passwords or switching accounts needs the Label Studio admin's e-mail "
                "and password (LABEL_STUDIO_ADMIN_EMAIL, LABEL_STUDIO_ADMIN_PASSWORD)"
            )
        with self.session() as session:
            if not self.login(session, self.admin_email, self._admin_password):
                raise LabelStudioAccountError(
                    f"cannot log in to Label Studio as its admin {self.admin_email}: wrong password"
                )
            yield session


def _csrf(session: httpx.Client, html: str) -> str:
    return _FormFields.csrf_token(html) or session.cookies.get("csrftoken") or ""


class _FormFields(HTMLParser):
    """The values a browser would submit for each form on a Django admin page.

    Django 5's admin header holds a logout form too, so callers pick the form by a field it has.
    """

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []
        self.csrf = ""
        self._current: dict[str, str] | None = None
        self._select: str | None = None
        self._textarea: str | None = None

    @classmethod
    def read(cls, html: str, having: str) -> dict[str, str]:
        """The first form holding a field named `having` (empty when there is none)."""
        parser = cls()
        parser.feed(html)
        return next((f for f in parser.forms if having in f or f"{having}:absent" in f), {})

    @classmethod
    def csrf_token(cls, html: str) -> str:
        parser = cls()
        parser.feed(html)
        return parser.csrf

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a: dict[str, Any] = {k: (v if v is not None else "") for k, v in attrs}
        name = a.get("name")
        if tag == "input" and name == "csrfmiddlewaretoken" and not self.csrf:
            self.csrf = a.get("value", "")
        if tag == "form":
            self._current = {}
            self.forms.append(self._current)
            return
        form = self._current
        if form is None:
            return
        if tag == "input" and name:
            kind = a.get("type", "text").lower()
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    form[name] = a.get("value") or "on"
                else:
                    # Unchecked boxes submit nothing; remember the field exists.
                    form.setdefault(f"{name}:absent", "")
                return
            form[name] = a.get("value", "")
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            form[self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            form[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea and self._current is not None:
            self._current[self._textarea] += data


def _form_errors(html: str) -> str:
    # Django admin forms list errors in ul.errorlist, Label Studio's sign-up page in ul.field_errors.
    items = re.findall(
        r'<ul class="(?:errorlist|field_errors)[^"]*"[^>]*>(.*?)</ul>', html, flags=re.S
    )
    text = " ".join(re.sub(r"<[^>]+>", " ", item) for item in items)
    return " ".join(text.split())[:300] or "no reason given on the page"
