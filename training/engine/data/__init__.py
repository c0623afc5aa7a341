"""Training data: manifests, images, batch order, latents (see each module).

A run trains on exact, frozen data (`manifest`), reads it in an order that is a pure function
of the seed and step counters (`order`, `buckets`), and caches VAE latents keyed by everything
that changes them (`latents`).
"""

from training.engine.data.buckets import BucketBatchOrder, bucket_sizes, plan_fit
from training.engine.data.images import (
    TRAINING_BACKGROUND,
    ImageCaptionDataset,
    ImageLoadError,
    ImageOptions,
    ImageSource,
    Resolver,
    load_image,
    load_pixels,
    open_image,
)
from training.engine.data.latents import (
    LatentCache,
    encode_latent_parameters,
    module_checksum,
    sample_latents,
)
from training.engine.data.manifest import (
    ManifestChecksumError,
    ManifestError,
    ManifestRow,
    file_sha256,
    read_manifest,
    verify_manifest_checksum,
    write_manifest,
)
from training.engine.data.order import EpochBatchOrder

__all__ = [
    "TRAINING_BACKGROUND",
    "BucketBatchOrder",
    "bucket_sizes",
    "plan_fit",
    "EpochBatchOrder",
    "ImageCaptionDataset",
    "ImageLoadError",
    "ImageOptions",
    "ImageSource",
    "LatentCache",
    "ManifestChecksumError",
    "ManifestError",
    "ManifestRow",
    "Resolver",
    "encode_latent_parameters",
    "file_sha256",
    "load_image",
    "load_pixels",
    "module_checksum",
    "open_image",
    "read_manifest",
    "sample_latents",
    "verify_manifest_checksum",
    "write_manifest",
]
