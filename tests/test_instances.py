"""Redis: what a consumer process holds is keyed by its instance.

Two pscheduler daemons on one ini with ``scheduler.processes = 2`` (a
standby, a deployment overlapping its predecessor): neither puts back the
other's live messages (no job runs twice), and when one is killed, what its
processes held runs again within seconds, not after the visibility timeout
(an hour). A daemon upgraded from the numbered slots finds the messages
left under the old keys and runs them (transports/redis/instances.py).
"""
import json
import time
from collections import Counter

import pytest
import redis

from tests import jobs
from tests.daemon_helpers import producer, wait_for, write_ini

pytestmark = pytest.mark.slow

JOB_SECONDS = 0.5


def ran(path):
    return Counter(job_id for job_id, _, _ in jobs.read_ids(path))


def serving(daemon, label):
    pid = daemon.child_pids().get(label)
    return pid if pid and f'child {pid} serving queue {label}' in \
        daemon.log() else None


def client_for(settings):
    return redis.Redis.from_url(settings['scheduler.broker.url'])


def messages_left(client, scheduler_id):
    """Messages of the test's queues still queued, fetched or unacked."""
    left = 0
    for key in client.scan_iter(f'*{scheduler_id}*'):
        if client.type(key) == b'list':
            left += client.llen(key)
    for key in client.scan_iter('unacked*'):
        if client.type(key) != b'hash':
            continue
        for entry in client.hvals(key):
            if scheduler_id.encode() in entry:
                left += 1
    return left


def send(ini, out, prefix, count):
    with producer(ini) as scheduler:
        for n in range(count):
            scheduler.add_async_job(jobs.append_id,
                                    args=(out, f'{prefix}{n}', JOB_SECONDS))
    return {f'{prefix}{n}' for n in range(count)}


def test_two_daemons_on_one_ini_neither_double_nor_strand(
        tmp_path, broker_for, daemons):
    settings = broker_for('redis', **{'scheduler.processes': '2',
                                      'scheduler.executor.size': '2'})
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    client = client_for(settings)
    first = daemons(ini)
    wait_for(lambda: serving(first, 'jobs #1') and serving(first, 'jobs #2'),
             30, what=f'first daemon serving; log:\n{first.log()[-3000:]}')
    first_pids = set(first.child_pids().values())
    out = str(tmp_path / 'ids')

    # 1. A second daemon starts while the first one's processes hold
    # messages: its process #2 (#1 waits for the job store) must not put
    # back what the first one's live #2 holds.
    wanted = send(ini, out, 'a', 60)
    wait_for(lambda: len(ran(out)) >= 4, 30, what='jobs to start')
    second = daemons(ini)
    wait_for(lambda: serving(second, 'jobs #2'), 30,
             what=f'second daemon serving; log:\n{second.log()[-3000:]}')
    wait_for(lambda: wanted <= set(ran(out)), 60,
             what=f'the first jobs; ran {len(ran(out))}')
    wait_for(lambda: messages_left(client, settings['scheduler.id']) == 0,
             30, what='every message acknowledged')
    doubled = sorted(job for job, runs in ran(out).items() if runs > 1)
    print(f'two live daemons: sent {len(wanted)}, ran once '
          f'{sum(1 for j in wanted if ran(out)[j] == 1)}, doubled '
          f'{len(doubled)}')
    assert not doubled, f'jobs ran twice: {doubled}'

    # 2. The first daemon killed while its processes hold messages: they
    # run within seconds, once (a job it was running may run again).
    wanted = send(ini, out, 'b', 60)
    wait_for(lambda: any(job.startswith('b') and pid in first_pids
                         for job, pid, _ in jobs.read_ids(out)), 30,
             what='the first daemon running the second batch')
    first.kill_all()
    killed_at = time.monotonic()
    wait_for(lambda: wanted <= set(ran(out)), 45,
             what=f'the killed daemon\'s jobs; ran '
                  f'{len(wanted & set(ran(out)))} of {len(wanted)}; '
                  f'left in redis: '
                  f'{messages_left(client, settings["scheduler.id"])}')
    took = time.monotonic() - killed_at
    wait_for(lambda: messages_left(client, settings['scheduler.id']) == 0,
             30, what='every message acknowledged')
    runs = [(job, pid) for job, pid, _ in jobs.read_ids(out)
            if job in wanted]
    first_run_by = {}
    for job, pid in runs:
        first_run_by.setdefault(job, pid)
    counts = Counter(job for job, _ in runs)
    cut_short = [job for job, n in counts.items()
                 if n > 1 and first_run_by[job] in first_pids]
    doubled = [job for job, n in counts.items()
               if n > 1 and first_run_by[job] not in first_pids]
    print(f'one daemon killed: sent {len(wanted)}, ran once '
          f'{sum(1 for n in counts.values() if n == 1)}, lost '
          f'{len(wanted - set(counts))}, doubled {len(doubled)}, run again '
          f'after the kill cut them short {len(cut_short)}; all ran '
          f'{took:.1f}s after the kill')
    assert not doubled, f'jobs of the live daemon ran twice: {doubled}'
    # At most what its 2 x 2 workers were running, or had run without
    # their acknowledgement sent yet.
    assert len(cut_short) <= 8, cut_short


def test_messages_under_the_numbered_slots_keys_run_after_an_upgrade(
        tmp_path, broker_for, daemons):
    """kombu's ``unacked`` (slot 0), ``unacked#1`` and the fetched lists of
    a version before instances: what a daemon of that version held when it
    was stopped for the upgrade runs once."""
    settings = broker_for('redis', **{'scheduler.processes': '2'})
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    client = client_for(settings)
    out = str(tmp_path / 'ids')
    with producer(ini) as scheduler:
        for n in range(12):
            scheduler.add_async_job(jobs.append_id, args=(out, f'u{n}'))
    queue, = [key.decode() for key in
              client.scan_iter(f'*{settings["scheduler.id"]}*')
              if client.type(key) == b'list' and client.llen(key) == 12]
    for n in range(12):
        raw = client.rpop(queue)
        if n < 4:
            legacy_record(client, raw, '')
        elif n < 8:
            legacy_record(client, raw, '#1')
        elif n < 10:
            client.lpush(f'_pscheduler.fetched.{queue}', raw)
        else:
            client.lpush(f'_pscheduler.fetched#1.{queue}', raw)
    assert client.llen(queue) == 0
    daemons(ini)
    wanted = {f'u{n}' for n in range(12)}
    wait_for(lambda: wanted <= set(ran(out)), 30,
             what=f'the old keys\' jobs; ran {sorted(ran(out))}')
    wait_for(lambda: messages_left(client, settings['scheduler.id']) == 0,
             30, what='every message acknowledged')
    assert set(ran(out).values()) == {1}


def legacy_record(client, raw, suffix):
    """Record ``raw`` as unacknowledged as kombu does, under the hash of a
    numbered slot (``''``: slot 0, kombu's own keys)."""
    message = json.loads(raw)
    tag = message['properties']['delivery_tag']
    info = message['properties']['delivery_info']
    client.hset(f'unacked{suffix}', tag, json.dumps(
        [message, info['exchange'], info['routing_key']]))
    client.zadd(f'unacked_index{suffix}', {tag: time.time()})
