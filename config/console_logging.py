"""Console logging that stays readable: chatty libraries speak at WARNING and above only.

faiss announces which build it loaded (with a ModuleNotFoundError line that reads like a
traceback), httpx logs every request the Label Studio SDK makes, and open_clip logs through the
root logger. Their INFO lines are dropped from the console unless `-v 2` on a demo command (see
show_library_logs) or LOG_LIBRARIES=1 asks for them; the file handler (LOG_FILE) keeps them all.
"""

from __future__ import annotations

import logging

CHATTY_LOGGERS = (
    "httpx",
    "httpcore",
    "faiss",
    "urllib3",
    "PIL",
    "matplotlib",
    "label_studio_sdk",
    "accelerate",
    "diffusers",
    "transformers",
    "huggingface_hub",
    "sentence_transformers",
)
# Libraries that log through the root logger: recognised by where the record was made.
CHATTY_PATHS = ("/open_clip/", "/open_clip_train/")


class QuietLibraries(logging.Filter):
    shown = False  # set by show_library_logs()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.shown or record.levelno >= logging.WARNING:
            return True
        if record.name.split(".", 1)[0] in CHATTY_LOGGERS:
            return False
        path = record.pathname.replace("\\", "/")
        return not any(part in path for part in CHATTY_PATHS)


def show_library_logs() -> None:
    """Let the libraries' INFO lines through to the console too (a command's `-v 2`)."""
    QuietLibraries.shown = True
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def console_for_verbosity(verbosity: int) -> None:
    """A command's console: at -v 1 its own lines and warnings only, at -v 2 every INFO line."""
    if verbosity >= 2:
        show_library_logs()
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            handler.setLevel(logging.WARNING)
