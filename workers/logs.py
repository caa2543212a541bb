"""What the workers' logs may say: Celery's consumer writes a rejected message's whole body (user text)
into its ERROR and WARNING lines; here those lines keep their reason and lose the body, which is kept
in the dead-letter list instead (``lightmem status``)."""

from __future__ import annotations

import logging

from celery.worker.consumer import consumer

CONSUMER_LOGGER = "celery.worker.consumer.consumer"
_REWORDED = {
    consumer.UNKNOWN_TASK_ERROR: "Received unregistered task of type %s: moved to the dead-letter list "
                                 "(body not logged: see `lightmem status`)",
    consumer.INVALID_TASK_ERROR: "Received invalid task message: %s: moved to the dead-letter list "
                                 "(body not logged: see `lightmem status`)",
    consumer.UNKNOWN_FORMAT: "Received a message of unknown format: moved to the dead-letter list "
                             "(body not logged: see `lightmem status`)%.0s",
    consumer.MESSAGE_DECODE_ERROR: "Could not decode a message (%r, type %r, encoding %r): rejected "
                                   "(body not logged)%.0s%.0s",
}


class NoMessageBodies(logging.Filter):
    """Rewrites Celery's rejected-message log lines without the message's body and headers."""

    def filter(self, record: logging.LogRecord) -> bool:
        reworded = _REWORDED.get(record.msg) if isinstance(record.msg, str) else None
        if reworded is not None:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.msg, record.args = reworded, args[: reworded.count("%")]
        return True


def install() -> None:
    """Attach the filter to Celery's consumer logger (idempotent)."""
    logger = logging.getLogger(CONSUMER_LOGGER)
    if not any(isinstance(f, NoMessageBodies) for f in logger.filters):
        logger.addFilter(NoMessageBodies())
