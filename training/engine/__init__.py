"""Django-free training engine: configs, recipes, adapters, loop, checkpoints, generation, metrics.

Runnable as `python -m training.engine CONFIG.json`; never imports Django.

Importing the package imports no torch (Django processes import `training.engine.stats` at
start-up): it only arranges for the torchvision shim to be applied before torchvision's first
import (see torch_compat), which is all the modules importing diffusers or open_clip rely on.
"""

from training.engine.torch_compat import install_torchvision_hook

install_torchvision_hook()
