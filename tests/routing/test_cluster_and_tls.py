"""What only Redis Cluster and TLS storage have: their URLs, start-up errors, a cluster outage, and
the hash slot every quota key shares. The shared contract tests run on both through make_storage."""

from __future__ import annotations

import shutil
import socket
import uuid
from pathlib import Path

import pytest
import redis

from app.config import BreakerConfig, ConfigError, RoutingConfig, load_config
from app.errors import ServiceUnavailable
from app.routing import RedisClusterStorage, RedisStorage, Router, create_storage
from tests.redis_servers import LocalRedis
from tests.routing.conftest import FakeClock, model
from tests.routing.test_concurrency import admitted_in_forked_workers

pytestmark = pytest.mark.redis


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("scheme", ["redis+cluster", "rediss+cluster", "rediss"])
def test_an_unreachable_server_is_a_one_line_config_error(scheme: str) -> None:
    query = "ssl_cert_reqs=none&password=hunter2" if scheme.startswith("rediss") else "password=hunter2"
    url = f"{scheme}://user:hunter2@127.0.0.1:{closed_port()}/0?{query}"
    with pytest.raises(ConfigError) as err:
        create_storage(url, namespace="ai-proxy")
    message = str(err.value)
    assert message.startswith(f"storage: Redis not reachable at {scheme}://***@127.0.0.1:")
    assert "hunter2" not in message and "\n" not in message and "refused" in message.lower()
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_plain_server_is_not_a_cluster(redis_url: str) -> None:
    with pytest.raises(
        ConfigError, match=r"^storage: Redis not reachable at redis\+cluster://.*Cluster mode is not enabled"
    ):
        create_storage(redis_url.replace("redis://", "redis+cluster://").rsplit("/", 1)[0], "ai-proxy")


def test_tls_needs_its_self_signed_certificate_accepted(tls_url: str) -> None:
    assert isinstance(create_storage(tls_url, namespace="ai-proxy"), RedisStorage)
    strict = tls_url.split("?")[0]
    with pytest.raises(ConfigError, match="certificate verify failed"):
        create_storage(strict, namespace="ai-proxy")


def test_config_accepts_cluster_and_tls_urls(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("models: []\n")
    for url in (
        "redis+cluster://10.0.0.1:6379",
        "rediss+cluster://h:6380",
        "rediss://h:6380/0?ssl_cert_reqs=none",
    ):
        config = load_config(path, {"AI_PROXY_STORAGE": url})
        assert config.storage == url
        assert config.storage_label == ("redis cluster" if "+cluster" in url else "redis")
    with pytest.raises(ConfigError, match="redis\\+cluster://"):
        load_config(path, {"AI_PROXY_STORAGE": "cluster://h:1"})


def test_every_quota_key_lives_on_one_cluster_node(cluster_url: str, shared_storage) -> None:
    """Reserve, settle, rest, report, usage, breaker and snapshot on a 3-master cluster: every quota
    key hashes to the slot of "{quota}", so one node holds them all."""
    storage = shared_storage("cluster")
    assert isinstance(storage, RedisClusterStorage)
    a, b = model("groq/a", requests_per_minute=2, tokens_per_minute=100), model("groq/b")
    clock = FakeClock()
    router = Router([a, b], storage, RoutingConfig(), BreakerConfig(fail_max=1), clock=clock)
    held = router.acquire([a, b], length=1, tokens=10)
    router.succeeded(held, {}, used_tokens=4)
    view = {m["name"]: m for m in router.snapshot()}
    assert view["groq/a"]["windows"][0]["used"] == 1
    client = redis.RedisCluster.from_url(cluster_url.replace("+cluster://", "://"))
    try:
        assert len(client.get_primaries()) >= 3
        keys = [k.decode() for k in client.scan_iter(match="test-routing-*:{quota}:*")]
        slots = {client.keyslot(k) for k in keys}
        assert keys and slots == {client.keyslot("{quota}")}
    finally:
        client.close()


def test_200_threads_on_a_cluster_admit_exactly_the_limit(shared_storage) -> None:
    from tests.routing.test_concurrency import hammer

    m = model(requests_per_minute=25)
    clock = FakeClock()
    routers = [
        Router([m], shared_storage("cluster"), RoutingConfig(), BreakerConfig(), clock=clock)
        for _ in range(2)
    ]
    for _ in range(3):
        admitted = hammer(routers[0], [m], 100) + hammer(routers[1], [m], 100)
        assert len(admitted) == 25
        assert routers[1].snapshot()[0]["windows"][0]["used"] == 25
        clock.advance(60)


def test_a_cluster_outage_is_a_503_then_an_error_at_start(tmp_path: Path, caplog) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not on PATH to start a cluster of its own")
    servers = LocalRedis(tmp_path)
    try:
        url = servers.cluster(masters=1)
        storage = create_storage(url, namespace="outage")
        m = model(requests_per_minute=10)
        router = Router([m], storage, RoutingConfig(), BreakerConfig(), clock=FakeClock())
        router.acquire([m], length=1, tokens=1)
    finally:
        servers.stop()
    with pytest.raises(ServiceUnavailable, match=r"^quota storage unavailable$"):
        router.acquire([m], length=1, tokens=1)
    assert any("quota storage unavailable" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match=r"^storage: Redis not reachable at redis\+cluster://127\.0\.0\.1:"):
        create_storage(url, namespace="outage")


def test_scripts_lost_by_the_cluster_are_loaded_again(cluster_url: str, shared_storage) -> None:
    m = model(requests_per_minute=3)
    router = Router([m], shared_storage("cluster"), RoutingConfig(), BreakerConfig(), clock=FakeClock())
    router.acquire([m], length=1, tokens=1)
    client = redis.RedisCluster.from_url(cluster_url.replace("+cluster://", "://"))
    try:
        client.script_flush()  # every primary forgets every script, as after a restart
    finally:
        client.close()
    router.acquire([m], length=1, tokens=1)
    assert router.snapshot()[0]["windows"][0]["used"] == 2


def test_workers_forked_from_a_preloaded_cluster_router_share_its_quota(shared_storage) -> None:
    """gunicorn's preload_app builds the router (and its cluster client) once, then forks."""
    m = model(requests_per_minute=1000)
    router = Router([m], shared_storage("cluster"), RoutingConfig(), BreakerConfig())
    router.acquire([m], length=1, tokens=1)  # the parent's client has connected before the fork
    admitted = admitted_in_forked_workers(router, m)
    assert admitted == 60
    assert router.snapshot()[0]["windows"][0]["used"] == 61


@pytest.mark.parametrize("kind", ["cluster", "tls"])
def test_the_app_serves_and_counts_on_cluster_and_tls_storage(kind: str, request, fake_openai) -> None:
    """The whole app in-process with `AI_PROXY_STORAGE` on a cluster or TLS server: a chat is
    served, the model's minute then refuses, and /v1/quota reads the count back."""
    from app import create_app
    from app.config import parse_config

    url = request.getfixturevalue(f"{kind}_url")
    name = f"openai/m-{uuid.uuid4().hex[:8]}"  # fresh quota keys in the app's own namespace
    raw = {
        "models": [
            {
                "name": name,
                "provider": "openai",
                "url": fake_openai.chat_url,
                "token": "sk-fake-upstream-key",
                "requests_per_minute": 1,
            }
        ]
    }
    config = parse_config(raw, {"AI_PROXY_STORAGE": url, "AI_PROXY_API_KEYS": "client-key-1234"})
    client = create_app(config).test_client()
    auth = {"Authorization": "Bearer client-key-1234"}
    body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=body, headers=auth).status_code == 200
    assert client.post("/v1/chat/completions", json=body, headers=auth).status_code == 429
    quota = client.get("/v1/quota", headers=auth).get_json()
    assert url not in str(quota)
    [row] = quota["data"]
    assert row["name"] == name and row["breaker"] == "closed"
    assert row["windows"][0]["used"] == 1 and row["keys"][0]["windows"][0]["remaining"] == 0
