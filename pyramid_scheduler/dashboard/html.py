"""HTML for the dashboard, with the standard library: every value that
comes from data goes through :func:`esc` (html.escape, quotes too), and
pages are joined from small pieces here. No template engine, no script,
no external asset: one inline style sheet."""
import html
import time

from .guard import FIELD

STYLE = """
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,sans-serif;
color:#1d2330;background:#f5f6f8}header{background:#1d2330;color:#fff;
padding:.6em 1em;display:flex;flex-wrap:wrap;gap:.4em 1.2em;
align-items:baseline}header b{font-size:1.1em}header a{color:#cfd8ff;
text-decoration:none}header a.on{color:#fff;text-decoration:underline}
main{padding:1em;max-width:1400px;margin:auto}h1{font-size:1.3em;
margin:.2em 0 .6em}h2{font-size:1.1em;margin:1.2em 0 .4em}.scroll{
overflow-x:auto;background:#fff;border:1px solid #dde;border-radius:6px}
table{border-collapse:collapse;width:100%}th,td{padding:.35em .45em;
text-align:left;border-bottom:1px solid #eef;white-space:nowrap;
vertical-align:top}th{background:#eef0f5;font-weight:600}td.n{
text-align:right}.msg{padding:.5em .8em;background:#e6f4ea;
border:1px solid #b7dfc2;border-radius:6px;margin-bottom:1em}
.warn{background:#fdecea;border-color:#f5c2c0}.bad{color:#b3261e;
font-weight:600}.ok{color:#1e7b34}pre{white-space:pre-wrap;
word-break:break-word;background:#fff;border:1px solid #dde;padding:.6em;
border-radius:6px;font-size:.85em}dl{display:grid;grid-template-columns:
max-content 1fr;gap:.2em 1em;background:#fff;border:1px solid #dde;
padding:.6em;border-radius:6px}dt{font-weight:600}dd{margin:0;
word-break:break-word}form.inline{display:inline}button{font:inherit;
padding:.25em .8em;border-radius:4px;border:1px solid #889;
background:#fff;cursor:pointer}button.danger{border-color:#b3261e;
color:#b3261e}input[type=search]{font:inherit;padding:.3em;
width:min(24em,60vw)}.pager{margin:.6em 0;display:flex;gap:1em;
flex-wrap:wrap}small{color:#667}
"""
NAV = (('overview', 'Overview'), ('jobs', 'Scheduled jobs'),
       ('failed', 'Failed jobs'), ('dead_letters', 'Dead letters'))


def esc(value):
    """Text for HTML: ``None`` shows as a dash."""
    return '-' if value is None else html.escape(str(value), quote=True)


def page(request, title, body, current=None, refresh=None, message=None):
    """A whole page: ``body`` is HTML already escaped."""
    links = ' '.join(
        f'<a href="{esc(request.route_path("pscheduler_dashboard." + name))}"'
        f'{" class=on" if name == current else ""}>{label}</a>'
        for name, label in NAV)
    head_refresh = (f'<meta http-equiv="refresh" content="{int(refresh)}">'
                    if refresh else '')
    notice = ''
    if message:
        kind = ' warn' if message.startswith('!') else ''
        notice = f'<p class="msg{kind}" role="status">' \
                 f'{esc(message.lstrip("!"))}</p>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'{head_refresh}<title>{esc(title)} - pyramid_scheduler</title>'
        f'<style>{STYLE}</style></head><body><header><b>pyramid_scheduler'
        f'</b>{links}</header><main><h1>{esc(title)}</h1>{notice}{body}'
        '</main></body></html>')


def table(headers, rows, numeric=()):
    """``rows``: lists of cell HTML (escaped already); columns whose index
    is in ``numeric`` align right."""
    head = ''.join(f'<th>{esc(h)}</th>' for h in headers)
    body = ''.join(
        '<tr>' + ''.join(
            f'<td{" class=n" if i in numeric else ""}>{cell}</td>'
            for i, cell in enumerate(row)) + '</tr>'
        for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}"><small>none</small>' \
               '</td></tr>'
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead>' \
           f'<tbody>{body}</tbody></table></div>'


def button(action_url, label, token, fields=None, danger=False, confirm=''):
    """A POST form of one button, with the CSRF token."""
    hidden = ''.join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
                     for k, v in (fields or {}).items())
    css = ' class="danger"' if danger else ''
    return (f'<form class="inline" method="post" action="{esc(action_url)}">'
            f'<input type="hidden" name="{FIELD}" value="{esc(token)}">'
            f'{hidden}<button type="submit"{css}>{esc(label)}</button>'
            '</form>')


def link(url, text):
    return f'<a href="{esc(url)}">{esc(text)}</a>'


def size(value):
    if value is None:
        return '-'
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if value < 1024 or unit == 'GiB':
            return f'{value:.0f} {unit}' if unit == 'B' else \
                f'{value:.1f} {unit}'
        value /= 1024


def seconds(value):
    """``3725`` -> ``1h 2m``; a duration at a glance."""
    if value is None:
        return '-'
    value = int(value)
    days, rest = divmod(value, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f'{days}d {hours}h'
    if hours:
        return f'{hours}h {minutes}m'
    return f'{minutes}m {secs}s' if minutes else f'{secs}s'


def moment(value):
    """A datetime (or ISO text) to the second, or a dash."""
    if value is None:
        return '-'
    text = value if isinstance(value, str) else value.isoformat()
    return esc(text.replace('T', ' ')[:19] + (' UTC' if (
        text.endswith('+00:00')) else ''))


def now_text():
    return time.strftime('%Y-%m-%d %H:%M:%S')
