"""Label Studio sync: our idempotent push vs a raw SDK import, webhook lag, reconcile time.

Starts its own Label Studio (from `.venv-labelstudio`, fresh data dir in a temp folder) unless
LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY point at one. Either way it authenticates with a personal
access token (the started server's service account gets one; legacy tokens are off there), our
client through `LabelStudioAuth`, the raw baseline through the SDK's own token exchange.

Sizes: 5,000 tasks by default (finishes within ~10 minutes on a loaded 2-core machine), 2,000 with
--quick, 20,000 with --full. Prints one JSON object as its last line:
  push_vs_raw_sdk    raw SDK `projects.import_tasks` time / our `push_tasks` time (≥ 0.8 is the target)
  webhook_lag_p50_s  annotation create call → webhook received (in-process receiver), median
  webhook_lag_p95_s  the same, 95th percentile
  stored_lag_p50_s   annotation create call → webhook received → the task read back from Label
  stored_lag_p95_s   Studio's API (webhooks are hints: this read is what the platform stores)
  reconcile_s        first full reconcile pull of `reconcile_n` annotated tasks; with --full (20,000)
                     it is also printed as reconcile_20k_s, the figure docs/benchmarks.md tracks
  full_export_s      baseline: Label Studio's own single-request JSON export of the same project,
                     with a timeout scaled to its size (`full_export_timeout_s`); a timeout is
                     reported as `full_export_error`, never a crash that loses the other figures
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from label_studio_sdk import LabelStudio  # noqa: E402

from curation.labelstudio import configs, server  # noqa: E402
from curation.labelstudio.accounts import LabelStudioAccounts  # noqa: E402
from curation.labelstudio.auth import credential_kind  # noqa: E402
from curation.labelstudio.client import LabelStudioClient  # noqa: E402
from curation.labelstudio.receiver import WebhookReceiver  # noqa: E402


def tasks_for(n: int, tag: str) -> list[dict]:
    return [
        {
            "data": {
                "task_key": f"{tag}-{i}",
                "generation_id": i,
                "round_id": 1,
                "image": f"http://127.0.0.1:8000/media/gen/{i}.png?sig=abcdef0123456789",
                "prompt": f"a sticker of a smiling avocado number {i}",
            }
        }
        for i in range(n)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_push(
    client: LabelStudioClient, raw_sdk: LabelStudio, n: int, repeats: int = 3
) -> dict[str, float]:
    # Alternating repeats and medians: on a shared 2-core machine one import can be 2x off.
    config = configs.alignment_config()
    raw_times, our_times, repeat_times = [], [], []
    for r in range(repeats):
        raw_project = client.ensure_project(f"bench raw {secrets.token_hex(3)}", config)
        ours_project = client.ensure_project(f"bench push {secrets.token_hex(3)}", config)
        raw_tasks, our_tasks = tasks_for(n, f"raw{r}"), tasks_for(n, f"ours{r}")

        began = time.perf_counter()
        raw_sdk.projects.import_tasks(raw_project, request=raw_tasks, return_task_ids=True)
        raw_times.append(time.perf_counter() - began)

        began = time.perf_counter()
        result = client.push_tasks(ours_project, our_tasks)
        our_times.append(time.perf_counter() - began)
        assert result.created == n and len(result.task_ids) == n, result

        began = time.perf_counter()
        again = client.push_tasks(ours_project, our_tasks)
        repeat_times.append(time.perf_counter() - began)
        assert again.created == 0 and again.task_ids == result.task_ids
    raw_s, ours_s = statistics.median(raw_times), statistics.median(our_times)
    return {
        "push_n": n,
        "raw_import_s": round(raw_s, 3),
        "push_s": round(ours_s, 3),
        "push_repeat_noop_s": round(statistics.median(repeat_times), 3),
        "push_vs_raw_sdk": round(raw_s / ours_s, 3),
    }


def bench_webhooks(client: LabelStudioClient, url: str, key: str, n: int) -> dict[str, float]:
    project = client.ensure_project(
        f"bench hooks {secrets.token_hex(3)}", configs.alignment_config()
    )
    ids = client.push_tasks(project, tasks_for(n, "hook")).task_ids
    accounts = LabelStudioAccounts(url, key)
    annotator = accounts.ensure_annotator(f"bench-{project}@example.com", secrets.token_urlsafe(12))
    as_annotator = LabelStudioClient(url, annotator.token or "")
    lags, stored, calls = [], [], []
    with WebhookReceiver("X-Platform-Webhook-Secret", secrets.token_urlsafe(16)) as hook:
        client.ensure_webhook(
            project, hook.url, secret_header=hook.secret_header, secret=hook.secret
        )
        for i, task_id in enumerate(ids.values()):
            sent = time.time()
            made = as_annotator.sdk.annotations.create(
                id=task_id,
                result=[
                    {
                        "from_name": configs.ALIGNED,
                        "to_name": configs.IMAGE,
                        "type": "choices",
                        "value": {"choices": ["yes" if i % 3 else "no"]},
                    },
                ],
            )
            calls.append(time.time() - sent)
            assert hook.wait_for(lambda r, k=i + 1: len(r) >= k, timeout=10)
            lags.append(hook.received[i].received_at - sent)
            # The platform's webhook job: read the named task back, store what it says.
            read = client.read_tasks(project, [task_id])
            assert made.id in {a.annotation_id for a in read.tasks[task_id].annotations}
            stored.append(time.time() - sent)
        assert all(r.accepted for r in hook.received)
    return {
        "webhook_n": n,
        "webhook_lag_p50_s": round(statistics.median(lags), 4),
        "webhook_lag_p95_s": round(percentile(lags, 0.95), 4),
        "stored_lag_p50_s": round(statistics.median(stored), 4),
        "stored_lag_p95_s": round(percentile(stored, 0.95), 4),
        "annotation_create_p50_s": round(statistics.median(calls), 4),
    }


def bench_reconcile(
    client: LabelStudioClient, url: str, key: str, n: int
) -> dict[str, float | int | str | None]:
    project = client.ensure_project(
        f"bench reconcile {secrets.token_hex(3)}", configs.alignment_config()
    )
    admin_id = client.sdk.users.whoami().id
    tasks = tasks_for(n, "rec")
    for i, task in enumerate(tasks):
        # Inline annotations are the only bulk way to create them (Community has no bulk API).
        task["annotations"] = [
            {
                "completed_by": admin_id,
                "result": [
                    {
                        "from_name": configs.ALIGNED,
                        "to_name": configs.IMAGE,
                        "type": "choices",
                        "value": {"choices": ["yes" if i % 2 else "no"]},
                    },
                    {
                        "from_name": configs.ALIGNMENT_RATING,
                        "to_name": configs.IMAGE,
                        "type": "rating",
                        "value": {"rating": 1 + i % 5},
                    },
                ],
            }
        ]
    began = time.perf_counter()
    for start in range(0, n, 5000):
        client.sdk.projects.import_tasks(project, request=tasks[start : start + 5000])
    setup_s = time.perf_counter() - began

    began = time.perf_counter()
    full = client.pull(project, None)
    full_s = time.perf_counter() - began
    assert len(full.annotations) == n, len(full.annotations)
    assert not any(r.answer.problems for r in full.annotations)

    # An edit and a deletion after the watermark; the incremental pull finds both.
    first, second = full.annotations[0], full.annotations[1]
    client.sdk.annotations.update(
        id=first.annotation_id,
        result=[
            {
                "from_name": configs.ALIGNED,
                "to_name": configs.IMAGE,
                "type": "choices",
                "value": {"choices": ["yes"]},
            }
        ],
    )
    client.sdk.annotations.delete(id=second.annotation_id)
    known = {r.task_id: 1 for r in full.annotations}
    began = time.perf_counter()
    delta = client.pull(project, full.watermark, known_counts=known, overlap=timedelta(0))
    delta_s = time.perf_counter() - began
    assert first.annotation_id in {r.annotation_id for r in delta.annotations}
    assert delta.tasks[second.task_id].annotations == []  # read whole: the deletion shows
    began = time.perf_counter()
    quick = client.pull(
        project,
        full.watermark,
        known_counts=known,
        full_deletion_scan=False,
        overlap=timedelta(0),
    )
    quick_s = time.perf_counter() - began
    assert quick.tasks[second.task_id].annotations == []

    # Baseline: Label Studio's own full JSON export of the same project, one request. It took
    # 102 s for 20,000 tasks on a quiet machine and outlasted 120 s on a loaded one: give it
    # 30 ms a task (10 minutes at 20,000), at least 120 s.
    export_timeout = max(120.0, 0.03 * n)
    exporter = LabelStudioClient(url, key, timeout=export_timeout)
    began = time.perf_counter()
    export_s: float | None = None
    export_error: str | None = None
    try:
        exported = exporter.export_tasks(project)
    except httpx.TimeoutException as exc:
        export_error = f"timed out after {export_timeout:.0f} s ({type(exc).__name__})"
    else:
        export_s = time.perf_counter() - began
        assert len(exported) == n
    figures: dict[str, float | int | str | None] = {
        "reconcile_n": n,
        "reconcile_setup_import_s": round(setup_s, 2),
        "reconcile_s": round(full_s, 2),
        "full_export_timeout_s": export_timeout,
        "full_export_s": round(export_s, 2) if export_s is not None else None,
        "reconcile_vs_full_export": round(export_s / full_s, 3) if export_s else None,
        "reconcile_incremental_s": round(delta_s, 3),
        "reconcile_incremental_no_scan_s": round(quick_s, 3),
        "reconcile_incremental_tasks_seen": delta.tasks_listed,
    }
    if export_error:
        figures["full_export_error"] = export_error
    if n == 20_000:
        figures["reconcile_20k_s"] = figures["reconcile_s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="2,000 tasks instead of 5,000")
    size.add_argument(
        "--full", action="store_true", help="20,000 tasks (reconcile_20k_s; ~30 min loaded)"
    )
    parser.add_argument(
        "--webhooks", type=int, default=50, help="annotations timed for webhook lag"
    )
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000 if args.full else 5_000

    url, key = os.environ.get("LABEL_STUDIO_URL"), os.environ.get("LABEL_STUDIO_API_KEY")
    run_dir = None
    began = time.perf_counter()
    if not (url and key):
        server.ensure_installed(ROOT)
        run_dir = Path(tempfile.mkdtemp(prefix="bench-labelstudio-"))
        handle = server.start(
            ROOT,
            server.free_port(),
            run_dir / "data",
            password=secrets.token_urlsafe(12),
            run_dir=run_dir,
        )
        server.wait_healthy(handle.url, timeout=300, handle=handle)
        handle = server.provision(handle)
        url, key = handle.url, handle.token
    figures: dict[str, float | int | bool | str | None] = {
        "n": n,
        "token": credential_kind(key),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "server_ready_s": round(time.perf_counter() - began, 1),
    }
    try:
        client = LabelStudioClient(url, key)
        raw_sdk = LabelStudio(base_url=url, api_key=key, timeout=120.0)
        figures |= bench_push(client, raw_sdk, n)
        print(json.dumps(figures), flush=True)
        figures |= bench_webhooks(client, url, key, args.webhooks)
        print(json.dumps(figures), flush=True)
        figures |= bench_reconcile(client, url, key, n)
        figures["access_token_refreshes"] = client.auth.refreshes
    finally:
        if run_dir is not None:
            server.stop(ROOT, run_dir=run_dir)
    figures["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    figures["wall_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
