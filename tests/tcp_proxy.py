"""A small TCP proxy for the tests, able to black-hole its traffic: a network cut between a client and a
server that closes nothing, so neither side hears a FIN or a reset (the loopback kernel still accepts and
acknowledges what the client sends: only a timer of the client's own can tell it that nobody answers)."""

from __future__ import annotations

import contextlib
import socket
import threading


class BlackHoleProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; ``black_hole()`` stops forwarding both ways for good."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.connections = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def black_hole(self) -> None:
        """From now on every byte either way is read and dropped; no connection is closed."""
        self._cut.set()

    @property
    def cut(self) -> bool:
        return self._cut.is_set()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                # New connections after the cut go nowhere either (a SYN into the void would time out; an
                # accepted socket that never answers is the same to a client with a connect timeout).
                with self._lock:
                    self._sockets.append(client)
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.extend((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                if not self._cut.is_set():
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                return
            if self._cut.is_set():
                continue  # swallowed
            try:
                sink.sendall(data)
            except OSError:
                return

    def _swallow(self, sock: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                if not sock.recv(65536):
                    return
            except OSError:
                return
