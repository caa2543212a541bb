"""Names in one place: every task the workers register is routed, and an unknown name is an error."""

from __future__ import annotations

import logging
import pickle

import pytest

from lightmem_core.errors import ExtractionParseError, TransientError
from workers import names
from workers.messages import PayloadError


def test_every_registered_task_has_a_route_and_every_route_a_task() -> None:
    import workers.tasks.compress  # noqa: F401 - registers the tasks
    import workers.tasks.extract  # noqa: F401
    import workers.tasks.store  # noqa: F401
    import workers.tasks.update  # noqa: F401
    from workers.app import app

    ours = {name for name in app.tasks if name.startswith("lightmem.")}
    assert ours == set(names.TASK_ROLES)


def test_an_unknown_task_name_is_an_error_not_the_default_queue() -> None:
    from workers.app import route_for
    from workers.settings import DistributedSettings

    settings = DistributedSettings()
    assert route_for(names.UPDATE_USER, settings) == settings.queue("store" if settings.embedded_store else "update")
    with pytest.raises(names.UnknownTask, match="lightmem.extract.typo"):
        route_for("lightmem.extract.typo", settings)
    with pytest.raises(names.UnknownTask):
        route_for("tasks.add", settings)


def test_sending_an_unknown_task_fails_at_the_sender() -> None:
    from workers.app import make_app
    from workers.settings import DistributedSettings

    app = make_app(DistributedSettings(redis_url="redis://127.0.0.1:1/0"))  # never reached: routing fails first
    with pytest.raises(names.UnknownTask):
        app.send_task("lightmem.nope", args=[{}])


@pytest.mark.parametrize("exc", [PayloadError("bad payload", {"v": 2}), ExtractionParseError("bad reply", "{raw"),
                                 TransientError("HTTP 500", retry_after_s=3.0)])
def test_errors_keep_their_fields_through_pickle(exc: Exception) -> None:
    """Celery pickles a failed task's exception before ``on_failure``: the copy must keep what the
    failure record needs (raw payload, raw reply, Retry-After)."""
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc) and str(copy) == str(exc)
    assert vars(copy) == vars(exc)


def test_the_logging_option_sets_the_workers_lightmem_core_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import app as worker_app
    from workers.settings import get_settings

    monkeypatch.setenv("LIGHTMEM_MEMORY__LOGGING__LEVEL", "WARNING")
    get_settings.cache_clear()
    logger = logging.getLogger("lightmem_core")
    before = logger.level
    try:
        worker_app._configure_logging()
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(before)
        get_settings.cache_clear()


@pytest.mark.parametrize("address", ["0.0.0.0", "10.1.2.3", "::"])
def test_flower_refuses_a_non_loopback_address_without_basic_auth(address: str) -> None:
    from lightmem_core.errors import ConfigError
    from workers.launch import process_argv
    from workers.settings import DistributedSettings

    with pytest.raises(ConfigError, match="LIGHTMEM_FLOWER_BASIC_AUTH"):
        process_argv("flower", DistributedSettings(flower_address=address))
    argv = process_argv("flower", DistributedSettings(flower_address=address, flower_basic_auth="a:b"))
    assert "--basic-auth=a:b" in argv
    assert f"--address={address}" in argv


def test_flower_on_loopback_needs_no_password() -> None:
    from workers.launch import process_argv
    from workers.settings import DistributedSettings

    assert "flower" in process_argv("flower", DistributedSettings(flower_address="127.0.0.1"))


def test_user_ids_with_key_syntax_get_keys_of_their_own() -> None:
    from workers.names import Keys

    keys = Keys("P")
    assert keys.user("alice", "meta") == "P:u:{alice}:meta"  # plain ids keep the layout written before
    odd = ["a:b", "a}:meta:{b", "a%7Db", "a}b", "{a}", "team:alice:stats", "a%b"]
    made = {keys.user(user, "meta") for user in odd}
    assert len(made) == len(odd)  # no two ids share a key
    for key in made:  # one hash tag per key: a user's keys stay in one cluster slot
        inner = key[len("P:u:{"):-len("}:meta")]
        assert "{" not in inner and "}" not in inner
