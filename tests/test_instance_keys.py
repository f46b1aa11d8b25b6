"""Units of the Redis consumer instances (transports/redis/instances.py):
ids, liveness, and the registry the restorers read. A real Redis, keys
unique to the test."""
import json
import os
import subprocess
import sys
import uuid

import pytest
import redis

from pyramid_scheduler.transports.redis import instances
from tests.daemon_helpers import DAEMON_REDIS_DB, REDIS_URL


@pytest.fixture
def client():
    url = REDIS_URL.rsplit('/', 1)[0] + f'/{DAEMON_REDIS_DB}'
    client = redis.Redis.from_url(url)
    client.ping()   # scripts/test starts Redis: fail, never skip, without it
    yield client
    client.close()


def dead_pid():
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_an_instance_id_is_not_a_slot_number_and_holds_no_dot():
    instance = instances.new_instance_id()
    assert '.' not in instance and '#' not in instance
    assert not instance.isdigit()
    assert f'-{os.getpid()}-' in instance
    assert instances.new_instance_id() != instance


@pytest.mark.parametrize('host, pid, alive', [
    ('here', 'own', True),       # this process
    ('here', 'dead', False),     # a process of this host that is gone
    ('elsewhere', 'dead', True),  # another host: its key's expiry decides
    (None, 'dead', True),        # cannot tell: its key's expiry decides
])
def test_liveness(client, host, pid, alive):
    instance = f'test-{uuid.uuid4().hex}'
    host = {'here': instances.host_identity(),
            'elsewhere': 'another-host/1'}.get(host)
    pid = os.getpid() if pid == 'own' else dead_pid()
    key = instances.alive_key(instance)
    client.set(key, json.dumps({'host': host, 'pid': pid}), ex=5)
    try:
        assert instances.is_alive(client, instance) is alive
    finally:
        client.delete(key)


def test_no_liveness_key_is_dead(client):
    assert not instances.is_alive(client, f'test-{uuid.uuid4().hex}')


def test_registry_lists_the_queues_until_forgotten(client):
    instance = f'test-{uuid.uuid4().hex}'
    client.hset(instances.REGISTRY, instance,
                json.dumps({'queues': ['a.jobs', 'a.jobs.store']}))
    try:
        assert instances.registered(client)[instance] == [
            'a.jobs', 'a.jobs.store']
    finally:
        instances.forget(client, instance)
    assert instance not in instances.registered(client)
