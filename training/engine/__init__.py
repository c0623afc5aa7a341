"""Django-free training engine: configs, recipes, adapters, loop, checkpoints, generation, metrics.

Runnable as `python -m training.engine CONFIG.json`; never imports Django.
"""

from training.engine.torch_compat import ensure_torchvision_importable

ensure_torchvision_importable()
