"""What a benchmarked system provides to the generic cases in bench.cases."""
import contextlib
import time

from .common import BenchError, Recorder


class System:
    key = None            # 'pyramid_scheduler', 'kombu', 'celery', 'huey'
    label = None          # column heading
    brokers = ('redis', 'amqp', 'sqlite')
    supports_date = False
    date_brokers = ('redis', 'amqp', 'sqlite')
    worker_ready_timeout = 60

    def __init__(self, ctx, broker):
        self.ctx = ctx
        self.broker = broker
        self.worker = None
        self.queue = f'{ctx.run_id}_{self.key}_{broker}'

    # --- to implement --------------------------------------------------------
    def setup(self):
        pass

    def enqueue_noop(self):
        raise NotImplementedError

    def send_record(self, path, tag):
        raise NotImplementedError

    def send_record_at(self, path, when):
        raise BenchError('no delayed jobs')

    def worker_argv(self):
        raise NotImplementedError

    def worker_env(self):
        return self.ctx.env()

    def purge(self):
        pass

    def teardown(self):
        pass

    # --- shared -----------------------------------------------------------------
    @contextlib.contextmanager
    def enqueue_context(self):
        """Around a series of enqueue_noop() calls (a request, for ours)."""
        yield

    def start_worker(self):
        from .common import spawn
        self.worker = spawn(self.ctx, f'{self.key}-{self.broker}',
                            self.worker_argv(), env=self.worker_env())
        return self.worker

    def stop_worker(self):
        if self.worker is not None:
            self.worker.stop(timeout=15)
            self.worker = None

    def ensure_worker(self):
        """Start the worker if needed and wait until it runs a job."""
        if self.worker is not None and self.worker.alive():
            return
        self.start_worker()
        self.wait_ready()

    def wait_ready(self):
        recorder = Recorder(self.ctx, 'ready')
        try:
            self.send_record(recorder.path, -1)
            deadline = time.monotonic() + self.worker_ready_timeout
            while time.monotonic() < deadline:
                if len(recorder):
                    return
                if not self.worker.alive():
                    raise BenchError(f'{self.label} worker exited:\n'
                                     f'{self.worker.tail()}')
                time.sleep(0.02)
            raise BenchError(f'{self.label} worker not ready after '
                             f'{self.worker_ready_timeout}s:\n'
                             f'{self.worker.tail()}')
        finally:
            recorder.close()

    def worker_processes(self):
        return self.worker.tree() if self.worker is not None else []


def kombu_purge(url, names, transport=None, transport_options=None):
    """Purge (and on AMQP delete) queues by name; errors are ignored."""
    import kombu
    conn = kombu.Connection(url, transport=transport,
                            transport_options=transport_options or {})
    try:
        channel = conn.default_channel
        for name in names:
            try:
                channel.queue_purge(name)
            except Exception:
                pass
    except Exception:
        pass
    finally:
        conn.release()


def amqp_delete(names, exchanges=()):
    import kombu
    from .common import AMQP_URL
    conn = kombu.Connection(AMQP_URL)
    try:
        for name in names:
            try:
                conn.default_channel.queue_delete(name)
            except Exception:
                conn.release()
                conn = kombu.Connection(AMQP_URL)
        for name in exchanges:
            try:
                conn.default_channel.exchange_delete(name)
            except Exception:
                conn.release()
                conn = kombu.Connection(AMQP_URL)
    finally:
        conn.release()


def redis_delete_matching(db, pattern):
    import redis
    from .common import REDIS_HOST, REDIS_PORT
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
        return len(keys)
    finally:
        client.close()
