"""A loopback TCP proxy in front of the test's PostgreSQL that forwards, partitions or refuses:
the database outages of the health URL tests and the chaos drills."""

from __future__ import annotations

import socket
import threading

from django.db import connection

from tests.processes import free_port


class DatabaseProxy:
    """A loopback TCP proxy to PostgreSQL that forwards, partitions or refuses.

    * ``partition()``: nothing moves any more and nothing is reset: open connections hang,
      new ones are accepted and hang too (a network partition). ``restore()`` lets the held
      bytes through, as a healed network would.
    * ``refuse()``: the port closes (new connections are refused, as by a stopped server);
      with ``terminate_test_database_sessions`` the open ones end too: a hard stop.
    """

    def __init__(self, *, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._flowing = threading.Event()
        self._flowing.set()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listen()

    @classmethod
    def in_front_of_the_test_database(cls) -> DatabaseProxy:
        db = connection.settings_dict
        return cls(upstream=(db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)))

    def upstream_ports(self) -> list[int]:
        """Local ports of the proxy's connections to the upstream (the server's sessions)."""
        ports = []
        with self._lock:
            for sock in self._sockets:
                try:
                    if sock.getpeername()[1] == self.upstream[1]:
                        ports.append(sock.getsockname()[1])
                except OSError:  # already dropped
                    continue
        return ports

    def terminate_sessions(self) -> int:
        """``pg_terminate_backend`` on every server session that came through this proxy (a
        hard stop of the processes behind it); the test process's own sessions - its threads
        hold some - are not touched, nor anybody else's on this shared server."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND client_port = ANY(%s)",
                [self.upstream_ports()],
            )
            return cursor.fetchone()[0]

    def partition(self) -> None:
        self._flowing.clear()

    def refuse(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def restore(self) -> None:
        if self._listener is None:
            self._listen()
        self._flowing.set()

    def close(self) -> None:
        self.refuse()
        self._flowing.set()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _drop(sock)

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(256)
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed: refusing
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()  # a partition holds new connections before they reach the server
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        client.settimeout(None)
        upstream.settimeout(None)
        with self._lock:
            self._sockets |= {client, upstream}
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets -= {source, target}
            _drop(source)
            _drop(target)


def _drop(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
