"""The body of each dashboard page, from what data.py read. Every value
goes through html.esc (or a helper that escapes)."""
from .data import PAGE_SIZE
from .html import button, esc, link, moment, now_text, seconds, size, table

ROUTE = 'pscheduler_dashboard.'


def _url(request, name, **query):
    return request.route_path(ROUTE + name, _query=query or None)


def _job_url(request, job_id):
    return request.route_path(ROUTE + 'job', job_id=job_id)


def _count(value):
    return esc(value)


def overview(request, data):
    queue_rows = [[
        esc(q['name']),
        '<span class="ok">answering</span>' if q['answered'] else
        f'<span class="bad">{esc(q["error"] or "no answer")}</span>',
        _count(q['waiting']), _count(q['deferred']), _count(q['running']),
        link(_url(request, 'dead_letters'), q['dead_letters'])
        if q['dead_letters'] else _count(q['dead_letters']),
        link(_url(request, 'failed'), q['failed']) if q['failed']
        else _count(q['failed']),
        _owner(q.get('owner')),
    ] for q in data['queues']]
    process_rows = [_process_row(p) for p in data['processes']]
    missing = ''
    if data['missing']:
        missing = ('<p class="msg warn">No answer from queue(s) '
                   f'{esc(", ".join(data["missing"]))}: is pscheduler '
                   'running for them?</p>')
    return (
        f'{missing}<h2>Queues</h2>' + table(
            ['queue', 'runtime', 'waiting messages', 'deferred jobs',
             'running', 'dead letters', 'failed', 'job store owner'],
            queue_rows, numeric=(2, 3, 4, 5, 6)) +
        '<h2>Processes</h2>' + table(
            ['role', 'pid', 'queue', 'process', 'state', 'uptime', 'RSS',
             'CPU', 'run/failed/retried', 'since daemon start',
             'in flight', 'scheduler', 'store owner'],
            process_rows, numeric=(1, 6, 7, 10)) +
        _restarts(data.get('restarts') or []) +
        '<p><small>run/failed/retried: jobs since the process started; '
        'scheduler: its scheduler thread; store owner: the process that '
        f'owns the queue\'s job store. Refreshes every 5 s; read at '
        f'{esc(now_text())}.</small></p>')


def _owner(owner):
    """The host and pid owning a queue's job store (runtime.storelock)."""
    if not owner:
        return '-'
    return f'{esc(owner.get("host"))} pid {esc(owner.get("pid"))}'


def _slot(slot):
    """``#1`` for slot 0: how process titles and ``status`` number them."""
    return '-' if slot is None else f'#{slot + 1}'


def _restarts(entries):
    if not entries:
        return '<p>No child restarted since the daemon started.</p>'
    return '<p>Children restarted: ' + ', '.join(
        f'{esc(e["queue"])} {esc(_slot(e["slot"]))}: {esc(e["reason"])} '
        f'&times;{esc(e["count"])}' for e in entries) + '.</p>'


def _figures(counts):
    if not counts:
        return '-'
    return ' / '.join(esc(counts.get(k)) for k in
                      ('executed', 'failed', 'retried'))


def _process_row(p):
    alive = p.get('scheduler_alive')
    return [
        esc(p.get('role')), f'<span class="pid">{esc(p.get("pid"))}</span>',
        esc(p.get('queue')), esc(_slot(p.get('slot'))), esc(p.get('state')),
        esc(seconds(p.get('uptime'))), esc(size(p.get('rss'))),
        esc('-' if p.get('cpu') is None else f'{p["cpu"]:.1f} s'),
        _figures(p.get('since_start')), _figures(p.get('since_daemon_start')),
        esc(p.get('running')),
        '-' if alive is None else ('<span class="ok">alive</span>' if alive
                                   else '<span class="bad">dead</span>'),
        '-' if p.get('owns_jobstore') is None else (
            'yes' if p['owns_jobstore'] else 'no'),
    ]


def jobs(request, data, queues):
    options = ''.join(
        f'<option{" selected" if q == data["queue"] else ""}>{esc(q)}'
        '</option>' for q in queues)
    form = (f'<form method="get" action="{esc(_url(request, "jobs"))}">'
            f'<select name="queue">{options}</select> '
            f'<input type="search" name="q" value="{esc(data["search"])}" '
            'placeholder="part of a job id or name"> '
            '<button type="submit">Search</button></form>')
    if not data['answered']:
        return form + ('<p class="msg warn">No answer from the queue\'s '
                       f'runtime: {esc(data["error"] or "is pscheduler running?")}'
                       '</p>')
    rows = [[link(_job_url(request, job['id']), job['id']), esc(job['name']),
             esc(job.get('trigger_words') or job['trigger']),
             moment(job['next_run_time'])] for job in data['jobs']]
    first = (data['page'] - 1) * PAGE_SIZE + 1
    total = f'{data["total"]}{"+" if data["capped"] else ""}'
    what = f'matching {esc(data["search"])!s}' if data['search'] else 'stored'
    summary = (f'<p>{esc(total)} deferred job(s) {what} in queue '
               f'{esc(data["queue"])}' + (
                   f'; #{first}-{first + len(rows) - 1}' if rows else '')
               + '</p>')
    return form + summary + table(['id', 'name', 'when', 'next run'], rows) \
        + _pager(request, data, len(rows))


def _pager(request, data, shown):
    links = []
    query = {'queue': data['queue']}
    if data['search']:
        query['q'] = data['search']
    if data['page'] > 1:
        links.append(link(_url(request, 'jobs', page=data['page'] - 1,
                               **query), '« previous'))
    if data['page'] * PAGE_SIZE < data['total'] or (data['capped'] and shown):
        links.append(link(_url(request, 'jobs', page=data['page'] + 1,
                               **query), 'next »'))
    return f'<p class="pager">{" ".join(links)}</p>' if links else ''


def job(request, data, token):
    status, deferred = data['status'], data['deferred']
    if status is None and deferred is None:
        return ('<p class="msg warn">No record of this job: unknown, older '
                'than scheduler.results.ttl, or not received yet.</p>')
    items = [('id', esc(data['id']))]
    if status is not None:
        items += [('state', f'<b class="state">{esc(status.state)}</b>'),
                  ('queue', esc(status.queue)), ('function', esc(status.func)),
                  ('kind', esc(status.kind)),
                  ('attempts', esc(status.attempts)),
                  ('created', moment(status.created)),
                  ('started', moment(status.started)),
                  ('finished', moment(status.finished))]
        if status.state == 'succeeded':
            items.append(('result', f'<pre>{esc(repr(status.result))}</pre>'))
        if status.error:
            items.append(('error', esc(status.error)))
    if deferred is not None:
        items += [('when', esc(deferred['trigger_words'])),
                  ('next run', moment(deferred['next_run_time'])),
                  ('trigger', f'<small>{esc(deferred["trigger"])}</small>'),
                  ('args', f'<code>{esc(deferred["args"])}</code>'),
                  ('kwargs', f'<code>{esc(deferred["kwargs"])}</code>')]
    body = '<dl>' + ''.join(f'<dt>{esc(k)}</dt><dd>{v}</dd>'
                            for k, v in items) + '</dl>'
    if deferred is None and data['missing']:
        body += ('<p class="msg warn">No answer from queue(s) '
                 f'{esc(", ".join(data["missing"]))}: whether the job is '
                 'stored there, and when it runs next, is unknown; reload '
                 'to ask again.</p>')
    if status is not None and status.traceback:
        body += f'<h2>Traceback</h2><pre>{esc(status.traceback)}</pre>'
    return body + '<p>' + _job_actions(request, data, token) + '</p>'


def _job_actions(request, data, token):
    status, buttons = data['status'], []
    job_id = data['id']
    if status is not None and status.state in ('failed', 'canceled') and (
            data['deferred'] is None):
        buttons.append(button(_url(request, 'requeue'), 'Requeue', token,
                              {'id': job_id}))
    if data['deferred'] is not None or (status is not None and
                                        status.state == 'queued'):
        buttons.append(button(_url(request, 'cancel'), 'Cancel', token,
                              {'id': job_id}, danger=True))
    return ' '.join(buttons)


def failed(request, data, token):
    rows = [[link(_job_url(request, j.id), j.id), esc(j.queue), esc(j.func),
             esc(j.attempts), moment(j.finished),
             esc(' '.join((j.error or '-').split())[:160]),
             button(_url(request, 'requeue'), 'Requeue', token, {'id': j.id})]
            for j in data['jobs']]
    purge = button(_url(request, 'purge_failed'), 'Purge all failed records',
                   token, danger=True) if data['count'] else ''
    return (f'<p>{esc(data["count"])} failed job(s)'
            + (f'; the latest {len(rows)}' if len(rows) < data['count']
               else '') + f'. {purge}</p>' +
            table(['id', 'queue', 'function', 'attempts', 'failed at',
                   'error', ''], rows, numeric=(3,)))


def dead_letters(request, data, token):
    body = ''
    for queue, result in data['queues'].items():
        purge = (button(_url(request, 'requeue_dead_letters'), 'Requeue',
                        token, {'queue': queue})
                 + button(_url(request, 'purge_dead_letters'), 'Purge',
                          token, {'queue': queue}, danger=True)
                 ) if result.get('count') else ''
        body += (f'<h2>{esc(queue)}: {esc(result.get("count"))} in '
                 f'{esc(result.get("dead_letter_queue"))} {purge}</h2>')
        body += table(['recent reasons (this runtime)'],
                      [[esc(entry.get('reason'))]
                       for entry in result.get('recent') or []])
    if data['missing']:
        body += ('<p class="msg warn">No answer from queue(s) '
                 f'{esc(", ".join(data["missing"]))}.</p>')
    return body
