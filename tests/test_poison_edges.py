"""Poison at the transport's edge: items that are not kombu envelopes, and
commands that want their reply sent to a queue that is not a reply queue.

Real daemons, real brokers (issue 13, findings 3 and 4). Each test puts its
poison in first and 10 valid jobs behind it, and counts the runs of those
(one O_APPEND line each, tests.jobs.append_id).
"""
import base64
import os
import json
import sqlite3
import uuid
from collections import Counter

import pytest

from pyramid_scheduler import wire
from tests import jobs
from tests.daemon_helpers import producer, wait_for, write_ini

pytestmark = pytest.mark.slow

VALID = 10
LOST_CONNECTION = 'lost the broker connection'


def runs(path):
    return Counter(job_id for job_id, _, _ in jobs.read_ids(path))


def send_valid_jobs(ini, out):
    with producer(ini) as scheduler:
        for n in range(VALID):
            scheduler.add_async_job(jobs.append_id, args=(out, f'v{n}'))


def wait_all_ran(out, daemon, timeout=30):
    wait_for(lambda: len(runs(out)) == VALID, timeout,
             what=f'{VALID} valid jobs; ran {dict(runs(out))}; log:\n'
                  f'{daemon.log()}')


def envelope_without_exchange(queue):
    """A kombu envelope like any other, but for ``exchange``."""
    body = json.dumps({'hello': 'world'}).encode()
    return json.dumps({
        'body': base64.b64encode(body).decode(),
        'content-encoding': 'utf-8', 'content-type': 'application/json',
        'headers': {},
        'properties': {'delivery_tag': uuid.uuid4().hex,
                       'body_encoding': 'base64', 'delivery_mode': 2,
                       'priority': 0,
                       'delivery_info': {'routing_key': queue}}})


JUNK = '\x00\xffnot a kombu message'


def put_poison(broker, settings, ini):
    """Put the poison items first in the job queue; return them."""
    queue = f'{settings["scheduler.id"]}.jobs'
    if broker == 'sqlite':
        items = [JUNK, '[1, 2, 3]', '{"properties": "none"}']
        db = sqlite3.connect(str(ini.parent / 'pscheduler.sqlite'))
        with db:
            for item in items:
                db.execute('INSERT INTO pscheduler_message '
                           '(queue, payload, created) VALUES (?, ?, 0)',
                           (queue, item))
        db.close()
        return items
    if broker == 'redis':
        import redis
        items = [JUNK, envelope_without_exchange(queue)]
        client = redis.Redis.from_url(settings['scheduler.broker.url'])
        for item in items:
            client.lpush(queue, item)
        client.close()
        return items
    import kombu
    with kombu.Connection(settings['scheduler.broker.url']) as connection:
        connection.default_channel.basic_publish(
            connection.default_channel.prepare_message(
                JUNK.encode('utf-8', 'surrogateescape'),
                content_type='application/json'),
            exchange='', routing_key=queue)
    return [JUNK]


def dead_items(broker, settings, ini):
    dead = f'{settings["scheduler.id"]}.jobs.dead'
    if broker == 'sqlite':
        db = sqlite3.connect(str(ini.parent / 'pscheduler.sqlite'))
        try:
            return [text for (text,) in db.execute(
                'SELECT payload FROM pscheduler_message WHERE queue = ? '
                'ORDER BY id', (dead,))]
        finally:
            db.close()
    if broker == 'redis':
        import redis
        client = redis.Redis.from_url(settings['scheduler.broker.url'])
        try:
            return [item.decode('utf-8', 'replace')
                    for item in client.lrange(dead, 0, -1)]
        finally:
            client.close()
    import kombu
    with kombu.Connection(settings['scheduler.broker.url']) as connection:
        _, count, _ = connection.default_channel.queue_declare(
            dead, passive=True)
    return [None] * count


@pytest.mark.parametrize('broker', ['sqlite', 'redis', 'rabbitmq'])
def test_items_that_are_not_kombu_messages_are_dead_lettered(
        tmp_path, broker_for, daemons, broker):
    settings = broker_for(broker)
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    out = str(tmp_path / 'out')
    daemon = daemons(ini)
    daemon.wait_ready(['jobs'])
    poison = put_poison(broker, settings, ini)
    send_valid_jobs(ini, out)

    wait_all_ran(out, daemon)
    dead = wait_for(lambda: (lambda d: d if len(d) == len(poison) else None)(
        dead_items(broker, settings, ini)), 20,
        what=f'{len(poison)} dead letters; log:\n{daemon.log()}')
    if broker != 'rabbitmq':
        # Moved as they were: an operator reads what was sent.
        assert sorted(dead) == sorted(poison)
    assert set(runs(out).values()) == {1}
    log = daemon.log()
    assert log.count(LOST_CONNECTION) == 0, log
    assert 'the consumer loop failed' not in log, log
    assert log.count('rejected a message from') == len(poison), log


def publish_command(settings, reply_to):
    """A ``ping`` to the queue's admin queue, answered to ``reply_to``."""
    from pyramid_scheduler import naming
    from pyramid_scheduler.producer import Producer
    from pyramid_scheduler.settings import parse_settings
    parsed = parse_settings(settings)
    body = wire.command('ping', uuid.uuid4().hex, reply_to=reply_to)
    body['queue'] = 'jobs'
    target = naming.admin_queue(parsed, 'jobs')
    sender = Producer(parsed, pool_limit=1)
    try:
        sender.publish(body, target.name, declare=[target])
    finally:
        sender.close()


def test_reply_to_a_durable_queue_does_not_wedge_rabbitmq(
        tmp_path, broker_for, daemons):
    import kombu
    settings = broker_for('rabbitmq')
    scheduler_id = settings['scheduler.id']
    # A durable queue with a reply queue's name, and a durable queue that
    # is not a reply queue at all.
    durable_reply = f'{scheduler_id}.reply.durable'
    not_a_reply = f'{scheduler_id}.jobs.notreply'
    with kombu.Connection(settings['scheduler.broker.url']) as connection:
        for name in (durable_reply, not_a_reply):
            connection.default_channel.queue_declare(
                name, durable=True, auto_delete=False)
    try:
        ini = write_ini(tmp_path / 'app.ini', settings=settings)
        out = str(tmp_path / 'out')
        daemon = daemons(ini)
        daemon.wait_ready(['jobs'])
        publish_command(settings, durable_reply)
        publish_command(settings, not_a_reply)
        send_valid_jobs(ini, out)
        wait_all_ran(out, daemon)

        from pscheduler.config import load_config
        from pyramid_scheduler.admin.client import send_command
        replies, missing = send_command(load_config(str(ini)).settings,
                                        'ping', timeout=10)
        assert replies and not missing, daemon.log()
        # The durable reply queue got its answer; the other, none: that
        # command went to the dead-letter queue.
        with kombu.Connection(settings['scheduler.broker.url']) as connection:
            channel = connection.default_channel
            wait_for(lambda: channel.queue_declare(
                durable_reply, passive=True)[1] == 1, 10,
                what=f'the reply in {durable_reply}; log:\n{daemon.log()}')
            assert channel.queue_declare(not_a_reply, passive=True)[1] == 0
            assert channel.queue_declare(f'{scheduler_id}.jobs.dead',
                                         passive=True)[1] == 1
        assert set(runs(out).values()) == {1}, runs(out)
        log = daemon.log()
        assert log.count(LOST_CONNECTION) == 0, log
        assert 'not a reply queue' in log, log
    finally:
        with kombu.Connection(settings['scheduler.broker.url']) as connection:
            for name in (durable_reply, not_a_reply):
                connection.default_channel.queue_delete(name)


# --- a job that takes its process down (finding 5) ---------------------------

OTHERS = 400


def exit_process(path):
    """A job that kills its own process, as a crash in C code would."""
    jobs.append_id(path, 'bad')
    os._exit(70)


def dead_count(broker, settings, ini):
    items = dead_items(broker, settings, ini)
    return len(items)


@pytest.mark.parametrize('broker', ['sqlite', 'redis', 'rabbitmq'])
def test_a_job_that_kills_its_process_is_dead_lettered_after_the_limit(
        tmp_path, broker_for, daemons, broker):
    # exit_process lives in this module, outside tests.jobs (default-deny).
    settings = broker_for(broker, **{
        'scheduler.max_deliveries': '3',
        'scheduler.allowed_modules': 'tests.jobs tests.test_poison_edges'})
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    out = str(tmp_path / 'out')
    daemon = daemons(ini)
    daemon.wait_ready(['jobs'])
    with producer(ini) as scheduler:
        scheduler.add_async_job(exit_process, args=(out,))
        for n in range(OTHERS):
            scheduler.add_async_job(jobs.append_id, args=(out, f'j{n}'))

    def others_ran():
        ran = runs(out)
        return len([job for job in ran if job != 'bad']) == OTHERS
    wait_for(others_ran, 60, what=f'{OTHERS} jobs; ran '
             f'{len(runs(out))}; log:\n{daemon.log()[-5000:]}')
    wait_for(lambda: dead_count(broker, settings, ini) == 1, 20,
             what=f'the dead letter; log:\n{daemon.log()[-5000:]}')
    ran = runs(out)
    assert ran['bad'] <= 3, ran['bad']
    log = daemon.log()
    assert 'took its process down 3 times' in log, log[-5000:]
    doubled = sum(1 for job, count in ran.items() if job != 'bad'
                  and count > 1)
    print(f'{broker}: bad job ran {ran["bad"]} times; {OTHERS} others: '
          f'{OTHERS - doubled} once, {doubled} twice or more, 0 lost')
