"""Process titles, so ``ps`` and psutil show who is who."""
import setproctitle


def master_title(config_uri):
    return f'pscheduler: master [{config_uri}]'


def slot_label(queue, slot=0, processes=1):
    """How a queue's process is named: ``jobs``, or ``jobs #1`` (the job
    store's owner) to ``jobs #N`` when N processes serve it."""
    return f'{queue} #{slot + 1}' if processes > 1 else queue


def child_title(queue, slot=0, processes=1):
    return f'pscheduler: queue {slot_label(queue, slot, processes)}'


def set_title(title):
    setproctitle.setproctitle(title)
