"""Site-wide pages: the admin index in loop order, the favicon, offline API docs, error pages."""

from __future__ import annotations

import secrets
import subprocess
import sys
import textwrap

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

from tests.conftest import ROOT


@pytest.mark.django_db
def test_admin_index_follows_the_loop(client, data_lead):
    client.force_login(data_lead)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    names = [app["name"] for app in response.context["app_list"]]
    loop = [n for n in names if n[0].isdigit()]
    assert loop == sorted(loop) and loop[:5] == [
        "1 · Image pool",
        "2 · Recipes",
        "3 · Dataset versions",
        "4 · Rating rounds",
        "5 · Training",
    ]
    assert names.index("5 · Training") < names.index("Operations")
    pool = next(a for a in response.context["app_list"] if a["name"] == "1 · Image pool")
    assert [m["object_name"] for m in pool["models"]][:3] == ["Source", "IngestBatch", "Image"]
    # An app's own index page keeps Django's grouping.
    curation = client.get(reverse("admin:app_list", args=["curation"]))
    assert [a["app_label"] for a in curation.context["app_list"]] == ["curation"]
    html = response.content.decode()
    assert 'rel="icon"' in html and "platform/favicon.svg" in html


def test_favicon_is_served_from_static():
    assert finders.find("platform/favicon.svg")


def test_favicon_ico_redirects(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("platform/favicon.svg")


@pytest.mark.django_db
def test_api_docs_load_swagger_ui_from_our_static_files(client, data_lead):
    client.force_login(data_lead)
    for name, asset in (
        ("api-docs", "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"),
        ("api-redoc", "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"),
    ):
        html = client.get(reverse(name)).content.decode()
        assert asset in html, html
        assert "cdn." not in html and "unpkg" not in html
        assert finders.find(asset), asset


@pytest.mark.django_db
def test_styled_403_and_404(client, data_lead):
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404
    assert "This page does not exist" in missing.content.decode()
    client.force_login(data_lead)
    # The RQ dashboard is an operator page: a data lead is refused with the styled 403.
    forbidden = client.get(reverse("admin:django_rq_dashboard_changelist"))
    assert forbidden.status_code == 403
    assert "Your role does not allow this" in forbidden.content.decode()


def test_production_settings_show_styled_pages_never_a_traceback(tmp_path):
    script = textwrap.dedent(
        """
        import django
        from django.test import Client, override_settings
        from django.urls import path

        django.setup()

        def broken(request):
            raise RuntimeError("secret internals")

        urlpatterns = [path("broken/", broken)]
        client = Client(raise_request_exception=False, SERVER_NAME="platform.example")
        with override_settings(ROOT_URLCONF=__name__):
            err = client.get("/broken/")
        missing = client.get("/no/such/page/")
        print(err.status_code, "Something broke on our side" in err.content.decode(),
              "secret internals" in err.content.decode(), "Traceback" in err.content.decode())
        print(missing.status_code, "This page does not exist" in missing.content.decode())
        """
    )
    (tmp_path / "probe.py").write_text(script)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{tmp_path}:{ROOT}",
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "platform.example",
        "SECURE_SSL_REDIRECT": "false",
        "PLATFORM_VAR_DIR": str(tmp_path / "var"),
    }
    done = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_path('probe.py', run_name='probe')"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[-3:-1] == ["500 True False False", "404 True"], done.stdout + done.stderr
