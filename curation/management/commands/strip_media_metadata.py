"""Strip EXIF/XMP/text metadata from images stored before ingest stripped it (a backfill).

python manage.py strip_media_metadata --dry-run   # what would change
python manage.py strip_media_metadata             # do it (idempotent: safe to run again)
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from curation.services.media_backfill import strip_stored_metadata


class Command(BaseCommand):
    help = "Strip metadata from stored images that still carry it; keep the originals apart."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Report, change nothing.")
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, **options) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size: must be at least 1")
        verbose = options["verbosity"] > 1
        report = strip_stored_metadata(
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
            log=self.stdout.write if verbose else None,
        )
        for line in report.errors[:50]:
            self.stderr.write(f"strip_media_metadata: {line}")
        self.stdout.write(f"strip_media_metadata: {report.summary()}")
        if report.rounds_reissued:
            self.stdout.write(
                "strip_media_metadata: rounds given fresh links (old ones revoked): "
                + ", ".join(str(r) for r in report.rounds_reissued)
            )
        if report.errors:
            raise CommandError(
                f"{len(report.errors)} images could not be read (listed above); the rest are done"
            )
