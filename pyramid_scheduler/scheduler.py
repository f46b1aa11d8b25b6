"""The public facade: ``registry.scheduler`` / ``request.scheduler``."""
from . import admin, naming, transports, wire
from .combined import InProcessRunner
from .errors import InvalidJob
from .events import Listeners
from .failedjobs import FailedJobs
from .jobs import CRON_FIELDS, INTERVAL_FIELDS, build_spec
from .producer import AfterCommitSender, Producer
from .references import AllowedFunctions
from .status import PENDING_STATES, JobId, wait_until_done


class Scheduler:
    """Adds and cancels jobs; runs them too in combined mode.

    Every ``add_*_job`` method validates the job at once (raising
    ``InvalidJob`` / ``InvalidQueue``), sends it to its queue (after the
    current transaction commits, if there is one) and returns its id.
    """

    def __init__(self, settings=None, registry=None):
        self.registry = registry
        self.listeners = Listeners()
        self.settings = None
        self.producer = None
        self._sender = None
        self._status = None   # the status table, on first use
        # Combined mode, or a script that runs jobs itself (start()).
        self._in_process = InProcessRunner(self.make_runtime, self.shutdown)
        if settings is not None:
            self.configure(settings)

    @property
    def runtime(self):
        """The runtime running jobs in this process, if any (else None)."""
        return self._in_process.runtime

    def configure(self, settings):
        """Use validated ``SchedulerSettings``; called by the include."""
        self.settings = settings
        self.producer = Producer(settings)
        self._functions = AllowedFunctions(settings.allowed_modules)
        # Here, so that the web app and each daemon child say it once.
        transports.warn_if_volatile(settings)
        self._sender = AfterCommitSender(settings.transactional, settings,
                                         self.producer)
        # One kombu Queue per queue, built once: kombu remembers per
        # connection which entities it declared, so each is declared once.
        self._job_queues = {name: naming.job_queue(settings, name)
                            for name in settings.queues}
        # Served by several processes, a queue's deferred jobs and cancels
        # go where only its job store's owner reads them, in the order sent.
        self._store_queues = {
            name: (naming.store_queue(settings, name)
                   if settings.processes(name) > 1 else self._job_queues[name])
            for name in settings.queues}

    def _require_settings(self):
        if self.settings is None:
            raise RuntimeError('the scheduler is not configured yet: call '
                               'config.commit() or make_wsgi_app() first')
        return self.settings

    # --- adding and cancelling jobs ------------------------------------------

    def add_async_job(self, func, args=None, kwargs=None, queue=None,
                      **options):
        """Run ``func(*args, **kwargs)`` as soon as possible, in the background."""
        return self._add('async', func, args, kwargs, queue, {}, options)

    def add_date_job(self, func, date, args=None, kwargs=None, queue=None,
                     **options):
        """Run once at ``date`` (datetime, naive = local time, or epoch)."""
        return self._add('date', func, args, kwargs, queue,
                         {'run_date': date}, options)

    def add_interval_job(self, func, start_date=None, args=None, kwargs=None,
                         queue=None, weeks=0, days=0, hours=0, minutes=0,
                         seconds=0, **options):
        """Run every ``weeks``/``days``/``hours``/``minutes``/``seconds``."""
        values = dict(weeks=weeks, days=days, hours=hours, minutes=minutes,
                      seconds=seconds)
        fields = {k: v for k, v in values.items() if v}
        if not fields:
            raise InvalidJob('an interval job needs a positive interval: pass '
                             f'one of {", ".join(INTERVAL_FIELDS)}')
        fields['start_date'] = start_date
        return self._add('interval', func, args, kwargs, queue, fields,
                         options)

    def add_cron_job(self, func, start_date=None, args=None, kwargs=None,
                     queue=None, year=None, month=None, day=None, week=None,
                     day_of_week=None, hour=None, minute=None, second=None,
                     crontab=None, **options):
        """Run on a cron schedule: fields as APScheduler's, or ``crontab``."""
        values = dict(year=year, month=month, day=day, week=week,
                      day_of_week=day_of_week, hour=hour, minute=minute,
                      second=second)
        fields = {k: v for k, v in values.items() if v is not None}
        if crontab is not None:
            if fields:
                raise InvalidJob('give either crontab or the cron fields '
                                 f'({", ".join(CRON_FIELDS)}), not both')
            fields['crontab'] = crontab
        fields['start_date'] = start_date
        return self._add('cron', func, args, kwargs, queue, fields, options)

    def _add(self, kind, func, args, kwargs, queue, trigger, options):
        settings = self._require_settings()
        queue, spec = build_spec(settings, kind, func, args, kwargs, queue,
                                 trigger, options, functions=self._functions)
        if 'unique' in spec and \
                self.status_table().state_of(spec['id']) in PENDING_STATES:
            # Checked again where the job is received (runtime.records):
            # this answers the usual case without sending anything.
            return JobId(spec['id'], added=False)
        targets = self._job_queues if kind == 'async' else self._store_queues
        self._send(wire.job_created(queue, spec), targets[queue])
        return JobId(spec['id'])

    def cancel_job(self, job_id, queue=None):
        """Cancel a deferred job, or an async job not started yet (it
        never runs; its status reads ``canceled``), on ``queue`` or on
        every queue."""
        settings = self._require_settings()
        queues = [settings.check_queue(queue)] if queue else settings.queues
        for name in queues:
            self._send(wire.job_canceled(name, job_id),
                       self._store_queues[name])

    # --- what became of a job ---------------------------------------------

    def job_status(self, job_id):
        """The :class:`~pyramid_scheduler.status.JobStatus` of ``job_id``
        (state, attempts, times, result, error), or None if it has no
        record: unknown, older than ``scheduler.results.ttl``, or sent so
        recently that no runtime has received it yet."""
        return self.status_table().get(job_id)

    def wait(self, job_id, timeout=None):
        """The job's status once it has ended (succeeded, failed or
        canceled); ``TimeoutError`` if it has not within ``timeout`` s."""
        return wait_until_done(self.status_table(), job_id, timeout)

    # --- the failed-job registry (failedjobs.py) ----------------------------

    def failed_jobs(self, queue=None, limit=100):
        """The failed jobs' JobStatus (of ``queue``, or every queue),
        latest failure first, at most ``limit``."""
        return self._failed().list(queue, limit)

    def requeue(self, job_id):
        """Run the failed (or canceled) job ``job_id`` again, at once, as
        an async job with the same id on the same queue: its record reads
        ``queued`` again. Sent now, not when a transaction commits.
        JobNotFound for an unknown id; InvalidJob for a job that is not
        failed or canceled, or periodic."""
        def publish(queue, body):
            target = self._job_queues[queue]
            self.producer.publish(body, target.name, declare=[target])
        self._failed().requeue(job_id, publish)
        return JobId(job_id)

    def purge_failed(self, queue=None):
        """Delete the failed jobs' records (of ``queue``); how many."""
        return self._failed().purge(queue)

    def _failed(self):
        return FailedJobs(self._require_settings(), self.status_table())

    def status_table(self):
        """The job status table (statusdb.StatusTable), opened on first
        use: SQLAlchemy costs a process that never asks a third of a
        second to import."""
        if self._status is None:
            from .statusdb import StatusTable
            self._status = StatusTable(self._require_settings())
        return self._status

    def _send(self, body, target):
        self._sender.send(lambda: self.producer.publish(
            body, target.name, declare=[target]), body, target.name)

    # --- messages and listeners ------------------------------------------------

    def send_message(self, message, queue=None, wait=False, timeout=None):
        """Send an admin command (``print-jobs``, ``ping``, ...) to runtimes."""
        settings = self._require_settings()
        queues = [settings.check_queue(queue)] if queue else settings.queues
        return admin.send_command(settings, message, queues, timeout=timeout,
                                  wait=wait)

    def add_listener(self, listener, events=None, args=None, kwargs=None):
        """Call ``listener(event, *args, **kwargs)`` on ``events`` (all if None).

        Listeners run in the process that runs the jobs (the pscheduler child,
        or the web process in combined mode), in a worker thread.
        """
        self.listeners.add(listener, events, args, kwargs)

    def remove_listener(self, listener):
        self.listeners.remove(listener)

    addListener = add_listener
    removeListener = remove_listener

    # --- running jobs in this process ----------------------------------------------

    def make_runtime(self, queues=None, slot=0):
        """A runtime for ``queues``; ``slot`` 0 owns their job stores, any
        other runs only their async jobs (see runtime.Runtime)."""
        # Imported here: APScheduler and SQLAlchemy cost a web process that
        # only sends jobs, and `pscheduler --message`, a third of a second.
        from .runtime import Runtime
        return Runtime(self._require_settings(), queues, self.registry,
                       self.listeners, slot=slot)

    def start(self, queues=None, standby_interval=2.0):
        """Run jobs in this process (combined mode, or a script opting in).

        Starts at once if this process can take every queue's job store;
        otherwise a standby thread keeps trying, so another process that
        consumes already (another web worker) keeps doing it alone, and this
        one takes over if it dies (see combined.InProcessRunner).
        """
        self._in_process.start(queues, standby_interval)

    def shutdown(self, timeout=None):
        """Stop running jobs in this process (drains; see Runtime.stop)."""
        self._in_process.stop(timeout)
        if self._sender is not None:
            self._sender.close()
        if self.producer is not None:
            self.producer.close()
        if self._status is not None:
            self._status.close()

    # 0.3.x names
    startConsumer = start
