"""Private Redis and PostgreSQL servers a test may restart, and a fleet of workers to kill.

The machine's shared servers serve other test runs, so a chaos test never restarts them: it
starts its own on free ports in a temporary folder (PostgreSQL's initdb refuses root, so as root
the cluster belongs to the `postgres` user).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil

from curation.labelstudio.server import free_port
from tests.conftest import PYTHON, ROOT


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise FileNotFoundError(f"PostgreSQL's {name} is not installed")


class PrivatePostgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.start()

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, cwd=self.root)

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            *args,
        )

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """Stop it the hard way (as a crash would) and start it again."""
        self._ctl("-m", "immediate", "stop")
        self.start()

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self._run(
            _pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name
        )
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server without persistence: a restart loses everything it held."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="chaos-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                return
            time.sleep(0.1)
        raise RuntimeError("private redis-server did not start")

    def restart(self) -> None:
        self.stop(remove=False)
        self.start()

    def stop(self, remove: bool = True) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def running_job_pids(database_url: str) -> set[int]:
    """Process ids of the attempts running now, from Job.worker_id ("host:pid")."""
    query = "SELECT worker_id FROM curation_job WHERE status = 'running'"
    try:
        if database_url.startswith("sqlite:///"):
            import sqlite3

            with contextlib.closing(sqlite3.connect(database_url[len("sqlite:///") :], 5)) as db:
                rows = db.execute(query).fetchall()
        else:
            import psycopg

            with psycopg.connect(database_url, connect_timeout=5) as db:
                rows = db.execute(query).fetchall()
    except Exception:
        return set()  # the database is restarting: no kill this time
    return {int(w.rsplit(":", 1)[1]) for (w,) in rows if w and w.rsplit(":", 1)[-1].isdigit()}


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started (RQ's work horse leaves the group)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for proc in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)


class Fleet:
    """Workers and a scheduler kept running: an exited or killed one is started again."""

    def __init__(self, env: dict[str, str], log_dir: Path, workers: int = 2) -> None:
        self.env = env
        self.log_dir = log_dir
        self.commands = {
            f"worker-{n}": ["worker", "--queues", "default,cpu,gpu", "--worker-id", f"w{n}"]
            for n in range(workers)
        }
        self.commands["scheduler"] = ["scheduler", "--interval", "1"]
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: dict[str, int] = dict.fromkeys(self.commands, 0)
        self.kills: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def _spawn(self, name: str) -> None:
        self.starts[name] += 1
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (the process owns it)
        self.procs[name] = subprocess.Popen(
            [PYTHON, str(ROOT / "manage.py"), *self.commands[name]],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def start(self) -> None:
        for name in self.commands:
            self._spawn(name)
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                for name, proc in self.procs.items():
                    if proc.poll() is not None:
                        self._spawn(name)

    def kill_worker_running(self, pids: set[int], rng: random.Random) -> str | None:
        """SIGKILL (with its children) a worker whose process tree runs one of `pids`.

        Killing a worker that is still booting would only slow the round down: a kill should
        interrupt a job.
        """
        with self._lock:
            busy = []
            for name, proc in self.procs.items():
                if not name.startswith("worker"):
                    continue
                with contextlib.suppress(psutil.NoSuchProcess):
                    tree = {proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(True))}
                    if tree & pids:
                        busy.append(name)
            if not busy:
                return None
            name = rng.choice(sorted(busy))
            kill_tree(self.procs[name].pid)
            self.kills.append(name)
            return name

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for proc in self.procs.values():
                kill_tree(proc.pid)
            for proc in self.procs.values():
                proc.wait(30)

    def completions(self) -> dict[int, int]:
        """Per job id, how many times a worker logged that an attempt completed it."""
        import re

        pattern = re.compile(r"job (\d+) \S+: attempt \d+ succeeded")
        seen: dict[int, int] = {}
        for log in self.log_dir.glob("worker-*.log"):
            for match in pattern.finditer(log.read_text(errors="replace")):
                seen[int(match.group(1))] = seen.get(int(match.group(1)), 0) + 1
        return seen
