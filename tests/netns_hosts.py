"""Several "hosts" on one machine, for tests/test_netns_hosts.py (issue 17).

Each host is a network namespace (``ip netns``) joined to a bridge by a veth
pair, and runs ``pscheduler`` in a UTS namespace of its own (its own host
name). The bridge carries a private Redis, listening on the bridge's
address only, and a forwarder to the suite's own PostgreSQL
(``PSCHEDULER_TEST_PG_URL``, on loopback, which no namespace reaches): each
host reaches both over its link, and cutting that link (``partition``)
cuts it off while its processes live on. (A private PostgreSQL would have
to run as the ``postgres`` user, which a fresh root made by
tools/fresh-debian cannot: its ``/`` is not traversable by other users.) Everything is made by :func:`net_hosts` and torn down
after, as root; the addresses are in 10.231.0.0/16, on this machine only.
"""
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from sqlalchemy.engine import url as sa_url

from tests.daemon_helpers import PG_URL, Daemon, child_env, wait_for
from tests.forwarding import Forwarder


def can_make_hosts():
    """Why this machine cannot make network namespaces, or None."""
    if os.geteuid() != 0:
        return 'needs root (ip netns, veth, a private PostgreSQL)'
    for tool in ('ip', 'nsenter', 'unshare', 'redis-server'):
        if shutil.which(tool) is None:
            return f'{tool} is not installed (scripts/services.sh start)'
    return None


NETNS_DIR = '/run/netns'


def is_mount_point(path):
    """Whether something is mounted on ``path`` (a bind mount within the
    same file system too, which os.path.ismount does not see)."""
    with open('/proc/self/mountinfo') as mounts:
        return any(line.split()[4] == path for line in mounts)


def in_netns(netns):
    """The command prefix that runs a program in ``netns``: nsenter, not
    ``ip netns exec``, which remounts / and /sys and fails where / is not
    a mount point (a chroot: "mount --make-rslave / failed")."""
    return ['nsenter', f'--net={NETNS_DIR}/{netns}']


def ip(*args, netns=None, check=True):
    command = [*(in_netns(netns) if netns else []), 'ip', *args]
    return subprocess.run(command, check=check, capture_output=True,
                          text=True)


class NetHosts:
    """The bridge, the hosts and the servers; see the module docstring."""

    def __init__(self, count):
        self.tag = uuid.uuid4().hex[:5]
        self.bridge = f'psb{self.tag}'
        self.subnet = f'10.231.{random.randrange(1, 250)}'
        self.server_ip = f'{self.subnet}.1'
        self.names = [f'psh{self.tag}{n}' for n in range(count)]
        self.links = [f'psv{self.tag}{n}' for n in range(count)]
        self.work = Path(tempfile.mkdtemp(prefix='pshosts-'))
        self.servers = []
        self.pg_port = self.redis_port = None
        self.pg_database = None
        self.forwarder = None    # to the suite's PostgreSQL
        # "ip netns add" bind-mounts /run/netns the first time: a mount
        # made by these tests is undone by them (tear_down).
        self.netns_mounted_before = is_mount_point(NETNS_DIR)

    # --- the network ---------------------------------------------------------

    def make_network(self):
        ip('link', 'add', self.bridge, 'type', 'bridge')
        ip('addr', 'add', f'{self.server_ip}/24', 'dev', self.bridge)
        ip('link', 'set', self.bridge, 'up')
        for number, (name, link) in enumerate(zip(self.names, self.links)):
            ip('netns', 'add', name)
            ip('link', 'add', link, 'type', 'veth', 'peer', 'name',
               f'{link}p')
            ip('link', 'set', f'{link}p', 'netns', name)
            ip('link', 'set', link, 'master', self.bridge)
            ip('link', 'set', link, 'up')
            ip('addr', 'add', f'{self.subnet}.{11 + number}/24', 'dev',
               f'{link}p', netns=name)
            ip('link', 'set', f'{link}p', 'up', netns=name)
            ip('link', 'set', 'lo', 'up', netns=name)

    def partition(self, number, cut=True):
        """Cut host ``number``'s link (its processes live on), or mend it."""
        ip('link', 'set', self.links[number], 'down' if cut else 'up')

    # --- the servers ---------------------------------------------------------

    def start_servers(self):
        self.pg_port, self.redis_port = free_port(), free_port()
        self._start_postgres()
        self.servers.append(subprocess.Popen(
            ['redis-server', '--bind', self.server_ip, '--port',
             str(self.redis_port), '--protected-mode', 'no', '--save', '',
             '--appendonly', 'no'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(self._servers_answer, 30, interval=0.2,
                 what='the private PostgreSQL and Redis')

    def _start_postgres(self):
        """The forwarder from the bridge to the suite's PostgreSQL."""
        target = sa_url.make_url(PG_URL)
        self.pg_database = target.database
        self.forwarder = Forwarder(
            (self.server_ip, self.pg_port),
            (target.host or '127.0.0.1', target.port or 5432)).open()

    def _servers_answer(self):
        import psycopg2
        import redis
        try:
            psycopg2.connect(host=self.server_ip, port=self.pg_port,
                             user='postgres', dbname=self.pg_database,
                             connect_timeout=1).close()
            return redis.Redis(host=self.server_ip, port=self.redis_port,
                               socket_timeout=1).ping()
        except Exception:
            return False

    @property
    def pg_url(self):
        return (f'postgresql+psycopg2://postgres@{self.server_ip}:'
                f'{self.pg_port}/{self.pg_database}')

    @property
    def redis_url(self):
        return f'redis://{self.server_ip}:{self.redis_port}/0'

    # --- daemons -------------------------------------------------------------

    def daemon(self, number, ini, log_path=None):
        """A Daemon for ``ini`` on host ``number`` (not started)."""
        return HostDaemon(self.names[number], f'host{number}', ini,
                          log_path=log_path)

    def tear_down(self):
        if self.forwarder is not None:
            self.forwarder.close()
        for server in self.servers:
            server.terminate()
        for server in self.servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(10)
            if server.poll() is None:
                server.kill()
        for name in self.names:
            ip('netns', 'del', name, check=False)
        ip('link', 'del', self.bridge, check=False)
        if (not self.netns_mounted_before and is_mount_point(NETNS_DIR)
                and not os.listdir(NETNS_DIR)):
            subprocess.run(['umount', NETNS_DIR], check=False)
        shutil.rmtree(self.work, ignore_errors=True)


class HostDaemon(Daemon):
    """``python -m pscheduler`` in a host's network namespace, with its own
    host name; its pid is the master's (nsenter, unshare and sh exec it)."""

    def __init__(self, netns, hostname, ini, log_path=None):
        super().__init__(ini, env=child_env(), log_path=log_path)
        self.netns = netns
        self.hostname = hostname

    def start(self):
        command = [*in_netns(self.netns), 'unshare', '--uts',
                   'sh', '-c', f'hostname {self.hostname} && exec "$0" "$@"',
                   sys.executable, '-m', 'pscheduler', str(self.ini)]
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=str(self.ini.parent),
                env=self.env, start_new_session=True)
        return self


def free_port():
    """A port free on this machine's loopback, likely free on the bridge."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def net_hosts(count):
    hosts = NetHosts(count)
    try:
        hosts.make_network()
        hosts.start_servers()
        yield hosts
    finally:
        hosts.tear_down()
