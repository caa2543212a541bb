"""``lightmem flower``: Flower with every LightMem queue on its broker page.

Two things kept queues off Flower's broker page (and ``/api/queues/length``):

- Flower picks its broker client from the broker URL's scheme. The app's broker is the Redis transport of
  ``workers/transport.py``, named by its class path, so Flower answered "'redis' broker is not supported".
  Here Flower reads the queues with the plain ``LIGHTMEM_REDIS_URL``.
- Flower lists the queues that live workers report consuming (``inspect active_queues``), falling back to
  the configured ones only when no worker reports at all: the queue of a role whose workers are all down,
  the backlog an operator most needs to see, vanished. Here every configured queue is listed.
"""

from __future__ import annotations

import sys
from typing import Any


def queue_names(active: list[str], configured: list[str]) -> list[str]:
    """The queues the broker page shows: those workers consume, and every configured one."""
    return sorted(set(active) | set(configured))


def _patch_flower() -> None:
    from flower.app import Flower
    from flower.views import BaseHandler

    from workers.settings import get_settings

    redis_url = get_settings().redis_url
    Flower.broker_uri_with_password = property(lambda self: redis_url)

    active_only = BaseHandler.get_active_queue_names

    def every_queue(self: Any) -> list[str]:
        configured = [q.name for q in self.capp.conf.task_queues or [] if q.name]
        return queue_names(list(active_only(self)), configured)

    BaseHandler.get_active_queue_names = every_queue


def main() -> None:
    """``python -m workers.flower_main -A workers.app flower ...``: celery's command line, patched Flower."""
    from celery.__main__ import main as celery_main

    _patch_flower()
    sys.argv = ["celery", *sys.argv[1:]]
    celery_main()


if __name__ == "__main__":
    main()
