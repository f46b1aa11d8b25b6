"""pscheduler only: many stored cron jobs (case 5) and the daemon (case 6).

Both run ``python -m pscheduler tmp.ini`` (one queue, so master + 1 child)
on Redis, with the default SQLite job store beside the ini.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil

from .cases import lateness
from .common import BenchError, Recorder, rss, wait_for
from .ps import PyramidSchedulerSystem, pscheduler_available

CASE5_DB = 14
CASE6_DB = 15


class Daemon(PyramidSchedulerSystem):
    worker_ready_timeout = 120

    def __init__(self, ctx, broker, redis_db, tag='', extra_settings=None):
        super().__init__(ctx, broker, redis_db=redis_db, use_daemon=True,
                         extra_settings=extra_settings)
        # tag: cases that share a Redis database keep their own names
        self.queue = f'{ctx.run_id}_daemon{redis_db}{tag}_{broker}'
        self.scheduler_id = f'{ctx.run_id}_d{redis_db}{tag}_{broker}'
        self.settings['scheduler.id'] = self.scheduler_id
        self.database = os.path.join(ctx.tmp, f'ps-{self.queue}.sqlite')
        self.settings['scheduler.database'] = self.database

    @property
    def master(self):
        return self.worker

    def child_pids(self):
        try:
            return [p.pid for p in psutil.Process(self.worker.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def the_child(self, timeout=60):
        pids = wait_for(self.child_pids, timeout, what='a pscheduler child')
        return pids[0]

    def store_count(self):
        table = f'{self.scheduler_id}_jobs_jobs'.replace('.', '_')
        try:
            conn = sqlite3.connect(self.database, timeout=30)
        except sqlite3.Error:
            return 0
        try:
            return conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    def kill_child_served(self, timeout=60):
        """SIGKILL the child; seconds until a job sent after it ran.

        The job is sent once the killed process is gone (plus 20 ms): on
        Redis, a message pushed while the dying child still has a BRPOP
        pending is handed to the dead socket and lost (see the docs).
        """
        old = self.the_child()
        recorder = Recorder(self.ctx, 'killed')
        try:
            t0 = time.time()
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: old not in self.child_pids(), 30, interval=0.002,
                     what='the killed child to go')
            time.sleep(0.02)
            self.send_record(recorder.path, t0)
            start, tag = recorder.wait(1, timeout)[0]
            return start - tag
        finally:
            recorder.close()

    def reload_served(self, timeout=120):
        """SIGHUP the master; ``(seconds to a job run by the new child,
        seconds from the new child's fork to that job)``."""
        old = self.the_child()
        recorder = Recorder(self.ctx, 'hup')
        try:
            t0 = time.time()
            os.kill(self.master.pid, signal.SIGHUP)
            new = wait_for(
                lambda: [p for p in self.child_pids() if p != old], timeout,
                interval=0.005, what='the reloaded child')[0]
            created = psutil.Process(new).create_time()
            self.send_record(recorder.path, t0)
            start, tag = recorder.wait(1, timeout)[0]
            return start - tag, start - created, new
        finally:
            recorder.close()

    def message_cli(self, text):
        """Wall time of ``python -m pscheduler --message TEXT ini`` (s)."""
        t0 = time.perf_counter()
        result = subprocess.run(
            [sys.executable, '-m', 'pscheduler', '--message', text, self.ini],
            env=self.ctx.env(), capture_output=True, timeout=120)
        elapsed = time.perf_counter() - t0
        if result.returncode != 0:
            raise BenchError(f'--message {text} exited {result.returncode}: '
                             f'{result.stderr.decode()[-2000:]}')
        return elapsed

    def message_roundtrip(self, name, args=None, timeout=30):
        """Seconds for one admin command's answer, from this process."""
        from pyramid_scheduler import admin
        t0 = time.perf_counter()
        replies, missing = admin.send_command(self.scheduler.settings, name,
                                              args=args, timeout=timeout)
        elapsed = time.perf_counter() - t0
        if missing:
            raise BenchError(f'{name}: no answer from {missing}')
        if replies[0].get('error'):
            raise BenchError(f'{name}: {replies[0]["error"]}')
        return elapsed


def cron_case(ctx, n_jobs, n_sent, repeat):
    """Case 5: ``n_jobs`` stored cron jobs; see docs/benchmarks.rst."""
    if not pscheduler_available():
        raise BenchError('python -m pscheduler is not available')
    from .jobs import noop
    d = Daemon(ctx, 'redis', CASE5_DB)
    d.setup()
    out = {}
    try:
        d.ensure_worker()
        child = d.the_child()
        out['rss_empty_mb'] = rss(child) / 1e6
        start = time.time() + 2 * 86400
        n_sent = min(n_sent, n_jobs)
        t0 = time.perf_counter()
        for i in range(n_sent):
            d.scheduler.add_cron_job(
                noop, start_date=start,
                crontab=f'{i % 60} {(i // 60) % 24} * * *', id=f'cron-{i}')
        out['send_s'] = time.perf_counter() - t0
        wait_for(lambda: d.store_count() >= n_sent, 3600, interval=0.2,
                 what=f'{n_sent} stored cron jobs')
        out['store_s'] = time.perf_counter() - t0
        out['store_rate'] = n_sent / out['store_s']
        t1 = time.perf_counter()
        bulk_load(d.scheduler.settings, range(n_sent, n_jobs), start)
        out['bulk_s'] = time.perf_counter() - t1
        if d.store_count() != n_jobs:
            raise BenchError(f'{d.store_count()} jobs stored, not {n_jobs}')
        time.sleep(1)
        out['rss_full_mb'] = rss(child) / 1e6
        # a page of `jobs`, and print-jobs (first page of 1000 lines, logged)
        out['jobs_cli_s'] = sorted(d.message_cli('jobs')
                                   for _ in range(repeat))[repeat // 2]
        out['jobs_rt_s'] = sorted(d.message_roundtrip('jobs')
                                  for _ in range(repeat))[repeat // 2]
        out['print_jobs_cli_s'] = sorted(d.message_cli('print-jobs')
                                         for _ in range(repeat))[repeat // 2]
        out['status_rt_s'] = sorted(d.message_roundtrip('status')
                                    for _ in range(repeat))[repeat // 2]
        # date jobs among them
        late = lateness(d, 50, 2.0, 0.05)
        out['late_p50'], out['late_p99'] = late['p50'], late['p99']
        # a new child with them: SIGHUP, the old child drains and exits,
        # the new one loads the app and the store, then serves
        reloads, starts, rsses = [], [], []
        for _ in range(repeat):
            reload_s, start_s, new = d.reload_served()
            reloads.append(reload_s)
            starts.append(start_s)
            rsses.append(rss(new) / 1e6)
        out['hup_served_s'] = sorted(reloads)[repeat // 2]
        out['child_start_s'] = sorted(starts)[repeat // 2]
        out['rss_restarted_mb'] = sorted(rsses)[repeat // 2]
        out['jobs'] = n_jobs
        out['sent'] = n_sent
        return out
    finally:
        d.stop_worker()
        d.teardown()


def bulk_load(settings, indexes, start, batch=5000):
    """Write cron jobs straight into the job store table of the queue
    ``jobs`` (the child's, or one no daemon serves yet).

    Each row is what the child's ``Runtime._on_job_created`` would store
    for ``add_cron_job(noop, start_date=start, crontab=..., id=...)``: the
    same spec (``build_spec``), trigger (``build_trigger``), APScheduler
    ``Job`` fields and pickled state, many rows per transaction.
    """
    import datetime
    import pickle

    from apscheduler.job import Job
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.util import datetime_to_utc_timestamp

    from pyramid_scheduler.jobs import build_spec, build_trigger
    from pyramid_scheduler.runtime import STORED_JOB_FUNC

    from .jobs import noop

    table = f'{settings.scheduler_id}_jobs_jobs'.replace('.', '_')
    store = SQLAlchemyJobStore(url=settings.jobstore_url, tablename=table)
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = []

    class _Scheduler:  # what Job() asks of its scheduler
        timezone = settings.timezone or datetime.timezone.utc

    def flush():
        with store.engine.begin() as conn:
            conn.execute(store.jobs_t.insert(), rows)
        rows.clear()

    templates = {}

    def template(crontab):
        """(queue, spec, trigger, next run) of one crontab, built once: a
        million jobs have 1,440 crontabs (checking and parsing each job's
        was 60 % of the time)."""
        if crontab not in templates:
            queue, spec = build_spec(
                settings, 'cron', noop, None, None, None,
                {'start_date': start, 'crontab': crontab}, {'id': 'x'})
            trigger = build_trigger('cron', spec['trigger'],
                                    settings.timezone)
            templates[crontab] = (queue, spec, trigger,
                                  trigger.get_next_fire_time(None, now))
        return templates[crontab]

    try:
        for i in indexes:
            queue, spec, trigger, next_run = template(
                f'{i % 60} {(i // 60) % 24} * * *')
            spec = dict(spec, id=f'cron-{i}')
            options = dict(spec['options'])
            options.pop('id', None)
            name = options.pop('name', None) or spec['func']
            job = Job(_Scheduler, id=spec['id'], func=STORED_JOB_FUNC,
                      trigger=trigger, executor='default',
                      args=(queue, spec), kwargs={}, name=name,
                      misfire_grace_time=options.get(
                          'misfire_grace_time', settings.misfire_grace_time),
                      coalesce=options.get('coalesce', settings.coalesce),
                      max_instances=options.get('max_instances', 1),
                      next_run_time=next_run)
            rows.append({
                'id': job.id,
                'next_run_time': datetime_to_utc_timestamp(job.next_run_time),
                'job_state': pickle.dumps(job.__getstate__(),
                                          store.pickle_protocol)})
            if len(rows) >= batch:
                flush()
        if rows:
            flush()
    finally:
        store.engine.dispose()


def daemon_case(ctx, repeat):
    """Case 6: SIGKILL of a child -> queue served; HUP reload; master RSS.

    Each SIGKILL is done on a fresh pscheduler (a first crash, restarted
    after the master's first backoff step), as a crash of a long-running
    child would be; the reloads are done one after the other on one.
    """
    if not pscheduler_available():
        raise BenchError('python -m pscheduler is not available')
    out = {}
    kills, reloads, starts, master_rss, child_rss = [], [], [], [], []
    for i in range(repeat):
        d = Daemon(ctx, 'redis', CASE6_DB)
        d.setup()
        try:
            d.ensure_worker()
            master_rss.append(rss(d.master.pid) / 1e6)
            child_rss.append(rss(d.the_child()) / 1e6)
            kills.append(d.kill_child_served())
            if i == 0:
                wait_for(d.child_pids, 30)
                for _ in range(repeat):
                    reload_s, start_s, _ = d.reload_served()
                    reloads.append(reload_s)
                    starts.append(start_s)
        finally:
            d.stop_worker()
            d.teardown()
    out['kill_served_s'] = sorted(kills)[repeat // 2]
    out['hup_served_s'] = sorted(reloads)[repeat // 2]
    out['child_start_s'] = sorted(starts)[repeat // 2]
    out['master_rss_mb'] = sorted(master_rss)[repeat // 2]
    out['child_rss_mb'] = sorted(child_rss)[repeat // 2]
    return out
