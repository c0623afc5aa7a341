"""Job handler `export_version` (queue cpu): writes a frozen version in the asked formats."""

from __future__ import annotations

from pathlib import Path

from curation.models import DatasetVersion
from curation.services.exports import (
    FORMATS,
    default_out_dir,
    export_version,
    package_for_download,
)
from curation.services.jobs import JobContext, job_handler


@job_handler("export_version", queue="cpu")
def export_version_job(ctx: JobContext) -> dict:
    version = DatasetVersion.objects.select_related("dataset").get(pk=ctx.params["version_id"])
    formats = ctx.params.get("formats") or list(FORMATS)
    done: dict[str, dict] = dict(ctx.state.get("done", {}))
    for fmt in formats:
        if fmt in done:  # a retried attempt does not rewrite finished formats
            continue
        out = ctx.params.get("out_dir")
        out_dir = Path(out) / fmt if out else default_out_dir(version, fmt)
        ctx.log(f"exporting {version} as {fmt} to {out_dir}")
        result = export_version(
            version,
            fmt,
            out_dir,
            on_progress=lambda n, total, fmt=fmt: ctx.progress(n, total, f"{fmt}: {n} of {total}"),
        )
        ctx.log(f"packing the {fmt} export for download")
        done[fmt] = {**result.to_json(), "download": package_for_download(version, fmt, out_dir)}
        ctx.save_state(done=done)
    return {"exports": done}
