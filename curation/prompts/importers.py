"""Read prompt sets from CSV/TSV, JSONL and plain text without losing good rows to bad ones.

A data lead's file is usually mostly fine: one row with a stray Latin-1 byte, an empty cell or a
prompt too long for the text encoder must not sink the other 9,999. So the file is decoded with
``surrogateescape`` (undecodable bytes survive as lone surrogates we can spot per row), every row is
checked on its own, and each problem comes back as a `RowError` carrying the 1-based physical line
number the user sees in their editor.

Length is measured with CLIP's BPE (open_clip's ViT-B-32 tokenizer, the one Stable Diffusion's text
encoder uses): 77 positions including the start and end tokens. Anything longer would be silently
truncated at generation time, so the tail of such a prompt would never reach the model.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

CLIP_CONTEXT_LENGTH = 77
KNOWN_FIELDS = ("prompt", "category", "subject", "tags")
FORMATS = ("csv", "tsv", "jsonl", "txt")
_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "txt",
    ".text": "txt",
}
_TAG_SEPARATORS = re.compile(r"[,;|]")
_UNDECODABLE = re.compile("[\udc80-\udcff]")

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class PromptRow:
    text: str
    line: int
    category: str | None = None
    subject: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, {self.field}: {self.message}"


@dataclass
class ImportResult:
    prompts: list[PromptRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    source: str = ""

    def error_messages(self) -> list[str]:
        """One line per error, prefixed with the file so a log or admin message stands alone."""
        return [f"{self.source}: {error}" for error in self.errors]


class PromptImportError(ValueError):
    """The whole file cannot be read (unknown format); row-level problems never raise."""


@functools.cache
def _clip_tokenizer():
    # open_clip imports torchvision, which needs the lead's shim with this CPU build of torch.
    from training.engine.torch_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


def clip_token_count(text: str) -> int:
    """Positions the prompt takes in CLIP's 77-token context, start and end tokens included."""
    return len(_clip_tokenizer().encode(text)) + 2


def detect_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise PromptImportError(
            f"{path}: cannot tell the format from the suffix {suffix!r}; "
            f"expected one of {', '.join(sorted(_SUFFIX_FORMATS))} or pass fmt="
        )
    return _SUFFIX_FORMATS[suffix]


def import_prompts(
    path: str | Path,
    *,
    fmt: str | None = None,
    max_tokens: int = CLIP_CONTEXT_LENGTH,
    token_counter: TokenCounter | None = None,
) -> ImportResult:
    """Read a prompt file; the format comes from the suffix unless `fmt` is given."""
    path = Path(path)
    return parse_prompts(
        path.read_bytes(),
        fmt or detect_format(path),
        source=str(path),
        max_tokens=max_tokens,
        token_counter=token_counter,
    )


def parse_prompts(
    data: bytes,
    fmt: str,
    *,
    source: str = "<upload>",
    max_tokens: int = CLIP_CONTEXT_LENGTH,
    token_counter: TokenCounter | None = None,
) -> ImportResult:
    """Parse uploaded bytes (the Django side hands over an upload without touching disk)."""
    if fmt not in FORMATS:
        raise PromptImportError(f"{source}: unknown format {fmt!r}; expected one of {FORMATS}")
    if data.startswith(b"\xef\xbb\xbf"):  # Excel writes a UTF-8 BOM; it is not part of the header
        data = data[3:]
    text = data.decode("utf-8", errors="surrogateescape")
    checker = _RowChecker(max_tokens, token_counter or clip_token_count)
    result = ImportResult(source=source)
    if fmt in ("csv", "tsv"):
        rows = _csv_rows(text, "\t" if fmt == "tsv" else ",", result.errors)
    elif fmt == "jsonl":
        rows = _jsonl_rows(text, result.errors)
    else:
        rows = _text_rows(text)
    for line, values in rows:
        row = checker.check(line, values, result.errors)
        if row is not None:
            result.prompts.append(row)
    return result


class _RowChecker:
    """Turns raw field values into a PromptRow, or records why it cannot."""

    def __init__(self, max_tokens: int, token_counter: TokenCounter) -> None:
        self.max_tokens = max_tokens
        self.token_counter = token_counter

    def check(
        self, line: int, values: dict[str, object], errors: list[RowError]
    ) -> PromptRow | None:
        problems: list[RowError] = []
        for name in KNOWN_FIELDS:
            bad = _undecodable_bytes(values.get(name))
            if bad:
                problems.append(RowError(line, name, f"not valid UTF-8 (bytes {bad})"))
        if "prompt" not in values or values["prompt"] is None:
            problems.append(RowError(line, "prompt", "missing"))
        elif not isinstance(values["prompt"], str):
            problems.append(RowError(line, "prompt", "must be a string"))
        for name in ("category", "subject"):
            if values.get(name) is not None and not isinstance(values[name], str):
                problems.append(RowError(line, name, "must be a string"))
        tags = values.get("tags")
        if tags is not None and not (
            isinstance(tags, str)
            or (isinstance(tags, list) and all(isinstance(t, str) for t in tags))
        ):
            problems.append(RowError(line, "tags", "must be a string or a list of strings"))
        if problems:
            errors.extend(problems)
            return None

        text = _squash(values["prompt"])
        if not text:
            errors.append(RowError(line, "prompt", "empty"))
            return None
        count = self.token_counter(text)
        if count > self.max_tokens:
            errors.append(
                RowError(
                    line,
                    "prompt",
                    f"{count} tokens, over the tokenizer's limit of {self.max_tokens}",
                )
            )
            return None
        return PromptRow(
            text=text,
            line=line,
            category=_squash(values.get("category")) or None,
            subject=_squash(values.get("subject")) or None,
            tags=_parse_tags(tags),
        )


def _squash(value: object) -> str:
    # Quoted CSV cells may hold newlines or runs of spaces; the prompt the encoder sees should not.
    return " ".join(value.split()) if isinstance(value, str) else ""


def _parse_tags(tags: object) -> tuple[str, ...]:
    # Validation upstream lets through only a string, a list of strings or None.
    items = (
        _TAG_SEPARATORS.split(tags) if isinstance(tags, str) else cast(Iterable[object], tags or [])
    )
    seen: dict[str, None] = {}
    for item in items:
        tag = _squash(item)
        if tag:
            seen.setdefault(tag, None)
    return tuple(seen)


def _undecodable_bytes(value: object) -> str:
    strings = value if isinstance(value, list) else [value]
    found = [
        f"0x{ord(ch) - 0xDC00:02x}"
        for s in strings
        if isinstance(s, str)
        for ch in _UNDECODABLE.findall(s)
    ]
    return " ".join(found[:4])


def _physical_lines(text: str) -> Iterator[tuple[int, str]]:
    # Split on \n only: str.splitlines also breaks on \x0b, \x1c, U+2028 ..., which would make our
    # line numbers disagree with the user's editor.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        yield number, raw.rstrip("\r")


def _text_rows(text: str) -> Iterator[tuple[int, dict[str, object]]]:
    # Blank lines and full-line `#` comments are layout, not rows; a `#` inside a prompt is kept.
    for number, raw in _physical_lines(text):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            yield number, {"prompt": stripped}


def _jsonl_rows(text: str, errors: list[RowError]) -> Iterator[tuple[int, dict[str, object]]]:
    for number, raw in _physical_lines(text):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append(
                RowError(number, "json", f"malformed JSON: {exc.msg} at column {exc.colno}")
            )
            continue
        if not isinstance(value, dict):
            errors.append(
                RowError(number, "json", f"expected an object, got {type(value).__name__}")
            )
            continue
        yield number, value


def _csv_rows(
    text: str, delimiter: str, errors: list[RowError]
) -> Iterator[tuple[int, dict[str, object]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = 0
    previous_end = 0
    while True:
        start = previous_end + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # The reader resynchronises on the next line, so one broken quote costs one row.
            errors.append(RowError(start, "csv", f"unreadable row: {exc}"))
            previous_end = reader.line_num
            continue
        previous_end = reader.line_num
        if not record or (header is None and all(not cell.strip() for cell in record)):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in record]
            header_line = start
            if "prompt" not in header:
                errors.append(
                    RowError(
                        header_line,
                        "prompt",
                        f"missing column 'prompt' in the header (found: {', '.join(header)})",
                    )
                )
                return
            continue
        if len(record) > len(header):
            errors.append(
                RowError(
                    start,
                    "row",
                    f"{len(record)} fields but the header has {len(header)}; "
                    "quote cells that contain the delimiter",
                )
            )
            continue
        values: dict[str, object] = dict(zip(header, record, strict=False))
        yield start, values
    if header is None:
        errors.append(RowError(1, "prompt", "missing header row with a 'prompt' column"))
