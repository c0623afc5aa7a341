"""torchvision's schema fix is applied once whichever way it is reached first."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

HOOK = "from training.engine import torch_compat\ntorch_compat.install_torchvision_hook()\n"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param(
            # What bench/prompts.py does: the hook is installed by importing the package, then
            # ensure_torchvision_importable() is called directly; torchvision then imports.
            "import sys\n" + HOOK + "torch_compat.ensure_torchvision_importable()\n"
            "assert torch_compat._HOOK not in sys.meta_path\n"
            "import torchvision\n"
            "print('ok', torchvision.__name__)\n",
            "ok torchvision",
            id="a direct call with the lazy hook installed defines the schemas once",
        ),
        pytest.param(
            HOOK + "import open_clip\nprint('ok', open_clip.__name__)\n",
            "ok open_clip",
            id="the hook alone still makes torchvision importable",
        ),
    ],
)
def test_torchvision_imports(code: str, expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout
