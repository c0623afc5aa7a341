"""Let a restarted RQ worker take back its fixed name from a predecessor that was killed.

RQ refuses to start a worker whose name is registered without a death mark ("There exists an
active worker named 'w0' already"), and a worker killed with SIGKILL (OOM, power, a supervisor's
hard stop) never writes that mark: its registration lives until it expires, `worker_ttl` + 60 s
(8 minutes) later. A supervisor restarting `manage.py worker --worker-id w0` would crash-loop
for that long. A registration made on this host by a process that no longer runs is such a
leftover and is released, and so is one that names no host at all: RQ writes the host at birth,
so a hash without it is what a worker's heartbeat recreates after Redis lost (restarted without
persistence) the real registration. One held by a live process, or by another host (whose
processes cannot be checked from here), is refused with who holds it.
"""

from __future__ import annotations

import os
import socket
from typing import Any


class WorkerNameTaken(RuntimeError):
    """Another live worker is registered under the name this one was asked to take."""


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a restarted container re-uses its pids: that registration is not ours
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def release_dead_namesake(connection: Any, name: str) -> str | None:
    """Clear a dead predecessor's registration of `name`; say what was done (None: nothing).

    Raises WorkerNameTaken when the name belongs to a worker that may still be running.
    """
    from rq import Worker

    key = Worker.redis_worker_namespace_prefix + name
    if not connection.exists(key) or connection.hexists(key, "death"):
        return None
    previous = Worker.find_by_key(key, connection=connection)
    if previous is None:  # expired in between
        return None
    host, pid = previous.hostname or "", int(previous.pid or 0)
    here = socket.gethostname()
    if not host:
        previous.register_death()
        return (
            f"worker id {name!r}: a registration without a host (what a heartbeat leaves after "
            "Redis lost the worker's own) is released"
        )
    if host != here or (pid and _running(pid)):
        where = "this host" if host == here else f"host {host!r}"
        raise WorkerNameTaken(
            f"worker id {name!r} is registered in Redis by pid {pid} on {where} (last heartbeat "
            f"{previous.last_heartbeat}); stop that worker or choose another --worker-id. A dead "
            f"worker's registration expires by itself in {connection.ttl(key)} s."
        )
    previous.register_death()
    return (
        f"worker id {name!r}: the previous worker of that name (pid {pid}) died without "
        "deregistering from Redis; its registration is released"
    )
