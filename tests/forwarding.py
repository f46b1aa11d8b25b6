"""A TCP forwarder in the test process: a port that reaches a server only
while the test wants it to (a broker down at boot: test_config_errors), or
that puts a loopback server on another address (the PostgreSQL of the
network-namespace hosts: netns_hosts)."""
import contextlib
import socket
import threading


class Forwarder:
    """Connections to ``listen`` go to ``target``, two threads each, once
    :meth:`open` is called; :meth:`close` ends the listener and them all."""

    def __init__(self, listen, target):
        self.listen = listen
        self.target = target
        self.listener = None
        self.sockets = []

    def open(self):
        self.listener = socket.create_server(self.listen)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return   # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink),
                                 daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        """Copy until ``source`` ends, then end ``sink``'s writing side (a
        server closing a session closes it for its client too)."""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self):
        for sock in [self.listener, *self.sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
