"""A real PostgreSQL server for the tests, started by the tests themselves.

One server per test session (``postgres_server``): a fresh cluster in a temporary
directory, on a free loopback port, with its unix socket in that directory, password
authentication (scram-sha-256, so URLs carry a real password that error messages must
hide) and durability off (``fsync=off``: a test cluster is thrown away). Each test that
wants isolation takes ``fresh_postgres_url``: a database of its own, dropped after it.

PostgreSQL refuses to run as root. Under root (CI containers) the cluster is created
and run as the ``postgres`` system user (Debian's package creates it) in a directory
made for it under the system temporary directory, removed at the end; pytest's own
temporary root is private to root.

No PostgreSQL on the machine fails the tests that need it, with the fix (``make test``
installs the server); it does not skip them.

Use it from a test module with ``from postgres import fresh_postgres_url,
postgres_server  # noqa: F401`` (the fixtures must be names in the module; a test that
takes one as an argument needs ``# noqa: F811`` there too).
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import free_port

__all__ = ["PostgresServer", "find_postgres", "fresh_postgres_url", "postgres_server",
           "postgres_url"]

#: The database superuser the tests connect as.
USER = "edgewise"
_TOOLS = ("initdb", "pg_ctl", "postgres")
_MISSING = ("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
            "/usr/lib/postgresql/*/bin: run `make test` (it installs them), or "
            "`apt-get install postgresql`")


def find_postgres() -> Path | None:
    """The ``bin`` directory holding initdb, pg_ctl and postgres: pg_ctl's on PATH (a
    symlink is followed to its real directory), else the highest version under
    /usr/lib/postgresql."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    candidates += sorted(versions, key=lambda p: int(p.parent.name), reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in _TOOLS):
            return bindir
    return None


class PostgresServer:
    """One throwaway cluster: ``url(database)`` to connect, ``create_database()`` for a
    fresh one. Start with :meth:`start`, end with :meth:`stop`."""

    def __init__(self, bindir: Path, base: Path, run_as: str | None) -> None:
        self.bindir = bindir
        self.base = base
        self.data = base / "data"
        self.log = base / "server.log"
        self.run_as = run_as
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self._names = itertools.count(1)

    # -- life cycle ---------------------------------------------------------------------
    @classmethod
    def start(cls, tmp_path_factory: pytest.TempPathFactory) -> PostgresServer:
        bindir = find_postgres()
        if bindir is None:
            pytest.fail(_MISSING, pytrace=False)
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("PostgreSQL does not run as root and there is no `postgres` "
                            "user to run it as: `apt-get install postgresql` creates it",
                            pytrace=False)
            base = Path(tempfile.mkdtemp(prefix="edgewise-pg-"))
            os.chown(base, account.pw_uid, account.pw_gid)
            server = cls(bindir, base, "postgres")
        else:
            server = cls(bindir, tmp_path_factory.mktemp("postgres"), None)
        try:
            server._initdb()
            server._serve()
            server.execute(f"CREATE DATABASE {USER}")
        except BaseException:
            server.stop()
            raise
        return server

    def _initdb(self) -> None:
        pwfile = self.base / "password"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.run_as:
            account = pwd.getpwnam(self.run_as)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=scram-sha-256",
                      f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C", "--no-sync")
        finally:
            pwfile.unlink()

    def _serve(self) -> None:
        """``pg_ctl start`` on a free port; another process may take that port between
        choosing and binding it, so a bind failure tries the next free one."""
        for _attempt in range(3):
            self.port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                       f"-c unix_socket_directories={self.base} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off "
                       "-c max_connections=200")
            done = self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log),
                             "-w", "-t", "60", "-o", options, check=False)
            if done.returncode == 0:
                return
            if "could not bind" not in self._log_tail():
                self._fail("pg_ctl start", done)
        pytest.fail("PostgreSQL could not bind a free port three times", pytrace=False)

    def stop(self) -> None:
        """Stop the server now (``-m immediate``: nothing to keep) and remove a directory
        made outside pytest's temporary root."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w",
                      check=False)
        if self.run_as:
            shutil.rmtree(self.base, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / tool), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        env = {**os.environ, "LC_ALL": "C", "PGTZ": "UTC"}
        done = subprocess.run(cmd, cwd=self.base, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        if check and done.returncode != 0:
            self._fail(tool, done)
        return done

    def _fail(self, what: str, done: subprocess.CompletedProcess[str]) -> None:
        pytest.fail(f"{what} failed ({done.returncode}): {done.stderr.strip()[-1500:]}\n"
                    f"server log: {self._log_tail()}", pytrace=False)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return "(no log)"

    # -- use ----------------------------------------------------------------------------
    def url(self, database: str = USER, *, password: str | None = None) -> str:
        """A ``postgresql://`` URL for ``database`` (``password`` overrides the real one)."""
        pw = self.password if password is None else password
        return f"postgresql://{USER}:{pw}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        """One statement, autocommit (CREATE/DROP DATABASE cannot run in a transaction)."""
        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER,
                             password=self.password, dbname=database, autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self) -> str:
        name = f"test_{next(self._names)}"
        if not re.fullmatch(r"test_\d+", name):  # the name is spliced into SQL
            raise AssertionError(name)
        self.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (started on first use)."""
    server = PostgresServer.start(tmp_path_factory)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL (with its password) of the session-wide database ``edgewise``."""
    return postgres_server.url(USER)


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A database of this test's own, dropped (connections and all) after it."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)
