"""A private Mosquitto in a subprocess, for fault tests and benchmarks.

The shared broker must never be stopped, restarted or reconfigured, and its default
``max_queued_messages 1000`` silently drops QoS 1 messages for a slow persistent
subscriber once a burst exceeds it. :class:`PrivateMosquitto` runs ``mosquitto`` on a
port of its own with the settings a test asks for:

* ``max_queued_messages`` — a deep per-client queue (docs/ingest.md recommends one for ingest);
* ``persistence`` — sessions and queued messages survive :meth:`~PrivateMosquitto.restart`;
* ``password_file`` / ``acl_file`` — anonymous access off, as provisioning configures brokers;
  after rewriting them, :meth:`~PrivateMosquitto.reload` makes the broker read them again;
* ``conf_lines`` — more lines at the end of the config (a later line wins), e.g. the shipped
  config's autosave settings.
* ``tls`` — the listener speaks TLS only (:class:`BrokerTls`: certificate, key and, to require
  client certificates, the CA that signs them); :attr:`~PrivateMosquitto.url` is then ``mqtts://``.

Started as root, mosquitto would switch to the ``mosquitto`` user and then fail to write its
data directory or read the caller's 0600 password and ACL files (which a test may rewrite
mid-run, so chown'ing them once is not enough). The config therefore names the user the test
runs as: the broker keeps the test's permissions, whoever that is. A test about those very
permissions passes ``run_as="mosquitto"`` instead: started by root, the broker drops to that
user as the packaged service does, and reads its files (and rereads them on SIGHUP) as it.

``conf``: listener and authentication lines of the test's own (e.g. the shipped
``deploy/mosquitto/fieldwatch.conf`` with test ports and paths, :func:`shipped_conf`) instead of
one anonymous or password-file listener on :attr:`~PrivateMosquitto.port`.

Failures (it does not start, it exits) raise :class:`BrokerStartError` quoting the broker's
log, whose path is :attr:`~PrivateMosquitto.log_path`.
"""

from __future__ import annotations

import getpass
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support.ports import free_port
from tests.support.waits import WaitTimeout, wait_until


class BrokerStartError(RuntimeError):
    """The mosquitto binary is missing, or the broker exited or never listened."""


def mosquitto_binary() -> str:
    """Path of ``mosquitto`` (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        raise BrokerStartError("mosquitto is not installed (apt-get install mosquitto)")
    return exe


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener: the broker's certificate and key; ``client_ca`` set: client certificates
    signed by that CA are required (``require_certificate``)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def conf_lines(self) -> list[str]:
        """Options of the listener defined last in the config (Mosquitto applies them to it)."""
        lines = [f"certfile {self.cert}", f"keyfile {self.key}", "tls_version tlsv1.2"]
        if self.client_ca is not None:
            lines += [f"cafile {self.client_ca}", "require_certificate true"]
        return lines


class PrivateMosquitto:
    """``mosquitto -c <generated conf>`` on :attr:`port`; :attr:`url` is its mqtt:// address.

    A context manager (start on enter; stop and remove its files on exit). ``workdir``: where
    the config, log and persistence file go (default: a temporary directory removed by
    :meth:`close`; a given directory is left in place, e.g. pytest's ``tmp_path``).
    """

    def __init__(
        self,
        *,
        persistence: bool = False,
        max_queued_messages: int = 100_000,
        port: int | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        workdir: Path | None = None,
        run_as: str | None = None,
        conf: str | None = None,
        conf_lines: Sequence[str] = (),
        tls: BrokerTls | None = None,
    ) -> None:
        self._exe = mosquitto_binary()
        if run_as is not None and os.geteuid() != 0:
            raise BrokerStartError(f"only root can start mosquitto as {run_as!r} (it drops privileges when root)")
        if conf is not None and (port is None or f"listener {port}" not in conf):
            raise ValueError("with conf=, pass the port of one of its listeners as port= (the one waited on)")
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="fw-mosquitto-")) if workdir is None else Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "mosquitto.log"
        self._stdout_path = self.dir / "mosquitto.stdout"
        lines = [
            f"max_queued_messages {max_queued_messages}",
            "max_inflight_messages 0",
            f"user {run_as or getpass.getuser()}",
            f"log_dest file {self.log_path}",
            *(f"log_type {kind}" for kind in ("error", "warning", "notice", "information")),
        ]
        if conf is not None:
            lines.append(conf)
        elif password_file is None and acl_file is None:
            lines += [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        else:
            lines.append(f"listener {self.port} 127.0.0.1")
            lines.append("allow_anonymous false")
            if password_file is not None:
                lines.append(f"password_file {password_file}")
            if acl_file is not None:
                lines.append(f"acl_file {acl_file}")
        if persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        self.tls = tls
        if tls is not None:  # last: listener options apply to the listener defined last
            lines += tls.conf_lines()
        lines += conf_lines
        self.conf_path = self.dir / "mosquitto.conf"
        self.conf_path.write_text("\n".join(lines) + "\n")
        if run_as is not None:  # its own directory (log, persistence) belongs to the user it runs as
            user = pwd.getpwnam(run_as)
            for path in (self.dir, self.conf_path):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        """``mqtts`` on a TLS listener, else ``mqtt``."""
        return "mqtts" if self.tls is not None else "mqtt"

    def url_as(self, username: str, password: str) -> str:
        """The URL with credentials, for a broker with a password file."""
        return f"{self.scheme}://{username}:{password}@127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The broker's process id (for a reload command like ``kill -HUP <pid>``)."""
        assert self._proc is not None and self._proc.poll() is None, "the broker is not running"
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and return once it accepts TCP connections."""
        with self._stdout_path.open("ab") as out:
            self._proc = subprocess.Popen([self._exe, "-c", str(self.conf_path)], stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(self._listening, timeout, what=f"mosquitto to listen on port {self.port}", interval=0.02)
        except WaitTimeout as exc:
            self.kill()
            raise BrokerStartError(f"{exc}\n{self.log_tail()}") from None

    def _listening(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise BrokerStartError(f"mosquitto exited with {self._proc.returncode}\n{self.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file on the way out) and wait. Safe twice."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved since the last autosave. Safe twice."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port."""
        self.stop()
        # The outage's length is what the caller is testing: time itself has to pass here.
        time.sleep(down_s)
        self.start()

    def reload(self, timeout: float = 5.0) -> None:
        """Make the broker reread its password and ACL files (SIGHUP); returns once it has.

        Mosquitto logs "Reloading config." in the main loop iteration that applies the reload,
        before it handles any further network traffic, so once the line is in the log every
        later connection or publish is checked against the new files.
        """
        assert self._proc is not None and self._proc.poll() is None, "the broker is not running"
        before = self._count_in_log("Reloading config")
        self._proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: self._count_in_log("Reloading config") > before,
            timeout,
            what="mosquitto to reload its config after SIGHUP",
            observe=self.log_tail,
        )

    def saves(self) -> int:
        """How many times the broker has written its persistence file (its log says so each time)."""
        return self._count_in_log("Saving in-memory database")

    def _count_in_log(self, text: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(text)
        except FileNotFoundError:
            return 0

    def log_tail(self, lines: int = 20) -> str:
        """The end of the broker's log and console output, for failure messages."""
        out = []
        for path in (self.log_path, self._stdout_path):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                continue
            out.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(out) or f"(no log in {self.dir})"

    def close(self) -> None:
        """Stop the broker and remove its temporary directory (a caller's ``workdir`` is kept)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateMosquitto:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


#: The broker configuration fieldwatch ships for production (gateway and server listeners).
SHIPPED_CONF = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "fieldwatch.conf"


def shipped_conf(ports: dict[int, int], paths: dict[str, Path], source: Path = SHIPPED_CONF) -> str:
    """The shipped broker configuration with the test's ports and file paths in place of the real ones.

    ``ports`` maps each shipped listener port to the test's (its bind address becomes 127.0.0.1);
    ``paths`` maps each shipped file path to the test's. A port or path missing from the file fails
    here, so the test cannot silently run a configuration other than the one users install.
    """
    text = source.read_text()
    for shipped, port in ports.items():
        pattern = re.compile(rf"^listener {shipped}( \S+)?$", re.MULTILINE)
        if not pattern.search(text):
            raise ValueError(f"{source} has no 'listener {shipped}' line")
        text = pattern.sub(f"listener {port} 127.0.0.1", text)
    for shipped_path, path in paths.items():
        if shipped_path not in text:
            raise ValueError(f"{source} does not name {shipped_path}")
        text = text.replace(shipped_path, str(path))
    return text
