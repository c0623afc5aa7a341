"""Job handlers used only by the job tests; workers load them via EXTRA_JOB_HANDLER_MODULES."""

from __future__ import annotations

import os
import time
from pathlib import Path

from curation.services.jobs import JobContext, job_handler


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


@job_handler("test.cancellable")
def waits_for_cancel(ctx: JobContext) -> dict:
    ctx._cancel.set() if ctx.params.get("cancel_now") else None
    for i in range(10):
        ctx.progress(i, 10)
    return {}


@job_handler("noop")
def noop(ctx: JobContext) -> dict:
    ctx.log("nothing to do")
    return {"ok": True}
