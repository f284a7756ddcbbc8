"""A PostgreSQL server of a test's own, that asks every connection for a password (scram-sha-256).

The machine's PostgreSQL (127.0.0.1:5432) trusts every local connection, so a role's password is never asked
for there, and a process that failed to read a password file would connect all the same. This one, made with
`initdb` in a temporary folder and run as the `postgres` system user (initdb refuses root), proves that a
password reached every process that connected. It listens on a free 127.0.0.1 port and on a socket in its
folder, and is stopped (immediately: nothing in it is kept) and removed by `close()`.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from gdexp.serving import free_port


class PrivatePostgres:
    def __init__(self) -> None:
        bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
                      .stdout.strip())
        self.folder = Path(tempfile.mkdtemp(prefix="gdexp-pg-"))
        self.pg_ctl, self.data, self.port = str(bindir / "pg_ctl"), self.folder / "data", free_port()
        try:
            self._start(bindir)
        except BaseException:  # nothing of a server that did not start is left behind
            self.close()
            raise

    def _start(self, bindir: Path) -> None:
        shutil.chown(self.folder, "postgres")
        self.superuser_password = secrets.token_hex(16)
        pwfile = self.folder / "pw"
        pwfile.write_text(self.superuser_password)
        shutil.chown(pwfile, "postgres")
        self._as_postgres(str(bindir / "initdb"), "-D", str(self.data), "-A", "scram-sha-256", "-U", "postgres",
                          f"--pwfile={pwfile}")
        pwfile.unlink()  # the superuser's password lives in this object only
        self._as_postgres(self.pg_ctl, "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-o",
                          f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", "start")

    def _as_postgres(self, *cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], cwd=self.folder, check=True, capture_output=True,
                       timeout=120)

    def sql(self, *statements: str) -> None:
        """Run statements as the superuser (autocommit: CREATE DATABASE cannot run in a transaction)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             password=self.superuser_password, autocommit=True) as admin:
            for statement in statements:
                admin.execute(statement)  # type: ignore[arg-type]

    def url(self, role: str, database: str) -> str:
        """The URL of `database` as `role`, without a password: libpq finds it in PGPASSFILE."""
        return f"postgresql://{role}@127.0.0.1:{self.port}/{database}"

    def password_file(self, folder: Path, role: str, password: str) -> Path:
        """A libpq password file (`host:port:database:user:password`, mode 0600, or libpq ignores it)."""
        path = folder / "pgpass"
        path.write_text(f"127.0.0.1:{self.port}:*:{role}:{password}\n")
        path.chmod(0o600)
        return path

    def close(self) -> None:
        if self.data.exists():
            subprocess.run(["runuser", "-u", "postgres", "--", self.pg_ctl, "-D", str(self.data), "-m", "immediate",
                            "-w", "stop"], cwd=self.folder, capture_output=True, timeout=120, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)
