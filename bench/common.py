"""What every benchmark case uses: processes, the recorder, statistics.

Every process the benchmark starts is its own session (process group) and is
registered here; :func:`stop_all` (called from ``finally``, atexit and the
SIGINT/SIGTERM handlers) stops each group with SIGTERM, then SIGKILL.
"""
import atexit
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REDIS_HOST = '127.0.0.1'
REDIS_PORT = 6379
AMQP_URL = 'amqp://guest:guest@127.0.0.1:5672//'
# Redis databases 10-15 are the benchmark's; one per system so that nothing
# the peers keep per database (Celery's "unacked" hash, kombu's bindings)
# is shared.
REDIS_DB = {'pyramid_scheduler': 10, 'kombu': 11, 'celery': 12, 'huey': 13}


def redis_url(system):
    return f'redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB[system]}'


class BenchError(Exception):
    pass


# --- the run's context ------------------------------------------------------

class Context:
    """Per-run names and the temporary directory (logs, SQLite files, FIFOs)."""

    def __init__(self, keep=False, verbose=False):
        self.run_id = 'bench' + uuid.uuid4().hex[:8]
        self.tmp = tempfile.mkdtemp(prefix=f'pscheduler-{self.run_id}-')
        self.logs = os.path.join(self.tmp, 'logs')
        os.makedirs(self.logs)
        self.keep = keep
        self.verbose = verbose
        self._n = 0

    def path(self, name):
        self._n += 1
        return os.path.join(self.tmp, f'{self._n:03d}-{name}')

    def log(self, *args):
        print(time.strftime('%H:%M:%S'), *args, file=sys.stderr, flush=True)

    def env(self, **extra):
        env = dict(os.environ)
        env['PYTHONPATH'] = ROOT + (os.pathsep + env['PYTHONPATH']
                                    if env.get('PYTHONPATH') else '')
        env.pop('PYRAMID_SCHEDULER_CONSUME', None)
        env.update({k: str(v) for k, v in extra.items()})
        return env


# --- processes ------------------------------------------------------------------

_procs = []
_procs_lock = threading.Lock()


class Proc:
    def __init__(self, name, popen, log_path):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path

    def alive(self):
        return self.popen.poll() is None

    def tail(self, n=30):
        try:
            with open(self.log_path, encoding='utf-8', errors='replace') as f:
                return ''.join(f.readlines()[-n:])
        except OSError:
            return ''

    def tree(self):
        """psutil processes of this one and its descendants."""
        try:
            top = psutil.Process(self.pid)
            return [top] + top.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout=10, sig=signal.SIGTERM):
        stop_group(self, timeout, sig)


def spawn(ctx, name, argv, env=None, cwd=None):
    log_path = os.path.join(ctx.logs, f'{name}-{len(_procs)}.log')
    with open(log_path, 'ab') as out:
        popen = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env or ctx.env(), cwd=cwd or ROOT, start_new_session=True)
    proc = Proc(name, popen, log_path)
    with _procs_lock:
        _procs.append(proc)
    if ctx.verbose:
        ctx.log(f'started {name} pid {proc.pid}: {" ".join(argv)}')
    return proc


def stop_group(proc, timeout=10, sig=signal.SIGTERM):
    """Stop the process group of ``proc`` (it is a session leader)."""
    pgid = proc.pid
    if proc.alive():
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left in the group (the leader, or children it did not
    # reap in time) is killed.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.popen.wait(5)
    except subprocess.TimeoutExpired:
        pass
    with _procs_lock:
        if proc in _procs:
            _procs.remove(proc)


def stop_all():
    with _procs_lock:
        procs = list(_procs)
    for proc in procs:
        stop_group(proc, timeout=5)


def _on_signal(signum, frame):
    stop_all()
    raise SystemExit(128 + signum)


def install_cleanup():
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


# --- the recorder ------------------------------------------------------------------

class Recorder:
    """A FIFO that jobs write ``"start tag"`` lines to; read by a thread.

    The benchmark holds a write end itself, so the reader never sees EOF
    while workers come and go.
    """

    def __init__(self, ctx, name='rec'):
        self.path = ctx.path(name + '.fifo')
        os.mkfifo(self.path)
        self._rfd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._wfd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        self._records = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        buffer = b''
        poller = select.poll()
        poller.register(self._rfd, select.POLLIN)
        while not self._closed:
            if not poller.poll(200):
                continue
            try:
                chunk = os.read(self._rfd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b'\n')
            if lines:
                parsed = []
                for line in lines:
                    start, tag = line.split()
                    parsed.append((float(start), float(tag)))
                with self._cond:
                    self._records.extend(parsed)
                    self._cond.notify_all()

    def __len__(self):
        with self._cond:
            return len(self._records)

    def wait(self, count, timeout):
        """Block until ``count`` records arrived; return them (or raise)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._records) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError(f'timed out after {timeout:g}s waiting '
                                     f'for {count} job runs (got '
                                     f'{len(self._records)})')
                self._cond.wait(remaining)
            return list(self._records)

    def records(self):
        with self._cond:
            return list(self._records)

    def close(self):
        self._closed = True
        self._thread.join(1)
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.unlink(self.path)
        except OSError:
            pass


# --- waiting and statistics ------------------------------------------------------------

def wait_for(condition, timeout, interval=0.02, what='a condition'):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f'timed out after {timeout:g}s waiting for {what}')
        time.sleep(interval)


def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    values = sorted(values)
    if not values:
        return float('nan')
    k = (len(values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def p50_p99(values):
    return {'p50': percentile(values, 50), 'p99': percentile(values, 99)}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cpu_seconds(procs):
    """CPU time of ``procs`` (all their threads), in seconds.

    Read from ``/proc/PID/task/*/schedstat`` (nanoseconds) where it exists:
    ``cpu_times()`` counts in clock ticks (10 ms), too coarse for an idle
    process over a few seconds.
    """
    total = 0.0
    for p in procs:
        ns = _schedstat_ns(p.pid)
        if ns is not None:
            total += ns / 1e9
            continue
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _schedstat_ns(pid):
    base = f'/proc/{pid}/task'
    try:
        tasks = os.listdir(base)
    except OSError:
        return None
    total = 0
    for task in tasks:
        try:
            with open(f'{base}/{task}/schedstat') as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def rss(pid):
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess:
        return None


def load_average():
    return os.getloadavg()[0]
