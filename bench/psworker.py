"""Stand-in for one pscheduler child, used while ``python -m pscheduler`` is
not available: load the app from the ini and run its Runtime for every queue
(what a child does for its queue), until SIGTERM.

    python -m bench.psworker app.ini

For experiments (not used by the benchmark's own cases), the environment
variable ``BENCH_PS_PREFETCH=N`` makes the runtime prefetch N messages
instead of ``scheduler.executor.size``, to measure that suggested change
without editing the package. ``BENCH_PS_REDIS_CLIENT=1`` makes kombu's
Redis channel reuse one redis-py client instead of building one per command
(another suggested change). ``BENCH_PS_BATCH_ACKS=1`` sends the Redis
acknowledgements waiting at each consumer turn in one pipeline instead of
one round trip each (a third). ``BENCH_PS_JOBSTORE_WAL=1`` opens the SQLite
job store's connections with ``journal_mode=WAL`` and ``synchronous=NORMAL``
(as the embedded transport does). ``BENCH_PS_TRACE=FIFO`` records, like a job
does, the time each message reaches ``Runtime.on_message`` (to split the
time to execution into delivery and the runtime's own share).
"""
import logging
import os
import signal
import sys
import threading


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING)
    from pyramid.paster import get_app
    prefetch = os.environ.get('BENCH_PS_PREFETCH')
    if prefetch:
        from pyramid_scheduler import runtime
        init = runtime.Runtime.__init__

        def patched(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self.prefetch_count = int(prefetch)
        runtime.Runtime.__init__ = patched
    app = get_app(argv[0])
    if os.environ.get('BENCH_PS_JOBSTORE_WAL'):
        jobstore_wal()
    if os.environ.get('BENCH_PS_BATCH_ACKS'):
        batch_redis_acks()
    if os.environ.get('BENCH_PS_TRACE'):
        trace_on_message(os.environ['BENCH_PS_TRACE'])
    if os.environ.get('BENCH_PS_REDIS_CLIENT'):
        cache_redis_client()
    scheduler = app.registry.scheduler
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    scheduler.start()
    while not stop.wait(1):
        pass
    scheduler.shutdown(timeout=5)


def jobstore_wal():
    from sqlalchemy import event

    from pyramid_scheduler import runtime
    make = runtime.Runtime._make_jobstore

    def patched(self, *args):
        store = make(self, *args)
        engine = getattr(store, 'engine', None)
        if engine is not None and engine.url.get_backend_name() == 'sqlite':
            @event.listens_for(engine, 'connect')
            def pragmas(dbapi_connection, record):
                cursor = dbapi_connection.cursor()
                cursor.execute('PRAGMA journal_mode=WAL')
                cursor.execute('PRAGMA synchronous=NORMAL')
                cursor.close()
        return store
    runtime.Runtime._make_jobstore = patched


def batch_redis_acks():
    import queue

    from kombu.transport import virtual

    from pyramid_scheduler import runtime

    def send_acks(self):
        items = []
        while True:
            try:
                items.append(self._acks.get_nowait())
            except queue.Empty:
                break
        acks = [m for m, action in items if action == 'ack']
        qos = getattr(acks[0].channel, 'qos', None) if acks else None
        if acks and hasattr(qos, '_remove_from_indices'):
            with qos.pipe_or_acquire() as pipe:
                for message in acks:
                    qos._remove_from_indices(message.delivery_tag, pipe)
                pipe.execute()
            for message in acks:
                virtual.QoS.ack(qos, message.delivery_tag)
                message._state = 'ACK'
        else:
            for message in acks:
                message.ack()
        for message, action in items:
            if action != 'ack':
                message.reject(requeue=True)
    runtime.Runtime._send_acks = send_acks


def trace_on_message(path):
    from bench.jobs import record
    from pyramid_scheduler import runtime
    on_message = runtime.Runtime.on_message

    def traced(self, message):
        record(path, 0)
        return on_message(self, message)
    runtime.Runtime.on_message = traced


def cache_redis_client():
    import kombu.transport.redis as kombu_redis
    create = kombu_redis.Channel._create_client

    def cached(self, asynchronous=False):
        if asynchronous:
            return create(self, True)
        client = self.__dict__.get('_bench_client')
        if client is None:
            client = self.__dict__['_bench_client'] = create(self)
        return client
    kombu_redis.Channel._create_client = cached


if __name__ == '__main__':
    main()
