"""Personal access tokens against the real Label Studio server: exchange, refresh, legacy refused,
revoked and rotated tokens refused with an error naming where the token came from."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import jwt
import pytest

from curation.labelstudio import server, tokens
from curation.labelstudio.accounts import LabelStudioAccounts
from curation.labelstudio.auth import LEGACY, PAT, credential_kind
from curation.labelstudio.client import LabelStudioAuthError, LabelStudioClient
from curation.labelstudio.sessions import form_login, open_session

pytestmark = pytest.mark.labelstudio


def _annotator_token(ls_server: server.ServerHandle) -> tuple[str, str]:
    accounts = LabelStudioAccounts(ls_server.url, ls_server.token)
    email = f"tok-{secrets.token_hex(3)}@example.com"
    account = accounts.ensure_annotator(email, "token-pass-123")
    assert account.token
    return email, account.token


def test_the_platform_authenticates_with_a_personal_access_token(
    ls_server: server.ServerHandle, ls_client: LabelStudioClient
) -> None:
    assert credential_kind(ls_server.token) == PAT
    assert ls_client.auth.kind == PAT
    me = ls_client.sdk.users.whoami()
    assert me.email == ls_server.username
    assert ls_client.auth.refreshes >= 1  # the PAT was exchanged, never sent as is
    with open_session(ls_server.url) as session:
        assert form_login(session, ls_server.username, ls_server.password)
        policy = tokens.token_policy(session)
    assert policy == tokens.TokenPolicy(api_tokens_enabled=True, legacy_api_tokens_enabled=False)
    # Starting again with the token in hand keeps it (no revoke-and-reissue on each start).
    assert server.provision(ls_server).token == ls_server.token


def test_an_expired_access_token_is_refreshed_and_calls_keep_working(
    ls_server: server.ServerHandle,
) -> None:
    now = [1000.0]
    client = LabelStudioClient(ls_server.url, ls_server.token)
    client.auth._clock = lambda: now[0]  # fresh client: nothing was timed on the real clock yet
    client.sdk.projects.list()
    first = client.auth.access_token()
    assert client.auth.refreshes == 1
    now[0] += 301  # past the 5-minute access lifetime Label Studio gives
    client.sdk.projects.list()
    assert client.auth.refreshes == 2 and client.auth.access_token() != first

    # A token the client still trusts but the server holds expired (clocks apart, or expired in
    # transit): Label Studio's own signing key makes one it would accept but for its `exp`.
    key = (Path(ls_server.data_dir) / "secret_key").read_text().strip()
    claims = jwt.decode(first, options={"verify_signature": False})
    claims.update(exp=int(time.time()) - 60, iat=int(time.time()) - 400)
    expired = jwt.encode(claims, key, algorithm="HS256")
    refused = httpx.get(
        f"{ls_server.url}/api/projects/", headers={"Authorization": f"Bearer {expired}"}
    )
    assert refused.status_code == 401
    client.auth._access = expired  # as if just obtained: not due for refresh locally
    assert client.sdk.users.whoami().email == ls_server.username
    assert client.auth.refreshes == 3  # one 401, one fresh token, one retry that worked


def test_a_legacy_token_is_refused_once_legacy_tokens_are_off(
    ls_server: server.ServerHandle,
) -> None:
    with open_session(ls_server.url) as session:
        assert form_login(session, ls_server.username, ls_server.password)
        legacy = tokens.legacy_token(session)
        # An organization made by an older platform (or switched back by a member): legacy on.
        tokens.set_token_policy(session, legacy=True)
    assert legacy and credential_kind(legacy) == LEGACY
    assert LabelStudioClient(ls_server.url, legacy).sdk.users.whoami().email == ls_server.username
    server.provision(ls_server)  # what every `labelstudio start` does: legacy off again
    raw = httpx.get(f"{ls_server.url}/api/projects/", headers={"Authorization": f"Token {legacy}"})
    assert raw.status_code == 401 and "legacy token authentication has been disabled" in raw.text
    client = LabelStudioClient(ls_server.url, legacy)
    with pytest.raises(
        LabelStudioAuthError, match=r"legacy token in LABEL_STUDIO_API_KEY.*labelstudio token"
    ):
        client.sdk.projects.list()


def test_a_revoked_or_rotated_token_gives_an_error_naming_its_setting(
    ls_server: server.ServerHandle,
) -> None:
    email, token = _annotator_token(ls_server)
    source = f"the token kept for {email}"
    client = LabelStudioClient(ls_server.url, token, source=source)
    assert client.sdk.users.whoami().email == email

    rotated = tokens.rotate_token(ls_server.url, token, source=source)
    assert rotated != token and tokens.token_works(ls_server.url, rotated)
    client.auth.expire_access_token()
    with pytest.raises(LabelStudioAuthError, match=f"personal access token in {source}.*revoked"):
        client.sdk.users.whoami()

    assert LabelStudioClient(ls_server.url, rotated).sdk.users.whoami().email == email
    assert tokens.revoke_token(ls_server.url, rotated) is True
    assert tokens.revoke_token(ls_server.url, rotated) is False  # already revoked: said so
    with pytest.raises(LabelStudioAuthError, match="blacklisted"):
        LabelStudioClient(ls_server.url, rotated, source=source).sdk.projects.list()


def test_a_wrong_service_password_names_the_settings(ls_server: server.ServerHandle) -> None:
    with pytest.raises(LabelStudioAuthError, match="LABEL_STUDIO_ADMIN_PASSWORD"):
        tokens.ensure_service_token(ls_server.url, ls_server.username, "not-the-password")


def test_an_access_token_is_not_taken_for_a_personal_access_token(
    ls_client: LabelStudioClient,
) -> None:
    access = ls_client.auth.access_token()
    with pytest.raises(LabelStudioAuthError, match="type 'access', not a personal access token"):
        credential_kind(access, source="LABEL_STUDIO_API_KEY")
    with pytest.raises(LabelStudioAuthError, match="LABEL_STUDIO_API_KEY is empty"):
        credential_kind("", source="LABEL_STUDIO_API_KEY")
