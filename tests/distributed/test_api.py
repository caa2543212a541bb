"""The HTTP API as a real uvicorn process (``lightmem api``) on the session's Redis and worker processes:
the enqueue → indexed → search → delete cycle, key scoping over a few hundred random combinations, 422
naming the field, health and readiness with no workers, and a schemathesis run over its schema."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.distributed.conftest import Cluster
from workers.launch import free_port

pytestmark = pytest.mark.integration

KEYS = {  # name -> (key, scope)
    "acme": ("acme-key-0123456789abcdef", {"user_prefix": "acme:"}),
    "globex": ("globex-key-0123456789abcdef", {"user_prefix": "globex:"}),
    "solo": ("solo-key-0123456789abcdef", {"users": ["alice", "bob"]}),
    "ops": ("ops-key-0123456789abcdef", {"user_prefix": ""}),
}


def _allows(key_name: str, user_id: str) -> bool:
    scope = KEYS[key_name][1]
    return user_id in scope["users"] if "users" in scope else user_id.startswith(str(scope["user_prefix"]))


@dataclass
class Api:
    base: str
    proc: subprocess.Popen[bytes]
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def as_(self, key_name: str | None) -> httpx.Client:
        """A client sending ``key_name``'s key (``None``: no key; ``"bogus"``: a key nobody configured)."""
        name = key_name or "none"
        if name not in self.clients:
            headers = {} if key_name is None else {
                "Authorization": f"Bearer {KEYS[key_name][0] if key_name in KEYS else 'bogus-0123456789abcdef'}"}
            self.clients[name] = httpx.Client(base_url=self.base, headers=headers, timeout=30)
        return self.clients[name]


def start_api(cluster: Cluster, name: str, env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    """``lightmem api`` as a process on the cluster's settings (plus ``env``), once /healthz answers."""
    port = free_port()
    proc = cluster.procs.start(name, [sys.executable, "-m", "producers.cli", "api", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return base, proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"lightmem api did not start:\n{cluster.procs.log(name)[-3000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[Api]:
    keys = [{"key": key, "name": name, **scope} for name, (key, scope) in KEYS.items()]
    base, proc = start_api(cluster, "api", {"LIGHTMEM_API_KEYS": json.dumps(keys)})
    running = Api(base, proc)
    try:
        yield running
    finally:
        for client in running.clients.values():
            client.close()
        cluster.procs.stop_process("api")
        log = cluster.procs.log("api")
        assert "Traceback" not in log, log[-3000:]
        leaked = [text for text in ("Porto", "violin", "secret trip", *SECRETS.values()) if text in log]
        assert leaked == [], f"user text in the API's log at INFO: {leaked}"


def _index(api: Api, key: str, user: str, texts: list[str], timeout_s: float = 90) -> list[str]:
    """Enqueue one session per text through the API and wait until all are indexed; their tracking ids."""
    client = api.as_(key)
    ids = []
    for i, text in enumerate(texts):
        reply = client.post("/v1/sessions", params={"user_id": user}, json={
            "session_id": f"s{i}", "time_stamp": f"2025-03-{i + 1:02d}T09:00:00Z", "flush": i == len(texts) - 1,
            "turns": [{"role": "user", "content": text}, {"role": "assistant", "content": "Noted."}]})
        assert reply.status_code == 202, reply.text
        ids.append(reply.json()["tracking_id"])
    deadline = time.monotonic() + timeout_s
    for tracking_id in ids:
        while (state := client.get(f"/v1/status/{tracking_id}").json()["state"]) != "indexed":
            assert state != "failed" and time.monotonic() < deadline, state
            time.sleep(0.2)
    return ids


def test_enqueue_indexed_search_delete_cycle(api: Api) -> None:
    acme, user = api.as_("acme"), "acme:cycle"
    _index(api, "acme", user, ["My sister Lena lives in Porto and teaches violin.", "I parked the van on level 3."])
    hits = acme.post("/v1/search", params={"user_id": user}, json={"query": "where does Lena live", "limit": 2}).json()
    assert hits["user_id"] == user and "Porto" in hits["results"][0]["memory"]
    for strategy in ("embedding", "context", "hybrid"):
        found = acme.post("/v1/search", params={"user_id": user}, json={"query": "violin", "strategy": strategy})
        assert found.status_code == 200 and found.json()["results"], strategy
    dated = acme.post("/v1/search", params={"user_id": user}, json={
        "query": "van", "limit": 5, "filters": {"time_stamp": {"gte": "2025-03-02", "lt": "2025-03-03"}}}).json()
    assert [h["time_stamp"][:10] for h in dated["results"]] == ["2025-03-02"]

    entries = acme.get("/v1/memories", params={"user_id": user}).json()["entries"]
    assert entries and {e["user_id"] for e in entries} == {user}
    lena = next(e for e in entries if "Porto" in e["memory"])
    assert acme.get(f"/v1/memories/{lena['id']}", params={"user_id": user}).json()["memory"] == lena["memory"]
    assert acme.delete(f"/v1/memories/{lena['id']}", params={"user_id": user}).json() == {"user_id": user,
                                                                                       "entry_id": lena["id"]}
    gone = acme.get(f"/v1/memories/{lena['id']}", params={"user_id": user})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert acme.delete(f"/v1/memories/{lena['id']}", params={"user_id": user}).status_code == 404
    after = acme.post("/v1/search", params={"user_id": user}, json={"query": "where does Lena live"}).json()
    assert all(h["id"] != lena["id"] for h in after["results"])
    changes = acme.get(f"/v1/memories/{lena['id']}/history", params={"user_id": user}).json()["changes"]
    assert [c["action"] for c in changes] == ["ADD", "DELETE"] and changes[1]["old_text"] == lena["memory"]

    status = acme.get("/v1/users/status", params={"user_id": user}).json()
    assert status["known"] and status["failed_batches"] == [] and status["counters"]["messages_in"] == 4
    deleted = acme.delete("/v1/users", params={"user_id": user}).json()
    assert deleted["entries_deleted"] == len(entries) - 1 and deleted["redis_keys_deleted"] > 0
    assert acme.post("/v1/update", params={"user_id": user}).status_code == 202
    assert acme.get("/v1/memories", params={"user_id": user}).json()["entries"] == []
    assert acme.get("/v1/users/status", params={"user_id": user}).json()["known"] is False
    stats = api.as_("ops").get("/v1/stats").json()["stats"]
    assert stats["turns in"] >= 4 and stats["entries stored"] >= 2


@pytest.fixture(scope="module")
def seeded(api: Api) -> dict[str, str]:
    """One indexed entry per tenant, each with a word no other tenant's memories hold; user -> entry id."""
    users = {"acme:alice": ("acme", "Zanzibar"), "globex:bob": ("globex", "Kamchatka"), "alice": ("solo", "Patagonia")}
    out = {}
    for user, (key, word) in users.items():
        _index(api, key, user, [f"My secret trip is to {word} next spring."])
        out[user] = api.as_(key).get("/v1/memories", params={"user_id": user}).json()["entries"][0]["id"]
    return out


SECRETS = {"acme:alice": "Zanzibar", "globex:bob": "Kamchatka", "alice": "Patagonia"}
POOL = ["acme:alice", "globex:bob", "alice", "bob", "acme:zed", "globex:zed", "acme", "acme:", "ACME:x",
        "globex:acme:x", "mallory", "acmex", "", "a/b c?d", "acme:%7B{x}*"]


def _request(client: httpx.Client, op: str, user: str, victim_entry: str) -> httpx.Response:
    q = {"user_id": user}
    session = {"turns": [{"role": "user", "content": "I like tea."}], "session_id": "scoping"}
    calls: dict[str, Any] = {
        "list": lambda: client.get("/v1/memories", params=q),
        "search": lambda: client.post("/v1/search", params=q, json={"query": "secret trip", "limit": 10}),
        "user_status": lambda: client.get("/v1/users/status", params=q),
        "get": lambda: client.get(f"/v1/memories/{victim_entry}", params=q),
        "history": lambda: client.get(f"/v1/memories/{victim_entry}/history", params=q),
        "delete_entry": lambda: client.delete(f"/v1/memories/{victim_entry}", params=q),
        "enqueue": lambda: client.post("/v1/sessions", params=q, json=session),
        "turns": lambda: client.post("/v1/turns", params=q, json=session),
        "flush": lambda: client.post("/v1/flush", params=q),
        "update": lambda: client.post("/v1/update", params=q),
        "delete_user": lambda: client.delete("/v1/users", params=q),
    }
    reply: httpx.Response = calls[op]()
    return reply


def test_keys_never_reach_another_tenants_users(api: Api, seeded: dict[str, str], cluster: Cluster) -> None:
    rng = random.Random(14)
    ops = ["list", "search", "user_status", "get", "history", "delete_entry", "enqueue", "turns", "flush", "update",
           "delete_user"]
    crossings: list[str] = []
    written: set[str] = set(seeded)
    tally = {"401": 0, "403": 0, "allowed": 0}
    for _ in range(300):
        key = rng.choice([*KEYS, None, "bogus"])
        user, op = rng.choice(POOL), rng.choice(ops)
        if op == "delete_user" and user in seeded:
            op = "list"  # the seeded entries stay, to be looked for at the end
        victim_owner = rng.choice([u for u in seeded if u != user])  # an entry of someone else
        reply = _request(api.as_(key), op, user, seeded[victim_owner])
        what = f"{key} {op} {user!r}: {reply.status_code} {reply.text[:200]}"
        if key not in KEYS:
            tally["401"] += 1
            assert reply.status_code == 401 and reply.json()["error"]["code"] == "unauthorized", what
        elif not user:
            assert reply.status_code == 422, what
        elif not _allows(key, user):
            tally["403"] += 1
            if reply.status_code != 403 or reply.json()["error"]["code"] != "forbidden":
                crossings.append(what)
        else:
            tally["allowed"] += 1
            if op in ("get", "history", "delete_entry") and reply.status_code != 404:
                crossings.append(what)  # the entry is another user's, whatever the key may touch
            elif reply.status_code >= 300 and op not in ("get", "history", "delete_entry"):
                crossings.append(f"refused within scope: {what}")
            elif any(word in reply.text for owner, word in SECRETS.items() if owner != user):
                crossings.append(f"read another user's memory: {what}")
            if op in ("enqueue", "turns") and reply.status_code == 202:
                written.add(user)
    assert crossings == []
    assert tally["403"] > 100 and tally["allowed"] > 50, tally
    # Denied writes left nothing: the only pool users Redis knows are the seeded ones and those written within scope.
    known = {u for u in POOL if u and cluster.producer.knows_user(u)}
    assert known <= written, known - written
    for user, entry_id in seeded.items():  # no cross-tenant delete succeeded
        assert SECRETS[user] in cluster.producer.get_entry(user, entry_id)["memory"]
    stats = api.as_("acme").get("/v1/stats")
    assert stats.status_code == 403 and api.as_("ops").get("/v1/stats").status_code == 200


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/sessions", {"session_id": "x"}, "turns"),
    ("/v1/sessions", {"turns": [{"role": "robot", "content": "hi"}]}, "turns.0.role"),
    ("/v1/sessions", {"turns": [{"role": "user", "content": "hi", "colour": "red"}]}, "turns.0.colour"),
    ("/v1/sessions", {"turns": [{"role": "user", "content": "hi", "time_stamp": "the day after"}]},
     "messages[0].time_stamp"),
    ("/v1/sessions", {"turns": [{"role": "user", "content": "   "}]}, "session.turns"),
    ("/v1/turns", {"turns": [{"role": "user", "content": "hi"}]}, "session_id"),
    ("/v1/search", {"query": "tea", "limit": 0}, "limit"),
    ("/v1/search", {"query": "tea", "strategy": "telepathy"}, "strategy"),
    ("/v1/search", {"query": ""}, "query"),
    ("/v1/search", {"query": "tea", "filters": {"time_stamp": {"after": "2025-01-01"}}}, "filters.time_stamp"),
    ("/v1/search", {"query": "tea", "filters": {"user_id": "acme:other"}}, "filters.user_id"),
    ("/v1/search", {"query": "tea", "filters": {"topic_id": {"in": [1.5]}}}, "filters.topic_id.in"),
    ("/v1/search", "{not json", "body"),
])
def test_bad_input_is_422_naming_the_field(api: Api, path: str, body: Any, field: str) -> None:
    client = api.as_("acme")
    params = {"user_id": "acme:bad-input"}
    reply = (client.post(path, params=params, content=body, headers={"Content-Type": "application/json"})
             if isinstance(body, str) else client.post(path, params=params, json=body))
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "invalid_input" and error["field"] == field and error["message"].startswith(field), error


def test_a_missing_user_id_is_422_naming_it(api: Api) -> None:
    reply = api.as_("acme").get("/v1/memories")
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "user_id"


def test_health_and_readiness_with_the_workers_running_and_without_them(api: Api, cluster: Cluster) -> None:
    assert httpx.get(f"{api.base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{api.base}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    # Another deployment on the same Redis (its own key prefix and queues) whose workers are all down.
    down_env = {"LIGHTMEM_KEY_PREFIX": "lmapidown", "LIGHTMEM_API_READY_TIMEOUT_S": "1", "LIGHTMEM_SEARCH_TIMEOUT_S": "1",
                **{f"LIGHTMEM_QUEUE_{r.upper()}": f"apidown.{r}" for r in ("compress", "extract", "store", "update")}}
    base, _ = start_api(cluster, "api-down", down_env)
    try:
        assert httpx.get(f"{base}/healthz").status_code == 200
        started = time.monotonic()
        reply = httpx.get(f"{base}/readyz", timeout=10)
        assert reply.status_code == 503 and time.monotonic() - started < 4, reply.text
        assert reply.json()["checks"]["redis"]["status"] == "ok"
        assert reply.json()["checks"]["store"] == {"status": "failed",
                                                   "detail": "no store worker answered within 1 s"}
        assert reply.headers["Retry-After"]
        search = httpx.post(f"{base}/v1/search", params={"user_id": "u"}, json={"query": "tea"}, timeout=30)
        assert search.status_code == 503 and search.json()["error"]["code"] == "unavailable"
        assert int(search.headers["Retry-After"]) >= 1
    finally:
        cluster.procs.stop_process("api-down")
    # Redis gone: not ready either.
    base, _ = start_api(cluster, "api-noredis", {"LIGHTMEM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                                                 "LIGHTMEM_PRODUCER_RETRY_S": "0"})
    try:
        reply = httpx.get(f"{base}/readyz", timeout=20)
        assert reply.status_code == 503 and reply.json()["checks"]["redis"]["status"] == "failed"
        assert httpx.get(f"{base}/healthz").status_code == 200
    finally:
        cluster.procs.stop_process("api-noredis")


def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(api: Api) -> None:
    """A fixed number of generated requests per operation (an operator's key: every user id is in scope)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{api.base}/openapi.json")
    headers = {"Authorization": f"Bearer {KEYS['ops'][0]}"}
    checks = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
    failures: dict[str, str] = {}
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an unloadable operation fails the test here

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def call(case: Any) -> None:
            response = case.call_and_validate(base_url=api.base, headers=headers, checks=checks, timeout=30)
            statuses[response.status_code] += 1

        try:
            call()
        except Exception as exc:  # the first failing case of this operation, as schemathesis explains it
            failures[operation.label] = str(exc)[:2000]
    assert failures == {}
    print(f"schemathesis: {sum(statuses.values())} calls, by status {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 10 * EXAMPLES_PER_OPERATION and statuses[200] + statuses[202] >= 20, statuses


EXAMPLES_PER_OPERATION = 6
