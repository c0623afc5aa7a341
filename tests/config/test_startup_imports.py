"""A Django process starts without the heavy libraries only some of its work needs.

Every manage.py command, web worker and job worker pays its imports at start-up; torch alone
costs seconds of CPU there. These run in a fresh interpreter because the test process has
imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

# Each costs from a few tenths of a second (scipy.sparse) to seconds (torch) of CPU per process.
HEAVY = (
    "torch",
    "torchvision",
    "diffusers",
    "open_clip",
    "matplotlib.pyplot",
    "label_studio_sdk.projects",
    "pandas",
    "scipy.sparse",
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "config.settings.test", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_django_start_up_with_admin_and_urls_imports_no_torch_sdk_or_plotting():
    started = _run(
        f"""
        import json, sys
        import django
        django.setup()
        from django.urls import get_resolver
        get_resolver().url_patterns  # every view module, the admin's included
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        """
    )
    assert started.returncode == 0, started.stderr[-3000:]
    assert json.loads(started.stdout.splitlines()[-1]) == []


def test_the_engine_imports_without_torch_and_still_shims_torchvision_before_open_clip():
    started = _run(
        """
        import sys
        import training.engine
        import training.engine.stats.cluster_bootstrap
        assert "torch" not in sys.modules, "import training.engine imported torch"
        import open_clip  # imports torchvision: fails on the CPU torch without the shim
        from diffusers import StableDiffusionPipeline
        print("ok")
        """
    )
    assert started.returncode == 0, started.stderr[-3000:]
    assert started.stdout.strip().endswith("ok")
