"""Django-free retrieval: open_clip encoders, the sharded embedding pipeline, FAISS indexes."""

# Lazily (no torch import here): the shim runs just before torchvision's first import.
from training.engine.torch_compat import install_torchvision_hook

install_torchvision_hook()
