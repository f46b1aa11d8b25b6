"""Stand-in for one pscheduler child, used while ``python -m pscheduler`` is
not available: load the app from the ini and run its Runtime for every queue
(what a child does for its queue), until SIGTERM.

    python -m bench.psworker app.ini

For experiments (not used by the benchmark's own cases), the environment
variable ``BENCH_PS_PREFETCH=N`` makes the runtime prefetch N messages
instead of ``scheduler.executor.size``, to measure that suggested change
without editing the package. (The earlier switches for one Redis client
per channel, batched Redis acknowledgements and a WAL job store are gone:
the package does all three now.) ``BENCH_PS_TRACE=FIFO`` records, like a job
does, the time each message reaches ``QueueConsumer.on_message`` (to split the
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
            self.acks.prefetch_count = int(prefetch)
        runtime.Runtime.__init__ = patched
    app = get_app(argv[0])
    if os.environ.get('BENCH_PS_TRACE'):
        trace_on_message(os.environ['BENCH_PS_TRACE'])
    scheduler = app.registry.scheduler
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    scheduler.start()
    while not stop.wait(1):
        pass
    scheduler.shutdown(timeout=5)


def trace_on_message(path):
    from bench.jobs import record
    from pyramid_scheduler.runtime.consumer import QueueConsumer
    on_message = QueueConsumer.on_message

    def traced(self, message):
        record(path, 0)
        return on_message(self, message)
    QueueConsumer.on_message = traced


if __name__ == '__main__':
    main()
