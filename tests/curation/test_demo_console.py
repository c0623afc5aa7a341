"""The demo's console at the default verbosity: no tracebacks, no library chatter (faiss loader,
per-request httpx, open_clip) — those only with -v 2, LOG_LIBRARIES=1 or in LOG_FILE.

The whole demo takes many minutes on two cores, so this runs the demo's stages that make the
noise, as the management commands a person would type (`ingest` of the sample pool — faiss
loads with Django —, `embed` with open_clip, `build_index` with faiss) and one real httpx
request (the client the Label Studio SDK logs through) to the live server, in one subprocess
on the test database with the project's logging settings.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import PYTHON, ROOT, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Log lines of those libraries (an index path ending in .faiss is the command's own output).
# Log lines of those libraries (an index path ending in .faiss is the command's own output).
NOISE = re.compile(
    r"Traceback|httpx|httpcore|HTTP Request|faiss[.:]|Loading faiss|swigfaiss|open_clip"
)
STAGES = """
import sys, django
django.setup()
from django.core.management import call_command
call_command("ingest", sys.argv[1], "--source", "demo")
call_command("embed", "--space", "demo-console", "--shard-size", "16")
call_command("build_index", "--space", "demo-console")
import httpx
print("status", httpx.get(sys.argv[2], timeout=120).status_code)
"""


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_demo_stages_print_no_tracebacks_or_library_lines(live_server, tmp_path):
    env = subprocess_env(LOG_FILE=str(tmp_path / "demo.log"))
    env.pop("LOG_LIBRARIES", None)
    done = _run(["-c", STAGES, str(ROOT / "fixtures" / "pool"), f"{live_server.url}/api/"], env)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    noisy = [line for line in console.splitlines() if NOISE.search(line)]
    assert not noisy, noisy
    assert "status 401" in done.stdout and "ingested" in done.stdout, console
    # What the console leaves out is in the log file: the library lines are not lost.
    log = (tmp_path / "demo.log").read_text()
    assert "HTTP Request: GET" in log and "faiss" in log


def test_verbosity_two_shows_the_library_lines(tmp_path):
    probe = (
        "import django; django.setup()\n"
        "from config.console_logging import console_for_verbosity\n"
        "import sys; console_for_verbosity(int(sys.argv[1]))\n"
        "import logging\n"
        "logging.getLogger('httpx').info('HTTP Request: GET http://x')\n"
    )
    env = subprocess_env()
    env.pop("LOG_FILE", None)
    # The quiet side is the test above; here the same libraries speak once -v 2 asks.
    loud = subprocess.run(
        [PYTHON, "-c", probe, "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert loud.returncode == 0, loud.stderr
    assert "HTTP Request: GET http://x" in loud.stderr
