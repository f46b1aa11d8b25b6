"""What the dashboard's pages read.

The daemon's processes and figures, a page of deferred jobs, one deferred
job and the dead letters come from the runtimes that own each queue's job
store, through the admin commands over the broker (admin.send_command);
a job's status and the failed jobs from the status table in the job store
database (scheduler.job_status, failedjobs), read directly. A queue whose
runtime does not answer in time is listed as such, not an error page.
"""
import dataclasses

from .. import naming, transports
from ..admin import send_command
from ..failedjobs import FailedJobs

# The most the dashboard waits for the runtimes' answers, in seconds (the
# smaller of this and scheduler.admin.timeout): a page, not a batch job.
ANSWER_TIMEOUT = 3.0
PAGE_SIZE = 50


@dataclasses.dataclass
class Answers:
    """One admin command's answers: ``results`` by queue, the queues that
    did not answer, and the errors by queue."""
    results: dict
    missing: tuple
    errors: dict


def ask(scheduler, command, queues=None, args=None):
    settings = scheduler.settings
    replies, missing = send_command(
        settings, command, queues, args=args,
        timeout=min(settings.admin_timeout, ANSWER_TIMEOUT))
    results = {r['queue']: r.get('result') or {} for r in replies
               if not r.get('error')}
    errors = {r['queue']: r['error'] for r in replies if r.get('error')}
    return Answers(results, missing, errors)


def overview(scheduler):
    """Everything the overview shows, as plain data."""
    settings = scheduler.settings
    status = ask(scheduler, 'status')
    dead = ask(scheduler, 'dead-letters')
    failed = FailedJobs(settings, scheduler.status_table())
    depths = queue_depths(settings)
    queues = []
    for queue in settings.queues:
        result = status.results.get(queue)
        queues.append({
            'name': queue,
            'answered': result is not None,
            'error': status.errors.get(queue),
            'waiting': depths.get(queue),
            'deferred': (result or {}).get('pending'),
            'running': (result or {}).get('running'),
            'dead_letters': dead.results.get(queue, {}).get('count'),
            'owner': (result or {}).get('store_owner'),
            'failed': failed.count(queue),
        })
    return {'queues': queues, 'processes': processes(status.results),
            'restarts': restarts(status.results), 'missing': status.missing}


def restarts(results):
    """Each daemon's child restarts by queue, slot and reason (once per
    daemon, as processes())."""
    found = {}
    for result in results.values():
        daemon = result.get('daemon') or {}
        key = (daemon.get('host'), daemon.get('master_pid'))
        if daemon and key not in found:
            found[key] = [dict(entry, host=daemon.get('host'))
                          for entry in daemon.get('restarts') or ()]
    return [entry for entries in found.values() for entry in entries]


def processes(results):
    """The daemon's processes: each daemon's own list when the replies carry
    it (one per daemon, by host and master pid), else one row per answering
    queue from its own figures (role ``runtime``: combined mode, or a
    pscheduler of a version before the whole-daemon ``status``)."""
    rows, seen = [], set()
    for result in results.values():
        daemon = result.get('daemon')
        if not daemon:
            continue
        key = (daemon.get('host'), daemon.get('master_pid'))
        if key not in seen:
            seen.add(key)
            rows.extend(dict(process, host=daemon.get('host'))
                        for process in daemon.get('processes') or ())
    if rows:
        return rows
    return [_process_of_queue(result) for result in results.values()]


def _process_of_queue(result):
    threads = result.get('threads') or {}
    scheduler_state = threads.get('scheduler')
    return {
        'role': 'runtime', 'pid': result.get('pid'),
        'queue': result.get('queue'), 'slot': 0, 'state': 'running',
        'uptime': result.get('uptime'), 'rss': result.get('rss'),
        'cpu': result.get('cpu'),
        'since_start': {key: result.get(key)
                        for key in ('executed', 'failed', 'retried')},
        'since_daemon_start': None,
        'running': result.get('running'),
        'scheduler_alive': (None if scheduler_state is None
                            else scheduler_state == 'alive'),
        'owns_jobstore': True,
    }


def queue_depths(settings):
    """Messages waiting in each queue's broker queue (None if unknown)."""
    depths = {}
    connection = transports.connect(settings)
    try:
        channel = connection.default_channel
        for queue in settings.queues:
            try:
                bound = naming.job_queue(settings, queue)(channel)
                depths[queue] = bound.queue_declare().message_count
            except Exception:
                depths[queue] = None
    except Exception:
        pass
    finally:
        connection.release()
    return depths


def jobs_page(scheduler, queue, page, search):
    """A page (1-based) of ``queue``'s deferred jobs matching ``search``."""
    args = {'offset': (page - 1) * PAGE_SIZE, 'limit': PAGE_SIZE}
    if search:
        args['search'] = search
    answers = ask(scheduler, 'jobs', [queue], args)
    result = answers.results.get(queue)
    return {'queue': queue, 'page': page, 'search': search,
            'answered': result is not None,
            'error': answers.errors.get(queue),
            'jobs': (result or {}).get('jobs', []),
            'total': (result or {}).get('total', 0),
            'capped': (result or {}).get('capped', False)}


def job(scheduler, job_id):
    """A job's status record and, if it is stored, its deferred job."""
    deferred = None
    answers = ask(scheduler, 'job', args={'id': job_id})
    for result in answers.results.values():
        if result.get('found'):
            deferred = result
    return {'id': job_id, 'status': scheduler.job_status(job_id),
            'deferred': deferred, 'missing': answers.missing}


def failed_jobs(scheduler, limit=100):
    failed = FailedJobs(scheduler.settings, scheduler.status_table())
    return {'jobs': failed.list(None, limit), 'count': failed.count(None)}


def dead_letters(scheduler):
    answers = ask(scheduler, 'dead-letters')
    return {'queues': answers.results, 'missing': answers.missing,
            'errors': answers.errors}
