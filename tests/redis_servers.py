"""Local Redis servers beyond the shared one, for the storage tests: a Redis Cluster of masters and a
TLS Redis with a self-signed certificate. Each runs from a temp dir on free loopback ports, in the
foreground under our own process handle, and `stop()` ends exactly the processes it started."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis

SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000  # a cluster node also listens on port + 10000
START_TIMEOUT = 15.0  # a master only turns its cluster state "ok" two seconds after it starts


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(bus: bool = False) -> int:
    """A free loopback port (with `bus`, port + 10000 is free too)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not bus or (port + CLUSTER_BUS_OFFSET < 65536 and _bindable(port + CLUSTER_BUS_OFFSET)):
            return port


def _wait(check, what: str, processes: list[subprocess.Popen[bytes]]) -> None:
    """Until `check()` holds; fails at once when a server has exited (its log is in the workdir)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{what}: a redis-server exited ({process.returncode}); see its .log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {START_TIMEOUT:.0f} s")
        time.sleep(0.02)


class LocalRedis:
    """The redis-server processes of one test session."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def _server(self, name: str, *args: str) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        common = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir))
        self.processes.append(subprocess.Popen(["redis-server", *common, *args], stdout=log, stderr=log))
        log.close()

    def cluster(self, masters: int = 3) -> str:
        """Start a cluster of `masters` (no replicas), slots split evenly as `redis-cli --cluster
        create` would; returns `redis+cluster://` to its first node once every node says "ok"."""
        ports = [free_port(bus=True) for _ in range(masters)]
        for port in ports:
            conf = f"nodes-{port}.conf"
            self._server(
                f"cluster-{port}",
                "--port",
                str(port),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf,
            )
        nodes = [redis.Redis(port=port, socket_timeout=1) for port in ports]
        try:
            for node in nodes:
                _wait(node.ping, "a cluster node", self.processes)
            for i, node in enumerate(nodes):
                node.execute_command(
                    "CLUSTER ADDSLOTSRANGE", SLOTS * i // masters, SLOTS * (i + 1) // masters - 1
                )
                for port in ports[i + 1 :]:
                    node.execute_command("CLUSTER MEET", "127.0.0.1", port)

            def ready() -> bool:
                infos = [node.execute_command("CLUSTER INFO") for node in nodes]
                return all(
                    i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) == masters for i in infos
                )

            _wait(ready, "the cluster", self.processes)
        finally:
            for node in nodes:
                node.close()
        return f"redis+cluster://127.0.0.1:{ports[0]}"

    def tls(self) -> str:
        """Start a TLS-only Redis with a fresh self-signed certificate; returns its `rediss://` URL
        with `ssl_cert_reqs=none` (the certificate is not signed by anyone the client trusts)."""
        cert, key = self.workdir / "tls-cert.pem", self.workdir / "tls-key.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
                *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"),
            ],
            check=True,
            capture_output=True,
        )
        port = free_port()
        self._server(
            "tls",
            *("--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)),
        )
        url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none"
        client = redis.Redis.from_url(url, socket_timeout=1)
        try:
            _wait(client.ping, "the TLS server", self.processes)
        finally:
            client.close()
        return url

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
