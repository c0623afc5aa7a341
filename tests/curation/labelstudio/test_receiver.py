"""The in-process webhook receiver used by the Label Studio tests and benchmark."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from curation.labelstudio.receiver import WebhookReceiver


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_wrong_or_missing_secret_is_refused_but_the_body_is_kept() -> None:
    with WebhookReceiver("X-Secret", "s3cret") as hook:
        assert _post(hook.url, b'{"action": "A"}', {"X-Secret": "nope"}) == 403
        assert _post(hook.url, b'{"action": "B"}', {}) == 403
        assert _post(hook.url, b'{"action": "C"}', {"X-Secret": "s3cret"}) == 200
        assert hook.wait_for(lambda r: len(r) == 3, timeout=5)
    assert [r.accepted for r in hook.received] == [False, False, True]
    assert [r.body for r in hook.received] == [
        b'{"action": "A"}',
        b'{"action": "B"}',
        b'{"action": "C"}',
    ]


def test_wait_for_times_out_when_nothing_arrives() -> None:
    with WebhookReceiver("X-Secret", "s") as hook:
        assert hook.wait_for(lambda r: len(r) > 0, timeout=0.05) is False


@pytest.mark.parametrize("header", ["x-secret", "X-SECRET"])
def test_header_name_is_case_insensitive(header: str) -> None:
    with WebhookReceiver("X-Secret", "s") as hook:
        assert _post(hook.url, b"{}", {header: "s"}) == 200
