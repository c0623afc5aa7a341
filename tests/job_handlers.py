"""Job handlers used only by the job tests; workers load them via EXTRA_JOB_HANDLER_MODULES."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.db import transaction

from curation.services.jobs import JobContext, JobRefused, Param, job_handler


@job_handler("test.steps", queue="cpu")
def count_steps(ctx: JobContext) -> dict:
    """Does `steps` idempotent-or-fail steps, saving its position after each one.

    Each step creates its own file with O_EXCL, so a step done twice fails the job: the worker
    recovery test proves that a resumed job repeats nothing and skips nothing.
    """
    out = Path(ctx.params["out"])
    steps = int(ctx.params["steps"])
    block_at = ctx.params.get("block_at")
    for step in range(int(ctx.state.get("next", 0)), steps):
        if step == block_at and ctx.job.attempt == 1:
            # Tell the test where we are, then hang until the test kills this worker.
            with open(ctx.params["fifo"], "w") as fifo:
                fifo.write(f"{os.getpid()}\n")
            time.sleep(3600)
        fd = os.open(out / f"step-{step:03d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, f"{os.getpid()} attempt {ctx.job.attempt}\n".encode())
        os.close(fd)
        ctx.save_state(next=step + 1)
        ctx.progress(step + 1, steps, f"step {step + 1} of {steps}")
    return {"steps": steps}


@job_handler("test.fails")
def always_fails(ctx: JobContext) -> dict:
    raise ValueError(f"planned failure on attempt {ctx.job.attempt}")


@job_handler("test.refused")
def refuses(ctx: JobContext) -> dict:
    raise JobRefused(f"input {ctx.params.get('path')!r} is gone")


@job_handler("test.cancellable")
def waits_for_cancel(ctx: JobContext) -> dict:
    ctx._cancel.set() if ctx.params.get("cancel_now") else None
    for i in range(10):
        ctx.progress(i, 10)
    return {}


@job_handler("noop", params={"note": Param(str, help="free text, for schedule tests")})
def noop(ctx: JobContext) -> dict:
    ctx.log("nothing to do")
    return {"ok": True}


@job_handler("test.flaky", queue="cpu")
def fails_once(ctx: JobContext) -> dict:
    """Fails its first attempt; the second tells the test through a FIFO, then succeeds."""
    if ctx.job.attempt == 1:
        raise ConnectionError("planned transient failure on attempt 1")
    with open(ctx.params["fifo"], "w") as fifo:
        fifo.write(f"attempt {ctx.job.attempt}\n")
    return {"succeeded_on": ctx.job.attempt}


# In-process coordination for the fencing tests: events by name, set by the test or a handler.
EVENTS: dict[str, threading.Event] = {}


def event(name: str) -> threading.Event:
    return EVENTS.setdefault(name, threading.Event())


@job_handler("test.fenced")
def fenced_steps(ctx: JobContext) -> dict:
    """Attempt 1 announces itself and waits for the test; every attempt then fences a step.

    `supersede_inline`: attempt 1 itself plays the scheduler that presumes it lost, as a slow
    attempt would see it. `finish_anyway`: attempt 1 ignores the refusal and returns a result.
    """
    if ctx.job.attempt == 1:
        event("started").set()
        if ctx.params.get("supersede_inline"):
            from curation.services.jobs import recover_lost_jobs

            recover_lost_jobs(stale_after=timedelta(0))
        else:
            deadline = time.monotonic() + 60
            while not event("release").wait(0.02):
                if ctx.params.get("stop_when_told") and ctx.should_cancel():
                    ctx.check_cancelled()
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never released attempt 1")
        if ctx.params.get("finish_anyway"):
            return {"finished_by": ctx.job.attempt}
    with transaction.atomic():
        ctx.fence()
        ctx.save_state(step_done_by=ctx.job.attempt)
    ctx.progress(1, 1, "one fenced step")
    return {"finished_by": ctx.job.attempt}
