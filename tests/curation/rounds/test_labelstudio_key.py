"""Where the platform's Label Studio token comes from, and `manage.py labelstudio token`."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from curation.labelstudio.client import LabelStudioError
from curation.services.annotators import labelstudio_api_key, labelstudio_client


def test_the_environment_wins_then_the_key_file_is_read_at_each_use(settings, tmp_path) -> None:
    key_file = tmp_path / "api-key"
    settings.LABEL_STUDIO_API_KEY = ""
    settings.LABEL_STUDIO_API_KEY_FILE = str(key_file)
    with pytest.raises(
        LabelStudioError, match=r"LABEL_STUDIO_API_KEY is not set.*labelstudio start"
    ):
        labelstudio_api_key()
    key_file.write_text("first-token\n")
    assert labelstudio_api_key() == ("first-token", f"LABEL_STUDIO_API_KEY_FILE ({key_file})")
    key_file.write_text("rotated-token\n")  # no restart needed
    assert labelstudio_api_key()[0] == "rotated-token"
    settings.LABEL_STUDIO_API_KEY = "from-env"
    assert labelstudio_api_key() == ("from-env", "LABEL_STUDIO_API_KEY")


@pytest.mark.labelstudio
def test_token_command_keeps_a_working_token_and_refuses_without_a_password(
    settings, tmp_path, ls_server
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(ls_server.token + "\n")
    settings.LABEL_STUDIO_URL = ls_server.url
    settings.LABEL_STUDIO_API_KEY = ""
    settings.LABEL_STUDIO_API_KEY_FILE = str(key_file)
    settings.LABEL_STUDIO_ADMIN_EMAIL = ls_server.username
    settings.LABEL_STUDIO_ADMIN_PASSWORD = ""
    with pytest.raises(CommandError, match="set LABEL_STUDIO_ADMIN_PASSWORD"):
        call_command("labelstudio", "token")
    settings.LABEL_STUDIO_ADMIN_PASSWORD = ls_server.password
    call_command("labelstudio", "token")
    assert key_file.read_text().strip() == ls_server.token  # still good: kept, not re-issued
    assert key_file.stat().st_mode & 0o077 == 0
    assert labelstudio_client().sdk.users.whoami().email == ls_server.username
