"""A private RabbitMQ node for the tests that kill their broker.

The shared node (``rabbit@<host>`` on 5672) must never be killed; this one
has a name, AMQP and distribution ports, data and logs of its own, listens
on loopback only, loads no plugin (the management plugin would want 15672)
and has its own Erlang cookie in a HOME of its own, so nothing shared is
read or written. It runs as the current user, straight from
``/usr/lib/rabbitmq/bin`` (the ``/usr/sbin`` wrapper would switch to the
rabbitmq user, who cannot write the test's tmp directory).

``kill()`` is a crash: SIGKILL of the node's beam process, nothing flushed;
its epmd registration ends with the process. ``start()`` again on the same
directory brings back what the node had written to disk.
"""
import os
import secrets
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import psutil

from tests.daemon_helpers import wait_for

SERVER = '/usr/lib/rabbitmq/bin/rabbitmq-server'


def available():
    return os.path.exists(SERVER) and shutil.which('erl') is not None


class PrivateRabbit:
    """``start()``, ``url``, ``kill()``; data kept in ``directory``."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.dist_port = _free_port()
        self.name = f'pst{secrets.token_hex(4)}@localhost'
        self.process = None
        self._write_files()

    @property
    def url(self):
        return f'pyamqp://guest:guest@127.0.0.1:{self.port}//'

    def _write_files(self):
        home = self.directory / 'home'
        home.mkdir(exist_ok=True)
        cookie = home / '.erlang.cookie'
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.directory / 'rabbitmq.conf').write_text(
            f'listeners.tcp.1 = 127.0.0.1:{self.port}\n'
            'loopback_users = none\n')
        (self.directory / 'enabled_plugins').write_text('[].\n')

    def _env(self):
        env = dict(os.environ)
        env.update(
            HOME=str(self.directory / 'home'),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS='127.0.0.1',
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(self.directory / 'rabbitmq.conf'),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(
                self.directory / 'enabled_plugins'),
            RABBITMQ_MNESIA_BASE=str(self.directory / 'mnesia'),
            RABBITMQ_LOG_BASE=str(self.directory / 'log'),
            RABBITMQ_PID_FILE=str(self.directory / 'node.pid'),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                '-kernel inet_dist_use_interface {127,0,0,1}'),
        )
        return env

    def start(self, timeout=60):
        self.process = subprocess.Popen(
            [SERVER], env=self._env(), cwd=str(self.directory),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(self._accepts_amqp, timeout, interval=0.2,
                 what=f'private RabbitMQ node {self.name} on {self.port}')
        return self

    def _accepts_amqp(self):
        import kombu
        if self.process.poll() is not None:
            raise RuntimeError(
                f'private RabbitMQ node exited ({self.process.returncode}); '
                f'see {self.directory / "log"}')
        try:
            with kombu.Connection(self.url, connect_timeout=1) as connection:
                connection.connect()
                return True
        except Exception:
            return False

    def beam(self):
        """The node's Erlang VM process (beam.smp), or None: a descendant
        of the script started (the node name is not on its command line)."""
        if self.process is None:
            return None
        try:
            family = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        return next((p for p in family if p.name().startswith('beam')), None)

    def kill(self):
        """Crash the node: SIGKILL its beam, then reap what it leaves."""
        beam = self.beam()
        if beam is not None:
            os.kill(beam.pid, signal.SIGKILL)
            beam.wait(10)
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
            self.process = None


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]
