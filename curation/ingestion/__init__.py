"""Django-free image ingestion: enumerate sources, validate and normalise images, find duplicates.

The Django side (curation.services.ingest) persists what `pipeline.ingest_items` reports; nothing
here touches the database, so the same code runs in a worker, a benchmark or a notebook.
"""

from curation.ingestion.dedup import NearDuplicateIndex, hamming_distance
from curation.ingestion.fetch import FetchOptions
from curation.ingestion.pipeline import IngestResult, IngestSummary, ingest_items
from curation.ingestion.sources import SourceItem, SourceLimits, iter_items
from curation.ingestion.validate import (
    RefusedFile,
    ValidatedImage,
    validate_image_bytes,
    validate_path,
)

__all__ = [
    "FetchOptions",
    "IngestResult",
    "IngestSummary",
    "NearDuplicateIndex",
    "RefusedFile",
    "SourceItem",
    "SourceLimits",
    "ValidatedImage",
    "hamming_distance",
    "ingest_items",
    "iter_items",
    "validate_image_bytes",
    "validate_path",
]
