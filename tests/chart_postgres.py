"""Real PostgreSQL servers for the chart's tests, reached over loopback TCP with password (scram)
authentication, as a database service is reached from a pod.

- :func:`start_pgserver`: PostgreSQL 16 from the ``pgserver`` wheel (no TLS: its build has no SSL
  library, ``ssl_library`` is empty).
- :func:`start_tls_server`: Debian's ``postgresql`` package (built with OpenSSL), serving TLS only
  (``hostssl`` lines, no ``host``) with a server certificate signed by a CA made here, so a client
  verifies it with ``sslmode=verify-full`` and that CA, and nothing else. ``tls_server_binaries()``
  says whether the package is installed (``make test`` installs it where it can, mk/test-deps.mk).

Both run as a non-root system user when the tests run as root (PostgreSQL refuses root), with their
socket in the data folder, and stop with :meth:`Postgres.stop`.
"""

from __future__ import annotations

import datetime
import glob
import ipaddress
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Servers here take their port from the command line, so a port is chosen free and may be taken by
# another process before the server binds it: the start is then tried again on a fresh port.
PORT_ATTEMPTS = 5
PORT_TAKEN = "address already in use"
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Postgres:
    port: int
    pgdata: Path
    bin_dir: Path
    system_user: str | None
    ca_pem: str = ""  # the CA that signed the server's certificate (TLS servers only)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return subprocess.run([str(self.bin_dir / "psql"), "-h", str(self.pgdata), "-p", str(self.port), "-U",
                               "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql],
                              check=True, capture_output=True, text=True).stdout

    def create_login(self, user: str, password: str, database: str) -> None:
        """A role with a password and a database it owns (any characters: quoted here)."""
        role = '"' + user.replace('"', '""') + '"'
        secret = "'" + password.replace("'", "''") + "'"
        self.psql(f"CREATE ROLE {role} LOGIN PASSWORD {secret}")
        self.psql(f'CREATE DATABASE "{database}" OWNER {role}')

    def stop(self) -> None:
        """pg_ctl's fast shutdown; if pg_ctl gives up, the postmaster is told to quit directly and
        waited for, so no server outlives the tests."""
        try:
            self._pg_ctl(["-w", "-t", "120", "-m", "fast", "stop"], timeout=180)
            return
        except subprocess.CalledProcessError:
            pass
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown
            while True:
                os.kill(pid, 0)
                time.sleep(0.1)
        except ProcessLookupError:
            return

    def _pg_ctl(self, args: list[str], timeout: float) -> None:
        _run([str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), *args], self.system_user, timeout)

    def start_on_free_port(self, log: Path) -> None:
        """Starts (or restarts) the server on loopback TCP, on a fresh port while ports are taken."""
        for _ in range(PORT_ATTEMPTS):
            port, seen = free_port(), log.stat().st_size if log.exists() else 0
            try:
                self._pg_ctl(["-w", "-m", "fast", "-o", f"-h 127.0.0.1 -p {port} -k {self.pgdata}", "-l", str(log),
                              "restart"], timeout=120)
                self.port = port
                return
            except subprocess.CalledProcessError:
                with open(log, "rb") as text:
                    text.seek(seen)
                    if PORT_TAKEN not in text.read().decode(errors="replace").lower():
                        raise
        raise RuntimeError(f"PostgreSQL's port was taken {PORT_ATTEMPTS} times in a row:\n{log.read_text()[-3000:]}")


def _run(argv: list[str], user: str | None, timeout: float) -> None:
    # Output to a file, not a pipe: pg_ctl's server child keeps inherited pipes open (a hang).
    with tempfile.TemporaryFile("w+") as output:
        try:
            subprocess.run(argv, check=True, stdout=output, stderr=subprocess.STDOUT, user=user, timeout=timeout)
        except subprocess.CalledProcessError as exc:
            output.seek(0)
            exc.output = output.read()
            raise


def _server_user(pgdata: Path) -> str | None:
    """The non-root user the server runs as (pgserver's, created if missing) when the tests run as root."""
    if os.geteuid() != 0:
        return None
    import pwd

    from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

    user = "pgserver"
    ensure_user_exists(user)
    ensure_prefix_permissions(pgdata)
    entry = pwd.getpwnam(user)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return user


_HBA = "local all all trust\n{kind} all all 127.0.0.1/32 scram-sha-256\n"


def start_pgserver(pgdata: Path) -> Postgres:
    """pgserver's PostgreSQL 16, then restarted on loopback TCP with password authentication."""
    import pgserver

    server = pgserver.get_server(pgdata, cleanup_mode="stop")  # initdb + a first start (socket only)
    (pgdata / "pg_hba.conf").write_text(_HBA.format(kind="host"))
    pg = Postgres(0, pgdata, Path(pgserver.__file__).parent / "pginstall" / "bin", server.system_user)
    pg.start_on_free_port(pgdata / "log")
    return pg


# ---- Debian's PostgreSQL, TLS only ----------------------------------------------------------------------

def tls_server_binaries() -> Path | None:
    """The newest installed Debian PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob(DEBIAN_BIN_GLOB), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                   else 0)
    found = [p for p in found if (Path(p) / "initdb").exists() and (Path(p) / "postgres").exists()]
    return Path(found[-1]) if found else None


def make_ca_and_server_cert(folder: Path, host_ip: str = "127.0.0.1",
                            ca_name: str = "signpose test database CA") -> tuple[str, Path, Path]:
    """A self-signed CA and a server certificate it signs for ``localhost`` and ``host_ip`` (subject
    alternative names: what verify-full matches). Returns (CA PEM, server cert file, server key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name(ca_name)).issuer_name(name(ca_name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address(host_ip))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = folder / "server.crt", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)  # the server refuses a key others can read
    return ca.public_bytes(serialization.Encoding.PEM).decode(), cert_file, key_file


def start_tls_server(pgdata: Path, bin_dir: Path) -> Postgres:
    """Debian's PostgreSQL in ``pgdata``: TLS with a certificate of a CA made here, and only TLS."""
    pgdata.mkdir(parents=True)
    user = _server_user(pgdata)
    _run([str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"],
         user, timeout=300)
    ca_pem, cert_file, key_file = make_ca_and_server_cert(pgdata)
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        for path in (cert_file, key_file):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write(f"\nssl = on\nssl_cert_file = '{cert_file}'\nssl_key_file = '{key_file}'\n")
    (pgdata / "pg_hba.conf").write_text(_HBA.format(kind="hostssl"))
    pg = Postgres(0, pgdata, bin_dir, user, ca_pem)
    pg.start_on_free_port(pgdata / "log")
    return pg
