"""Issuing, rotating and revoking Label Studio personal access tokens; the organization's policy.

Everything here goes through Label Studio 1.23's own `jwt_auth` API, so it works against a remote
server as well as the one `server.py` starts:

- `GET/POST /api/jwt/settings`: the organization's `api_tokens_enabled` and
  `legacy_api_tokens_enabled` (Community has no roles: any member may change them);
- `GET/POST /api/token/`: list (header and payload only, no signature) and create the caller's
  PAT. Label Studio keeps one valid PAT per user and answers 409 to a second, and the full token
  is shown only in the create answer, so re-issuing means revoking the listed one first;
- `POST /api/token/blacklist/` (no authentication: holding a token is enough to revoke it) and
  `POST /api/token/rotate/` (authenticated; revokes the given PAT and returns a new one).

Creating a PAT needs a logged-in browser session (nothing else authenticates before the first
token exists), hence the session helpers taking an `httpx.Client` logged in by `accounts.login`.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from curation.labelstudio.auth import PAT, LabelStudioAuth, credential_kind
from curation.labelstudio.errors import LabelStudioAuthError, LabelStudioError
from curation.labelstudio.sessions import form_login, open_session


@dataclass(frozen=True)
class TokenPolicy:
    """What the organization accepts (Label Studio's `JWTSettings`)."""

    api_tokens_enabled: bool
    legacy_api_tokens_enabled: bool


def _csrf_headers(session: httpx.Client) -> dict[str, str]:
    # DRF's SessionAuthentication enforces Django's CSRF check on a cookie-authenticated POST.
    return {"X-CSRFToken": session.cookies.get("csrftoken") or ""}


def _fail(what: str, response: httpx.Response) -> LabelStudioError:
    return LabelStudioError(
        f"{what}: Label Studio answered {response.status_code}: {response.text[:300]}"
    )


def token_policy(session: httpx.Client) -> TokenPolicy:
    response = session.get("/api/jwt/settings")
    if response.status_code != 200:
        raise _fail("reading the organization's token settings", response)
    data = response.json()
    return TokenPolicy(bool(data["api_tokens_enabled"]), bool(data["legacy_api_tokens_enabled"]))


def set_token_policy(session: httpx.Client, *, legacy: bool) -> TokenPolicy:
    """Personal access tokens on; legacy tokens on or off, for the session's organization."""
    response = session.post(
        "/api/jwt/settings",
        json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": legacy},
        headers=_csrf_headers(session),
    )
    if response.status_code not in (200, 201):
        raise _fail("changing the organization's token settings", response)
    return token_policy(session)


def issue_token(session: httpx.Client) -> str:
    """A new PAT for the session's user; the one Label Studio already holds for it is revoked."""
    listed = session.get("/api/token/")
    if listed.status_code != 200:
        raise _fail("listing the account's personal access tokens", listed)
    for row in listed.json():
        # The list shows header.payload only; Label Studio's blacklist view accepts exactly that.
        revoked = session.post("/api/token/blacklist/", json={"refresh": row["token"]})
        if revoked.status_code not in (204, 404):  # 404: already revoked
            raise _fail("revoking the account's previous personal access token", revoked)
    created = session.post("/api/token/", headers=_csrf_headers(session))
    if created.status_code != 201:
        raise _fail("creating a personal access token", created)
    return str(created.json()["token"])


def legacy_token(session: httpx.Client) -> str | None:
    response = session.get("/api/current-user/token")
    if response.status_code != 200:
        return None
    token = response.json().get("token")
    return str(token) if token else None


def session_token(session: httpx.Client) -> str | None:
    """The API credential the platform keeps for the session's user: a fresh PAT where the
    organization accepts them, its legacy token only where that is all it accepts."""
    policy = token_policy(session)
    if policy.api_tokens_enabled:
        return issue_token(session)
    return legacy_token(session) if policy.legacy_api_tokens_enabled else None


def token_works(base_url: str, token: str) -> bool:
    """Whether `token` authenticates now (a PAT is exchanged; a legacy one tried on whoami)."""
    try:
        auth = LabelStudioAuth(base_url, token, source="the token")
        with httpx.Client(base_url=auth.base_url, auth=auth, timeout=30.0) as client:
            return client.get("/api/current-user/whoami").status_code == 200
    except LabelStudioAuthError:
        return False


def rotate_token(base_url: str, token: str, *, source: str) -> str:
    """Revoke the PAT `token` and return its successor (Label Studio's `/api/token/rotate/`)."""
    if credential_kind(token, source=source) != PAT:
        raise LabelStudioAuthError(f"{source} holds a legacy token: nothing to rotate")
    auth = LabelStudioAuth(base_url, token, source=source)
    with httpx.Client(base_url=auth.base_url, auth=auth, timeout=30.0) as client:
        response = client.post("/api/token/rotate/", json={"refresh": token})
    if response.status_code != 200:
        raise _fail(f"rotating the {PAT} in {source}", response)
    return str(response.json()["refresh"])


def revoke_token(base_url: str, token: str) -> bool:
    """Revoke a PAT; False when Label Studio had revoked it already."""
    response = httpx.post(
        base_url.rstrip("/") + "/api/token/blacklist/", json={"refresh": token}, timeout=30.0
    )
    if response.status_code not in (204, 404):
        raise _fail("revoking a personal access token", response)
    return response.status_code == 204


@dataclass(frozen=True)
class ServiceToken:
    """The platform's own credential on a Label Studio server, after `ensure_service_token`."""

    token: str
    issued: bool  # False: the token given in was still good and is kept
    policy: TokenPolicy


def ensure_service_token(
    base_url: str,
    email: str,
    password: str,
    *,
    current: str | None = None,
    allow_legacy: bool = False,
) -> ServiceToken:
    """Log in as the platform's service account, set the organization's policy (PATs on, legacy
    tokens off unless `allow_legacy`) and return a working PAT: `current` when it still works,
    else a new one (which revokes the account's previous PAT: Label Studio keeps one per user).
    """
    with open_session(base_url) as session:
        if not form_login(session, email, password):
            raise LabelStudioAuthError(
                f"cannot log in to Label Studio at {base_url} as its service account {email}: "
                "check LABEL_STUDIO_ADMIN_EMAIL and LABEL_STUDIO_ADMIN_PASSWORD"
            )
        policy = set_token_policy(session, legacy=allow_legacy)
        if not policy.api_tokens_enabled or policy.legacy_api_tokens_enabled != allow_legacy:
            raise LabelStudioError(f"Label Studio at {base_url} kept its token settings: {policy}")
        if current and _is_pat(current) and token_works(base_url, current):
            return ServiceToken(token=current, issued=False, policy=policy)
        return ServiceToken(token=issue_token(session), issued=True, policy=policy)


def _is_pat(token: str) -> bool:
    try:
        return credential_kind(token) == PAT
    except LabelStudioAuthError:
        return False
