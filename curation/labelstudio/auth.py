"""How the platform authenticates to Label Studio's API: personal access tokens, legacy as fallback.

Label Studio 1.23 (`jwt_auth`) has two kinds of API credential, switched per organization at
`/api/jwt/settings` (`api_tokens_enabled`, `legacy_api_tokens_enabled`):

- a **personal access token** (PAT) is a JWT *refresh* token (simplejwt `RefreshToken`; 200 years
  in Community, one valid per user, revocable). It is never sent with a request: the client
  exchanges it at `POST /api/token/refresh/` for an access token, which lives 5 minutes
  (simplejwt's default; Label Studio sets no `SIMPLE_JWT`), and sends that as `Bearer`;
- a **legacy token** (40 hex characters, `Authorization: Token ...`), refused with 401 once the
  organization disables legacy tokens.

`label-studio-sdk` 2.1.2 exchanges a PAT itself, but it trusts the access token's `exp` against
the local clock with no margin and does not retry a 401, so a token that expires in transit (or a
clock a few seconds ahead of the server's) fails a call; and its errors do not say which setting
holds the refused credential. `LabelStudioAuth` does this on the httpx client the SDK is given:
it refreshes ahead of expiry (timed by the token's lifetime on the local clock, not by its `exp`),
refreshes once more on a 401, and turns a refusal into `LabelStudioAuthError` naming the source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import httpx
import jwt

if TYPE_CHECKING:  # imported by make_sdk: the SDK costs a second at every process's start-up
    from label_studio_sdk import LabelStudio

from curation.labelstudio.errors import LabelStudioAuthError

PAT = "personal access token"
LEGACY = "legacy token"
REFRESH_PATH = "/api/token/refresh/"
# Refresh this long before the access token would expire (it lives 300 s).
REFRESH_MARGIN_S = 30.0
# The SDK's own Authorization header is replaced on every request by `LabelStudioAuth`; a value
# that is not a JWT keeps the SDK from starting a token exchange of its own.
_SDK_PLACEHOLDER = "replaced-per-request-by-LabelStudioAuth"


def _claims(token: str) -> dict[str, Any] | None:
    # Unverified: only Label Studio holds the signing key; it verifies every token we send.
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    return claims if isinstance(claims, dict) else None


def credential_kind(token: str, *, source: str = "the Label Studio token") -> str:
    """`PAT` or `LEGACY`; raises for an empty token or a JWT that is not a refresh token."""
    if not token:
        raise LabelStudioAuthError(f"{source} is empty")
    claims = _claims(token)
    if claims is None:
        return LEGACY
    kind = claims.get("token_type")
    if kind != "refresh":
        raise LabelStudioAuthError(
            f"{source} is a JWT of type {kind!r}, not a personal access token (a refresh "
            "token): give the token Label Studio shows once when it is created"
        )
    return PAT


class LabelStudioAuth(httpx.Auth):
    """Authenticates every request of one httpx client with one Label Studio credential."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        source: str,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.source = source
        self.kind = credential_kind(token, source=source)
        self._token = token
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._access: str | None = None
        self._refresh_at = 0.0
        self.refreshes = 0  # how many access tokens this client obtained (tests, bench)

    # -- access tokens -----------------------------------------------------------------------

    def access_token(self, *, stale: str | None = None) -> str:
        """A current access token; `stale`: the one just refused, which must not come back."""
        with self._lock:
            due = self._access is None or self._clock() >= self._refresh_at
            if due or (stale is not None and self._access == stale):
                self._exchange()
            assert self._access is not None
            return self._access

    def _exchange(self) -> None:
        began = self._clock()  # before the request: the token's lifetime starts no later
        try:
            response = httpx.post(
                self.base_url + REFRESH_PATH, json={"refresh": self._token}, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise LabelStudioAuthError(
                f"exchanging the {PAT} in {self.source} at {self.base_url}{REFRESH_PATH} "
                f"failed: {exc}"
            ) from exc
        if response.status_code != 200:
            raise self._refused(response, exchanging=True)
        access = str(response.json().get("access") or "")
        claims = _claims(access) or {}
        lifetime = float(claims.get("exp", 0)) - float(claims.get("iat", 0))
        if not access or lifetime <= 0:
            raise LabelStudioAuthError(
                f"{self.base_url}{REFRESH_PATH} answered no usable access token for {self.source}"
            )
        self._access = access
        self._refresh_at = began + max(lifetime - REFRESH_MARGIN_S, lifetime / 2)
        self.refreshes += 1

    def expire_access_token(self) -> None:
        """Treat the cached access token as expired: the next request exchanges the PAT again."""
        with self._lock:
            self._refresh_at = 0.0

    # -- httpx -----------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.kind == LEGACY:
            request.headers["Authorization"] = f"Token {self._token}"
            response = yield request
            if response.status_code == 401:
                raise self._refused(response)
            return
        access = self.access_token()
        request.headers["Authorization"] = f"Bearer {access}"
        response = yield request
        if response.status_code != 401:
            return
        # Expired in transit, or the server's clock is ahead of ours: one fresh token, one retry.
        request.headers["Authorization"] = f"Bearer {self.access_token(stale=access)}"
        response = yield request
        if response.status_code == 401:
            raise self._refused(response)

    def _refused(self, response: httpx.Response, *, exchanging: bool = False) -> Exception:
        response.read()
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text
        detail = str(detail)[:300]
        if self.kind == LEGACY:
            advice = (
                "legacy tokens are off in this Label Studio organization (the platform's "
                "start turns them off): use a personal access token "
                "(`python manage.py labelstudio token` issues one)"
                if "legacy" in detail.lower()
                else "check the token"
            )
        else:
            advice = (
                "it was revoked, rotated or issued by another Label Studio; issue a new one "
                "(`python manage.py labelstudio token`)"
            )
        what = "exchanging" if exchanging else "using"
        return LabelStudioAuthError(
            f"Label Studio at {self.base_url} refused the {self.kind} in {self.source} "
            f"({what} it: {response.status_code} {detail}): {advice}"
        )


def make_sdk(
    base_url: str, token: str, *, source: str, timeout: float = 120.0
) -> tuple[LabelStudio, LabelStudioAuth]:
    """The SDK client for `base_url`, every request authenticated by a `LabelStudioAuth`."""
    from label_studio_sdk import LabelStudio

    auth = LabelStudioAuth(base_url, token, source=source, timeout=min(timeout, 30.0))
    http = httpx.Client(auth=auth, timeout=timeout, follow_redirects=True)
    sdk = LabelStudio(
        base_url=auth.base_url,
        api_key=token if auth.kind == LEGACY else _SDK_PLACEHOLDER,
        httpx_client=http,
        timeout=timeout,
    )
    return sdk, auth
