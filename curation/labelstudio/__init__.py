"""Django-free Label Studio layer: the server process, labeling configs, SDK client, webhook parsing.

Label Studio pins its own Django, so it lives in `.venv-labelstudio` and is driven as a separate
process; nothing here imports django or label_studio itself (only `label_studio_sdk`).
"""
