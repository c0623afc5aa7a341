"""A worker restarted under its fixed --worker-id after a SIGKILL starts at once on RQ.

RQ keeps a killed worker's registration for 8 minutes; the chaos test's supervisor (as systemd
would) restarts the worker under the same name and used to crash-loop on "There exists an
active worker named ... already" until it expired.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

NAME = "w-chaos-test"


def _registered(connection, *, hostname: str, pid: int) -> None:
    """The registration a worker of that name leaves behind when it is killed mid-run."""
    from rq import Worker

    Worker(["cpu"], name=NAME, connection=connection).register_birth()
    connection.hset(Worker.redis_worker_namespace_prefix + NAME, mapping={"hostname": hostname})
    connection.hset(Worker.redis_worker_namespace_prefix + NAME, mapping={"pid": pid})


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _worker(*args: str) -> str:
    err = io.StringIO()
    with override_settings(TASK_BACKEND="rq", TASKS={"default": settings.TASK_BACKENDS["rq"]}):
        call_command("worker", "--queues", "cpu", "--batch", "--worker-id", NAME, *args, stderr=err)
    return err.getvalue()


def test_a_killed_workers_name_is_taken_back_by_its_restart(clean_redis_queues):
    import django_rq
    from rq import Worker

    connection = django_rq.get_connection("cpu")
    _registered(connection, hostname=socket.gethostname(), pid=_dead_pid())
    said = _worker()
    assert f"worker id {NAME!r}: the previous worker of that name" in said
    assert "died without deregistering" in said
    # The restarted worker ran (burst) and deregistered itself cleanly.
    assert connection.hexists(Worker.redis_worker_namespace_prefix + NAME, "death")


def test_a_registration_a_heartbeat_recreated_after_redis_lost_it_is_released(
    clean_redis_queues,
):
    import django_rq
    from rq import Worker

    connection = django_rq.get_connection("cpu")
    key = Worker.redis_worker_namespace_prefix + NAME
    # RQ's heartbeat is an hset + expire: on a Redis that lost the birth it leaves this fragment.
    connection.hset(key, "last_heartbeat", "2026-12-01T23:56:43.096357Z")
    connection.expire(key, 480)
    assert "a registration without a host" in _worker()


def test_a_name_held_by_a_live_process_is_refused_with_its_holder(clean_redis_queues):
    import django_rq

    connection = django_rq.get_connection("cpu")
    _registered(connection, hostname=socket.gethostname(), pid=os.getppid())
    with pytest.raises(
        CommandError, match=rf"pid {os.getppid()} on this host.*another --worker-id"
    ):
        _worker()


def test_a_name_held_on_another_host_is_refused_naming_the_host(clean_redis_queues):
    import django_rq

    connection = django_rq.get_connection("cpu")
    _registered(connection, hostname="gpu-host-7", pid=_dead_pid())
    with pytest.raises(CommandError, match=r"host 'gpu-host-7'.*expires by itself in \d+ s"):
        _worker()


def test_a_cleanly_stopped_workers_name_needs_no_release(clean_redis_queues):
    import django_rq
    from rq import Worker

    connection = django_rq.get_connection("cpu")
    Worker(["cpu"], name=NAME, connection=connection).register_birth()
    Worker.find_by_key(Worker.redis_worker_namespace_prefix + NAME, connection).register_death()
    assert "previous worker" not in _worker()
