"""Which job kinds exist: the handlers task modules register, their queues and parameters.

The job service, the Schedule model and the admin read this registry; task modules write it
(`@job_handler`, `register_runner`). Nothing here imports a task module or a service by name:
`load_handlers` imports the packages listed in settings.JOB_HANDLER_MODULES, so a deployment
can add or drop handler packages without the job service knowing them.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from django.conf import settings

Handler = Callable[[Any], dict | None]


@dataclass(frozen=True)
class Param:
    """One parameter a handler reads from `Job.params`, for checking schedules before they run."""

    type: type | tuple[type, ...]
    required: bool = False
    help: str = ""


@dataclass(frozen=True)
class HandlerSpec:
    kind: str
    fn: Handler
    queue: str
    # None: the handler declares nothing, any JSON object is accepted.
    params: Mapping[str, Param] | None = field(default=None)


_HANDLERS: dict[str, HandlerSpec] = {}
# The django-tasks task that carries a Job id to a worker (curation.tasks.run_job registers it).
_RUNNER: list[Any] = []
_loaded: list[tuple[str, ...]] = []


def job_handler(
    kind: str, *, queue: str = "default", params: Mapping[str, Param] | None = None
) -> Callable[[Handler], Handler]:
    """Register `fn(ctx) -> result dict` as the handler of job `kind` on `queue` by default."""

    def register(fn: Handler) -> Handler:
        _HANDLERS[kind] = HandlerSpec(kind=kind, fn=fn, queue=queue, params=params)
        return fn

    return register


def register_runner(task: Any) -> None:
    """Name the django-tasks task that runs a Job by id on a worker."""
    _RUNNER[:] = [task]


def load_handlers() -> None:
    """Import the modules that register handlers, so a worker knows every kind.

    A package listed in JOB_HANDLER_MODULES brings all its submodules (curation.tasks.ingest...).
    """
    wanted = tuple(settings.JOB_HANDLER_MODULES)
    if wanted in _loaded:
        return
    for name in wanted:
        module = import_module(name)
        for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
            import_module(f"{name}.{info.name}")
    _loaded.append(wanted)


def handler_for(kind: str) -> HandlerSpec | None:
    load_handlers()
    return _HANDLERS.get(kind)


def known_kinds() -> list[str]:
    load_handlers()
    return sorted(_HANDLERS)


def runner() -> Any:
    load_handlers()
    if not _RUNNER:
        raise LookupError(
            "no job runner task is registered: one of JOB_HANDLER_MODULES "
            f"({settings.JOB_HANDLER_MODULES}) must call register_runner()"
        )
    return _RUNNER[0]


def params_errors(kind: str, params: Any) -> list[str]:
    """What is wrong with `params` for a job of `kind` (empty when nothing is), one line each."""
    if not isinstance(params, dict):
        return [f"must be a JSON object, not {type(params).__name__}"]
    spec = handler_for(kind)
    if spec is None or spec.params is None:
        return []
    errors = []
    for name, param in spec.params.items():
        if name not in params:
            if param.required:
                errors.append(f"{name!r} is required for {kind} ({param.help or 'no default'})")
            continue
        value = params[name]
        # bool is an int to isinstance; a flag passed where an id is expected is a mistake.
        wrong_bool = isinstance(value, bool) and param.type in (int, float)
        if wrong_bool or not isinstance(value, param.type):
            expected = getattr(param.type, "__name__", None) or " or ".join(
                t.__name__
                for t in param.type  # type: ignore[union-attr]
            )
            errors.append(f"{name!r} must be {expected}, not {type(value).__name__}")
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        errors.append(f"unknown parameter(s) {unknown} for {kind}; known: {sorted(spec.params)}")
    return errors
