"""The metrics server: Prometheus text format at ``scheduler.metrics.bind``.

The master binds the address when it starts, as gunicorn binds its
listeners: a taken or wrong address stops the start with exit code 3
instead of a loop of failing restarts. It then forks one process that
serves the socket, with prometheus_client's WSGI app on wsgiref (a thread
per scrape). That process loads no application and touches no broker or
job store: it reads the files every process of the daemon writes
(runtime.metrics, prometheus_client's multiprocess mode) and the master's
process table (pyramid_scheduler.daemonview), so a scrape never waits on
a job, a store or the master's loop, and its cost does not grow with the
number of stored jobs (their count is written by the job store owner
every few seconds). The master restarts a server that dies, and stops it
last.

Its own children (the queues' processes) close the socket right after the
fork, like every descriptor of the master's.
"""
import glob
import logging
import os
import signal
import socket
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from socketserver import ThreadingMixIn

from pyramid_scheduler.daemonview import metrics_dir, read_table

from . import exitcodes, handles
from .backoff import Backoff
from .exitcodes import ExitError
from .titles import set_title

log = logging.getLogger(__name__)

METRICS_PATH = '/metrics'
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


def bind(address):
    """A listening socket on ``(host, port)``; ExitError (exit code 3) if
    the address cannot be had."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ExitError(f'setting "scheduler.metrics.bind": cannot listen on '
                        f'{host}:{port}: {exc}', exitcodes.CONFIG) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise ExitError(f'setting "scheduler.metrics.bind": cannot listen on '
                        f'{host}:{port}: {exc.strerror or exc}; choose another '
                        'address or stop what uses it', exitcodes.CONFIG
                        ) from exc
    sock.set_inheritable(False)
    return sock


class MetricsServer:
    """The master's handle on the metrics process: start, restart, stop."""

    def __init__(self, address, state_dir):
        self.socket = bind(address)
        self.state_dir = state_dir
        self.url = url_of(self.socket)
        self.pid = None
        self.backoff = Backoff()
        self.start_after = 0.0
        self.stopped = False

    def fds(self):
        return (self.socket.fileno(),) if self.socket is not None else ()

    @property
    def running(self):
        return self.pid is not None

    def ensure_running(self, now, close_in_child):
        """Fork the server if it is not running and may start again."""
        if self.running or self.stopped or now < self.start_after:
            return
        handles.flush_output()
        # As for a queue's child (handles.spawn): a signal sent right after
        # the fork waits for the server's own (default) handlers.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self.start_after = now + self.backoff.next_delay()
            log.error('cannot start the metrics server: %s', exc)
            return
        if pid == 0:
            signal.set_wakeup_fd(-1)
            for fd in set(close_in_child) - set(self.fds()):
                handles.close_quietly(fd)
            code = exitcodes.FAILURE
            try:
                code = serve(self.socket, self.state_dir, self.url)
            except BaseException:
                log.exception('the metrics server failed')
            finally:
                handles.flush_output()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.pid = pid
        log.info('metrics server %d: %s', pid, self.url)

    def exited(self, pid, code, now):
        """Whether ``pid`` was the server; if so, start another later."""
        if pid != self.pid:
            return False
        self.pid = None
        if not self.stopped:
            delay = self.backoff.next_delay()
            self.start_after = now + delay
            log.error('the metrics server %d exited (%s); starting another '
                      'in %.1fs', pid, handles.describe_exit(code), delay)
        return True

    def stop(self):
        """Stop serving (the master is stopping)."""
        self.stopped = True
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def close(self):
        if self.socket is not None:
            self.socket.close()
            self.socket = None


def url_of(sock):
    host, port = sock.getsockname()[:2]
    if ':' in host:
        host = f'[{host}]'
    return f'http://{host}:{port}{METRICS_PATH}'


# --- in the metrics process ---------------------------------------------------

def serve(sock, state_dir, url):
    """Serve ``sock`` until SIGTERM; the process's exit code."""
    from prometheus_client import CollectorRegistry, make_wsgi_app
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the master's
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    from .child import die_with_parent
    die_with_parent(signal.SIGTERM)
    set_title(f'pscheduler: metrics {url}')
    registry = CollectorRegistry()
    registry.register(FilesCollector(metrics_dir(state_dir)))
    registry.register(TableCollector(state_dir))
    server = PreboundServer(sock, QuietHandler)
    server.set_app(make_wsgi_app(registry))
    server.serve_forever()
    return exitcodes.OK


class PreboundServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server on a socket the master bound."""
    daemon_threads = True

    def __init__(self, sock, handler):
        self.address_family = sock.family
        super().__init__(sock.getsockname()[:2], handler,
                         bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()
        self.server_name = str(self.server_address[0])
        self.server_port = self.server_address[1]
        self.setup_environ()


class QuietHandler(WSGIRequestHandler):
    """No line on stderr per scrape."""

    def log_message(self, format, *args):
        pass


class FilesCollector:
    """prometheus_client's multiprocess collector, minus the file another
    process is creating this instant (empty, not readable yet) or the
    master is deleting (a dead child's gauges): such a file would fail the
    whole scrape, and the next one reads it, or does without."""

    def __init__(self, path):
        self.path = path

    def collect(self):
        from prometheus_client.multiprocess import MultiProcessCollector
        files = glob.glob(os.path.join(self.path, '*.db'))
        try:
            return MultiProcessCollector.merge(files, accumulate=True)
        except Exception:
            readable = [path for path in files if _readable(path)]
            return MultiProcessCollector.merge(readable, accumulate=True)


def _readable(path):
    from prometheus_client.multiprocess import MultiProcessCollector
    try:
        MultiProcessCollector.merge([path], accumulate=False)
    except Exception:
        return False
    return True


class TableCollector:
    """What the master's process table says: restarts and processes."""

    def __init__(self, state_dir):
        self.state_dir = state_dir

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily,
                                            GaugeMetricFamily)
        table = read_table(self.state_dir) or {}
        restarts = CounterMetricFamily(
            'pscheduler_child_restarts', 'Children replaced, by queue and '
            'reason (failed, exited, killed, hard_time_limit, no_heartbeat, '
            'memory_limit, reload)', labels=['queue', 'reason'])
        counts = {}
        for entry in table.get('restarts', []):
            key = (entry['queue'], entry['reason'])
            counts[key] = counts.get(key, 0) + entry['count']
        for (queue, reason), count in sorted(counts.items()):
            restarts.add_metric([queue, reason], count)
        yield restarts
        processes = GaugeMetricFamily(
            'pscheduler_processes', 'Child processes, by queue and state '
            '(starting, ready, stopping)', labels=['queue', 'state'])
        states = {}
        for entry in table.get('processes', []):
            if entry.get('role') == 'child':
                key = (entry['queue'], entry['state'])
                states[key] = states.get(key, 0) + 1
        for (queue, state), count in sorted(states.items()):
            processes.add_metric([queue, state], count)
        yield processes
        started = GaugeMetricFamily(
            'pscheduler_master_start_time_seconds', 'When the pscheduler '
            'master started, in seconds since the epoch')
        if table.get('started'):
            started.add_metric([], table['started'])
        yield started
