"""What publisher confirms cost an enqueue on RabbitMQ (issue 13).

    python -m bench.enqueue_confirms [N] [AMQP_URL]

Sends N (default 2,000) ``add_async_job`` through the public API to the
RabbitMQ at AMQP_URL (default the local one), once with publisher confirms
(the default) and once without (kombu's options for amqp URLs, as before
issue 13), and prints the p50, p90 and p99 of one call and the total. The
queue is deleted afterwards; nothing consumes it.
"""
import statistics
import sys
import tempfile
import time
import types
import uuid

from pyramid_scheduler import naming, transports
from pyramid_scheduler.scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings

DEFAULT_URL = 'pyamqp://guest:guest@127.0.0.1:5672//'


def measure(url, count, confirms):
    scheduler_id = f'bench-confirms-{uuid.uuid4().hex[:8]}'
    settings = parse_settings({'scheduler.broker.url': url,
                               'scheduler.id': scheduler_id},
                              here=tempfile.gettempdir())
    schemes = transports.SCHEMES
    if not confirms:
        transports.SCHEMES = types.MappingProxyType(
            {**schemes, transports.scheme_of(url): transports.OTHER})
    scheduler = Scheduler(settings)
    try:
        scheduler.add_async_job('bench.jobs:noop')  # connect, declare
        durations = []
        for _ in range(count):
            started = time.perf_counter()
            scheduler.add_async_job('bench.jobs:noop')
            durations.append(time.perf_counter() - started)
    finally:
        transports.SCHEMES = schemes
        with scheduler.producer._connections().acquire(block=True) as conn:
            for queue in settings.queues:
                conn.default_channel.queue_delete(
                    naming.queue_name(settings, queue))
        scheduler.shutdown()
    return durations


def summary(label, durations):
    cuts = statistics.quantiles(durations, n=100)
    return (f'{label:>18}: p50 {statistics.median(durations) * 1e3:.3f} ms, '
            f'p90 {cuts[89] * 1e3:.3f} ms, p99 {cuts[98] * 1e3:.3f} ms, '
            f'total {sum(durations):.2f} s for {len(durations)}')


def main(argv):
    count = int(argv[0]) if argv else 2000
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    for confirms in (True, False, True, False):
        label = 'with confirms' if confirms else 'without confirms'
        print(summary(label, measure(url, count, confirms)), flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
