"""Django-free prompt-set tooling: import, templated expansion, embeddings, dedup, splits, descriptors.

Each module is importable on its own; only `embeddings` (and `importers` when it counts CLIP tokens)
pulls in torch, so template and descriptor code stays cheap to import from the Django side.
"""
