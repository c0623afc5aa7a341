"""Browser sessions on Label Studio: logging in through its own login form, as a person would.

Some things have no token-authenticated API in Label Studio Community: an account's first
personal access token, its Django admin (passwords, the active flag). They need a session.
"""

from __future__ import annotations

import httpx


def open_session(base_url: str, *, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)


def form_login(session: httpx.Client, email: str, password: str) -> bool:
    """Log the session in through Label Studio's login form; False when refused."""
    session.get("/user/login/")
    response = session.post(
        "/user/login/",
        data={
            "email": email,
            "password": password,
            "csrfmiddlewaretoken": session.cookies.get("csrftoken", ""),
        },
        headers={"Referer": str(session.base_url.join("/user/login/"))},
    )
    return response.status_code == 302
