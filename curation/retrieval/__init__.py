"""Django-free retrieval: open_clip encoders, the sharded embedding pipeline, FAISS indexes."""

from training.engine.torch_compat import ensure_torchvision_importable

ensure_torchvision_importable()
