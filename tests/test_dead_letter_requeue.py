"""``requeue-dead-letters``: dead letters go back to the queue they came
from, as they were; a bad one comes back to the dead letters (issue 16's
dashboard action, and the command line's)."""
import pytest

from pyramid_scheduler import naming, transports
from tests import jobs
from tests.daemon_helpers import producer, run_cli, wait_for, write_ini

pytestmark = pytest.mark.slow


def dead_letter(settings, body, headers, content_type, encoding):
    """Put a message on the jobs queue's dead letters, as the dispatcher
    does (its headers, plus why and where from)."""
    target = naming.dead_letter_queue(settings, 'jobs')
    with transports.connect(settings) as connection:
        connection.Producer().publish(
            body, routing_key=target.name, exchange='', declare=[target],
            content_type=content_type, content_encoding=encoding,
            headers={**headers, naming.REASON_HEADER: 'a test',
                     naming.FROM_QUEUE_HEADER:
                         naming.job_queue(settings, 'jobs').name})


def take_waiting_job(settings):
    """The job message waiting in the jobs queue (no daemon runs yet)."""
    with transports.connect(settings) as connection:
        queue = naming.job_queue(settings, 'jobs')(connection.default_channel)
        queue.declare()
        message = wait_for(lambda: queue.get(no_ack=False, accept=None), 30,
                           what='the job in its queue')
        taken = (message.body, dict(message.headers or {}),
                 message.content_type, message.content_encoding)
        message.ack()
        return taken


def dead_count(ini):
    done = run_cli('--message', 'dead-letters', ini=ini)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split(': ')[1].split()[0])


@pytest.mark.parametrize('broker', ('sqlite', 'redis', 'rabbitmq'))
def test_dead_letters_go_back_where_they_came_from(tmp_path, broker_for,
                                                   daemons, broker):
    settings_values = broker_for(broker, **{
        'scheduler.broker.secret': 'a-secret-long-enough-to-sign-1234'})
    ini = write_ini(tmp_path / 'app.ini', settings=settings_values)
    out = str(tmp_path / 'out')
    with producer(ini) as scheduler:
        settings = scheduler.settings
        scheduler.add_async_job(jobs.record, args=(out, 'back'))
    body, headers, content_type, encoding = take_waiting_job(settings)
    dead_letter(settings, body, headers, content_type, encoding)
    dead_letter(settings, b'not a job', {}, 'application/json', 'utf-8')

    daemon = daemons(ini)
    daemon.wait_ready(['jobs'])
    assert dead_count(ini) == 2
    assert jobs.read_records(out) == []

    done = run_cli('--message', 'requeue-dead-letters limit=1', ini=ini)
    assert done.returncode == 0, done.stderr
    assert 'requeued 1 dead letter(s)' in done.stdout
    # The signed job, headers kept: it runs.
    wait_for(lambda: jobs.read_records(out), 30, what='the requeued job')
    assert [r['values'] for r in jobs.read_records(out)] == [['back']]

    done = run_cli('--message', 'requeue-dead-letters', ini=ini)
    assert 'requeued 1 dead letter(s)' in done.stdout
    # The junk is refused again, and is a dead letter again.
    wait_for(lambda: dead_count(ini) == 1, 30, what='the junk dead again')
    assert daemon.log_count('moved to the dead-letter queue') >= 1
    assert [r['values'] for r in jobs.read_records(out)] == [['back']]

    refused = run_cli('--message', 'requeue-dead-letters limit=0', ini=ini)
    assert refused.returncode == 2
    assert 'from 1 to 10000' in refused.stderr
