"""torchvision's schema fix is applied once whichever way it is reached first."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_a_direct_call_with_the_lazy_hook_installed_defines_the_schemas_once() -> None:
    # What bench/prompts.py does: the hook is installed by importing the package, then
    # ensure_torchvision_importable() is called directly; torchvision then imports.
    result = _run(
        "import sys\n"
        "from training.engine import torch_compat\n"
        "torch_compat.install_torchvision_hook()\n"
        "torch_compat.ensure_torchvision_importable()\n"
        "assert torch_compat._HOOK not in sys.meta_path\n"
        "import torchvision\n"
        "print('ok', torchvision.__name__)\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok torchvision" in result.stdout


def test_the_hook_alone_still_makes_torchvision_importable() -> None:
    result = _run(
        "from training.engine import torch_compat\n"
        "torch_compat.install_torchvision_hook()\n"
        "import open_clip\n"
        "print('ok', open_clip.__name__)\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok open_clip" in result.stdout
