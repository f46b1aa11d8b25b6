"""The whole pscheduler daemon as one of its children sees it, for
``status`` and ``ping``.

A child knows only itself; its master knows which processes it runs but
holds no broker connection to answer with. So the master writes its
*process table* (``processes.json`` in its state directory: pid, queue,
slot, state, start time and restarts of every process; pscheduler.
processtable) and each child writes its metrics into the same directory's
``metrics/`` (runtime.metrics, prometheus_client's multiprocess files, one
set per pid). The child that answers a ``status`` joins the two, with the
memory and CPU that psutil reads of each pid: every process of the daemon
answers through one, and counters summed over the files of the dead
children of a slot survive their restarts.

The table format is this module's (pscheduler writes it with
:func:`write_table`): ``{'host', 'master_pid', 'started', 'processes':
[{'role': 'master' | 'child' | 'metrics', 'pid', 'queue', 'slot', 'state',
'started'}], 'restarts': [{'queue', 'slot', 'reason', 'count'}]}``.
"""
import collections
import glob
import json
import os
import time

import psutil

TABLE_NAME = 'processes.json'
METRICS_DIR_NAME = 'metrics'
# pscheduler_jobs_total's outcomes, as status names them.
COUNTED = {'succeeded': 'executed', 'failed': 'failed', 'retried': 'retried'}


def table_path(state_dir):
    return os.path.join(state_dir, TABLE_NAME)


def metrics_dir(state_dir):
    return os.path.join(state_dir, METRICS_DIR_NAME)


def write_table(state_dir, table):
    """Replace the process table at once (readers never see half of it)."""
    path = table_path(state_dir)
    partial = f'{path}.{os.getpid()}.tmp'
    with open(partial, 'w') as handle:
        json.dump(table, handle)
    os.replace(partial, path)


def read_table(state_dir):
    """The master's process table; None if there is none (yet)."""
    try:
        with open(table_path(state_dir)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def daemon_view(state_dir):
    """The daemon's processes with their figures (see the module
    docstring); None if the master wrote no table."""
    table = read_table(state_dir)
    if table is None:
        return None
    by_pid = samples_by_pid(metrics_dir(state_dir))
    totals = totals_by_slot(by_pid)
    processes = []
    for entry in table.get('processes', []):
        process = dict(entry)
        process.update(process_figures(entry.get('pid'), entry.get('started')))
        if entry.get('role') == 'child':
            process.update(child_figures(by_pid.get(entry.get('pid'), {}),
                                         totals, entry))
        processes.append(process)
    return {'host': table.get('host'), 'master_pid': table.get('master_pid'),
            'started': table.get('started'), 'processes': processes,
            'restarts': table.get('restarts', [])}


def samples_by_pid(directory):
    """``{pid: [Sample]}`` of every metrics file (dead processes' too)."""
    # Imported here: the pscheduler master imports this module before it
    # tells prometheus_client where the files are (pscheduler.statedir).
    from prometheus_client.multiprocess import MultiProcessCollector
    found = collections.defaultdict(list)
    for path in glob.glob(os.path.join(directory, '*.db')):
        pid = os.path.basename(path)[:-3].rpartition('_')[2]
        if not pid.isdigit():
            continue
        try:
            families = MultiProcessCollector.merge([path], accumulate=False)
        except Exception:   # a file being created right now
            continue
        for family in families:
            found[int(pid)].extend(family.samples)
    return found


def totals_by_slot(by_pid):
    """``{(queue, slot): {executed, failed, retried}}`` over every process
    that ever served the slot: since the daemon started."""
    totals = collections.defaultdict(lambda: dict.fromkeys(COUNTED.values(),
                                                           0))
    for samples in by_pid.values():
        for queue, slot, name, value in job_counts(samples):
            totals[(queue, slot)][name] += int(value)
    return totals


def job_counts(samples):
    for sample in samples:
        if sample.name != 'pscheduler_jobs_total':
            continue
        name = COUNTED.get(sample.labels.get('outcome'))
        if name is not None:
            yield (sample.labels.get('queue'), sample.labels.get('slot'),
                   name, sample.value)


def child_figures(samples, totals, entry):
    """What a child's own metrics say: its counters since it started,
    its slot's since the daemon started, its jobs in flight, its threads."""
    since_start = dict.fromkeys(COUNTED.values(), 0)
    for _, _, name, value in job_counts(samples):
        since_start[name] += int(value)
    gauges = {sample.name: sample.value for sample in samples
              if sample.name in ('pscheduler_jobs_in_flight',
                                 'pscheduler_scheduler_alive',
                                 'pscheduler_jobstore_owner')}
    alive = gauges.get('pscheduler_scheduler_alive')
    return {
        'since_start': since_start,
        'since_daemon_start': dict(totals.get(
            (entry.get('queue'), str(entry.get('slot'))),
            dict.fromkeys(COUNTED.values(), 0))),
        'running': int(gauges.get('pscheduler_jobs_in_flight', 0)),
        'scheduler_alive': None if alive is None else bool(alive),
        'owns_jobstore': bool(gauges.get('pscheduler_jobstore_owner', 0)),
    }


def process_figures(pid, started):
    """Uptime, resident memory and CPU seconds of a live pid (None for
    what cannot be read: a process gone, another host's)."""
    figures = {'uptime': round(time.time() - started, 1) if started else None,
               'rss': None, 'cpu': None}
    if not pid:
        return figures
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            times = process.cpu_times()
            figures['rss'] = process.memory_info().rss
            figures['cpu'] = round(times.user + times.system, 2)
    except psutil.Error:
        pass
    return figures
