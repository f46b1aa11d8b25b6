"""Process titles, so ``ps`` and psutil show who is who."""
import setproctitle


def master_title(config_uri):
    return f'pscheduler: master [{config_uri}]'


def child_title(queue):
    return f'pscheduler: queue {queue}'


def set_title(title):
    setproctitle.setproctitle(title)
