"""A private Mosquitto broker in a subprocess, for benchmarks and fault tests.

The shared broker must never be restarted or reconfigured, and Mosquitto's
default ``max_queued_messages 1000`` silently drops QoS 1 messages for a slow
persistent subscriber once a burst exceeds it. This starts ``mosquitto`` on a
free 127.0.0.1 port with the settings docs/ingest.md recommends for ingest
(a deep per-client queue, optional persistence so sessions survive a restart),
and can stop and restart it on the same port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


class BrokerStartError(RuntimeError):
    """The mosquitto binary is missing or did not start listening."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalMosquitto:
    """``mosquitto -c <generated conf>`` on ``port``; ``url`` is its mqtt:// address."""

    def __init__(self, *, persistence: bool = False, max_queued_messages: int = 100_000, port: int | None = None):
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe is None:
            raise BrokerStartError("mosquitto is not installed (apt-get install mosquitto)")
        self._exe = exe
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="fw-mosquitto-"))
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to user "mosquitto": it must be able to write its
            # persistence file and log here, or sessions silently do not survive a restart.
            try:
                shutil.chown(self._dir, "mosquitto")
            except LookupError:
                lines_user = "user root"
            else:
                lines_user = ""
        else:
            lines_user = ""
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"max_queued_messages {max_queued_messages}",
            "max_inflight_messages 0",
            "log_type error",
            "log_type warning",
            f"log_dest file {self._dir / 'mosquitto.log'}",
        ]
        if lines_user:
            lines.append(lines_user)
        if persistence:
            lines += ["persistence true", f"persistence_location {self._dir}/", "autosave_interval 1"]
        self._conf = self._dir / "mosquitto.conf"
        self._conf.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        self._proc = subprocess.Popen(
            [self._exe, "-c", str(self._conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerStartError(f"mosquitto exited with {self._proc.returncode}; see {self._dir}/mosquitto.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise BrokerStartError(f"mosquitto did not listen on port {self.port} within {timeout} s")

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

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalMosquitto:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
