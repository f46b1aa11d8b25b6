"""Raw kombu: the floor under pyramid_scheduler's broker traffic.

Producer: ``Producer.publish`` of a small JSON body on one connection, to a
named direct exchange (kombu's usual setup) or to the default exchange ``''``
(what pyramid_scheduler does). Worker (``python -m bench.kombu_raw URL QUEUE``):
one process, one consumer, prefetch 100, acknowledges after running the job.
On SQLite it is kombu's SQLAlchemy transport with its defaults (1 s polling).
"""
import os
import sys

import kombu

from .base import System, amqp_delete, redis_delete_matching
from .common import AMQP_URL, REDIS_DB, redis_url


def broker_url(ctx, broker):
    if broker == 'redis':
        return redis_url('kombu')
    if broker == 'amqp':
        return AMQP_URL
    return 'sqla+sqlite:///' + os.path.join(ctx.tmp, 'kombu.sqlite')


def queue_for(name):
    return kombu.Queue(name, kombu.Exchange(name, 'direct', durable=True),
                       routing_key=name, durable=True)


class KombuSystem(System):
    key = 'kombu'
    label = 'raw kombu'

    def __init__(self, ctx, broker, exchange='named'):
        super().__init__(ctx, broker)
        self.exchange = exchange
        self.url = broker_url(ctx, broker)

    def setup(self):
        self.kqueue = queue_for(self.queue)
        self.conn = kombu.Connection(self.url)
        self.conn.ensure_connection(max_retries=3)
        self.kqueue(self.conn.default_channel).declare()
        self.producer = self.conn.Producer(serializer='json')

    def _publish(self, body):
        if self.exchange == 'named':
            self.producer.publish(body, exchange=self.kqueue.exchange,
                                  routing_key=self.queue, delivery_mode=2)
        else:
            self.producer.publish(body, exchange='', routing_key=self.queue,
                                  delivery_mode=2)

    def enqueue_noop(self):
        self._publish({'job': 'noop'})

    def send_record(self, path, tag):
        self._publish({'job': 'record', 'path': path, 'tag': tag})

    def worker_argv(self):
        return [sys.executable, '-m', 'bench.kombu_raw', self.url, self.queue]

    def purge(self):
        self.kqueue(self.conn.default_channel).purge()

    def teardown(self):
        try:
            if self.broker == 'amqp':
                amqp_delete([self.queue], [self.queue])
            elif self.broker == 'redis':
                redis_delete_matching(REDIS_DB['kombu'], f'*{self.queue}*')
        finally:
            self.conn.release()


def worker(url, name):
    from bench.jobs import record
    queue = queue_for(name)

    def on_message(body, message):
        if body.get('job') == 'record':
            record(body['path'], body['tag'])
        message.ack()

    with kombu.Connection(url) as conn:
        with conn.Consumer([queue], callbacks=[on_message], accept=['json'],
                           prefetch_count=100):
            while True:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass


if __name__ == '__main__':
    import signal
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        worker(sys.argv[1], sys.argv[2])
    except (KeyboardInterrupt, SystemExit):
        pass
