"""The job store owner's counts, for the metrics: every few seconds, in
the consumer thread (the broker's counts need its channel).

A scrape of the metrics server reads files (runtime.metrics), never a job
store or the broker: so the owner counts its queue's stored jobs, waiting
messages, dead letters and failed jobs here, while metrics are served
(``scheduler.metrics.bind``), and writes them as gauges.
"""
import logging
import time

log = logging.getLogger(__name__)

INTERVAL = 5.0   # seconds between counts; a metrics scrape is every 15-60s


class StoreFigures:
    def __init__(self, queues, count, metrics, interval=INTERVAL,
                 clock=time.monotonic):
        """``count(queue)``: ``{figure: value}`` (admin.commands.
        AdminCommands.figures, with the consumer's outbox); ``metrics``:
        the runtime.metrics.RuntimeMetrics to write them to."""
        self.queues = queues
        self.count = count
        self.metrics = metrics
        self.interval = interval
        self.clock = clock
        self._next = 0.0

    def turn(self):
        """Count if it is time (each turn of the consumer loop)."""
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.interval
        for queue in self.queues:
            try:
                figures = self.count(queue)
            except Exception as exc:
                log.warning('queue %s: could not count its jobs for the '
                            'metrics: %s: %s', queue, type(exc).__name__, exc)
                continue
            self.metrics.store_figures(queue, **figures)
