"""Configuration: read once at start into immutable objects, never imported as globals."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from app import providers

log = logging.getLogger("ai_proxy.config")

REASONING_MODES = ("split", "strip", "keep")
# `storage` URLs: one Redis server (plain, TLS, socket), or any node of a Redis Cluster.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}  # ours: redis-py's own
STORAGE_SCHEMES = ("redis://", "rediss://", "unix://", *(f"{scheme}://" for scheme in CLUSTER_SCHEMES))
SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"  # the one that ships

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A bad configuration: the message is one line naming the file, the model and the field."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    provider: str
    url: str
    upstream_model: str
    token: str = field(default="", repr=False)  # the first key of `keys`
    keys: tuple[str, ...] = field(default=(), repr=False)  # the key pool (one slot per key)
    priority: int = 0
    requests_per_minute: int = 0
    requests_per_hour: int = 0
    requests_per_day: int = 0
    tokens_per_minute: int = 0
    tokens_per_day: int = 0
    max_request_length: int = 0
    model_size: str = ""
    kind: str = "chat"
    reasoning: str = "split"
    day_resets_at: str = ""  # "HH:MM" on the clock of `timezone`, for calendar-day quotas
    timezone: str = "UTC"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    # GigaChat (SDK) options
    auth_url: str = ""
    scope: str = ""
    verify_ssl_certs: bool | str = True
    enabled: bool = True
    missing_env: tuple[str, ...] = ()  # the empty ${VAR}s its token names (names only, never values)
    # Embedding models: inputs per upstream call (0: the provider's batch size), Gemini's `taskType`,
    # Cohere's `input_type`, and the vector space its group shares ("": its upstream_model).
    max_batch: int = 0
    task_type: str = ""
    input_type: str = ""
    embedding_space: str = ""

    @property
    def vector_space(self) -> str:
        """Which vectors this embedding model's are comparable with."""
        return self.embedding_space or self.upstream_model

    @property
    def group(self) -> str:
        return self.model_size.upper()

    @property
    def enable_hint(self) -> str:
        """What would enable a disabled model, e.g. "set GROQ_API_KEY"; "" when it is enabled."""
        return "" if self.enabled else enable_hint((self,))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = 16 * 1024 * 1024
    metrics_public: bool = False
    heartbeat_seconds: float = 5.0
    max_audio_bytes: int = 25 * 1024 * 1024  # one upload to /v1/audio/transcriptions
    usage_days: int = 35  # days of per-client usage kept (GET /v1/usage)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    stream_idle_timeout: float = 60.0
    pool_connections: int = 16
    pool_maxsize: int = 4096  # per upstream host; at least a worker's threads (see config.yaml)
    proxy: str = ""
    verify: bool | str = True
    stream_max_seconds: float = 600.0  # the longest a whole stream may last
    max_response_bytes: int = 32 * 1024 * 1024  # after decompression
    max_sse_line_bytes: int = 1024 * 1024  # one line of an upstream's event stream


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int = 3
    base_delay: float = 0.25
    max_delay: float = 4.0


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    fail_max: int = 5
    reset_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    max_attempts: int = 5
    cooldown_seconds: float = 30.0
    # Key pools: how long a key rests for each cooldown class that has no reset of its own.
    unavailable_seconds: float = 21600.0  # this key may not use this model
    auth_retry_seconds: float = 3600.0  # an invalid key, until one trial request
    credit_retry_seconds: float = 86400.0  # out of credit


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """One client key with its own windows (0 = none) and the models it may use (empty: all)."""

    name: str
    key: str = field(default="", repr=False)
    key_sha256: str = field(default="", repr=False)  # lowercase hex, when no plaintext key is kept
    models: tuple[str, ...] = ()
    requests_per_minute: int = 0
    requests_per_hour: int = 0
    requests_per_day: int = 0
    tokens_per_minute: int = 0
    tokens_per_day: int = 0
    admin: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    models: tuple[ModelConfig, ...] = ()
    server: ServerConfig = ServerConfig()
    http: HttpConfig = HttpConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    routing: RoutingConfig = RoutingConfig()
    storage: str = "memory"
    source: str = "<defaults>"
    log_level: str = "INFO"
    log_format: str = "text"
    disabled_models: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()  # (client-facing name or glob, model or group), in order
    clients: tuple[ClientConfig, ...] = ()  # server.api_keys first, as unlimited admins

    @property
    def enabled_models(self) -> tuple[ModelConfig, ...]:
        return tuple(m for m in self.models if m.enabled)

    @property
    def storage_label(self) -> str:
        """memory, redis or redis cluster: never the URL, which may hold a password."""
        if self.storage == "memory":
            return "memory"
        return "redis cluster" if self.storage.partition("://")[0] in CLUSTER_SCHEMES else "redis"

    def summary(self) -> str:
        """One line: how many models and groups are enabled, and which variables would enable the rest."""
        groups = sorted({m.group for m in self.models if m.group})
        live = {m.group for m in self.enabled_models if m.group}
        line = (
            f"{self.source}: {len(self.enabled_models)} of {len(self.models)} models and "
            f"{len(live)} of {len(groups)} groups enabled"
        )
        missing = dict.fromkeys(name for m in self.models for name in m.missing_env)
        if missing:
            line += f"; set {', '.join(missing)} to enable the rest"
        return line


def enable_hint(models: Iterable[ModelConfig]) -> str:
    """What would enable any of these disabled models: "set GROQ_API_KEY or GEMINI_API_KEY"."""
    options = dict.fromkeys(" and ".join(m.missing_env) for m in models if not m.enabled and m.missing_env)
    return "set " + " or ".join(options) if options else "check enabled, token and keys in the config"


def unavailable_message(models: Iterable[ModelConfig], name: str, kind: str) -> str:
    """The 404 message for a name with no enabled `kind` model: a configured model or group whose
    models are all disabled says so and names the variables to set (names only, never values)."""
    models = tuple(models)
    exact = next((m for m in models if m.name == name), None)
    if exact is not None and exact.kind == kind and not exact.enabled:
        return f"The model '{name}' is disabled: {exact.enable_hint}"
    members = [m for m in models if exact is None and m.group == name.upper() and m.kind == kind]
    if members and not any(m.enabled for m in members):
        return f"The group '{members[0].group}' has no enabled model: {enable_hint(members)}"
    message = f"The model '{name}' does not exist"
    if exact is None and models and not any(m.enabled for m in models):
        message += f"; no model is enabled yet: {enable_hint(models)}"
    return message


def resolve_config_path(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The config file: explicit path, else AI_PROXY_CONFIG, else the config.yaml at the top of the
    repository (the same file from any working directory)."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("AI_PROXY_CONFIG"):
        return Path(env["AI_PROXY_CONFIG"])
    return SHIPPED_CONFIG


def substitute(value: str, environ: Mapping[str, str]) -> str:
    """Replace ${VAR} and ${VAR:-default} from the environment."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        got = environ.get(name, "")
        if got == "" and default is not None:
            return default
        return got

    return _VAR.sub(one, value)


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, substitute, validate and freeze the configuration. Raises ConfigError."""
    env = dict(os.environ if environ is None else environ)
    file = resolve_config_path(str(path) if path else None, env)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{file}: invalid YAML{where}: {problem}") from None
    return parse_config(raw, env, source=str(file))


def parse_config(raw: Any, environ: Mapping[str, str], source: str = "config.yaml") -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping with a 'models' list")
    original = raw
    raw = _substitute_all(raw, environ)
    models_raw = raw.get("models") or []
    if not isinstance(models_raw, list):
        raise ConfigError(f"{source}: field 'models': must be a list")

    models: list[ModelConfig] = []
    disabled: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(models_raw):
        unresolved = original["models"][index]
        needs = secret_variables(unresolved, environ) if isinstance(unresolved, dict) else ()
        model = _parse_model(entry, index, needs, source)
        if model.name in seen:
            raise ConfigError(f"{source}: model '{model.name}': field 'name': duplicate model name")
        seen.add(model.name)
        if not model.enabled:
            disabled.append(model.name)
        models.append(model)

    groups = {m.group for m in models if m.group}
    for m in models:
        if m.name.upper() in groups:
            raise ConfigError(
                f"{source}: model '{m.name}': field 'name': clashes with the group of the same name"
            )

    _check_embedding_spaces(models, source)
    server = _section(raw, "server", ServerConfig, source)
    api_keys_env = environ.get("AI_PROXY_API_KEYS", "")
    keys_raw = (
        api_keys_env.split(",") if api_keys_env else _as_list(server.api_keys, source, "server.api_keys")
    )
    server = replace(server, api_keys=tuple(k.strip() for k in keys_raw if k and k.strip()))

    retry = _section(raw, "retry", RetryConfig, source)
    overrides = {}
    for name, cast in (("max_attempts", int), ("base_delay", float), ("max_delay", float)):
        value = environ.get(f"AI_PROXY_RETRY_{name.upper()}")
        if value:
            try:
                overrides[name] = cast(value)
            except ValueError:
                raise ConfigError(
                    f"environment: AI_PROXY_RETRY_{name.upper()}: not a number: {value!r}"
                ) from None
    retry = replace(retry, **overrides)

    storage = environ.get("AI_PROXY_STORAGE") or environ.get("REDIS_URL") or raw.get("storage") or "memory"
    storage = str(storage).strip()
    if storage != "memory" and not storage.startswith(STORAGE_SCHEMES):
        raise ConfigError(
            f"{source}: field 'storage': must be 'memory' or a redis://, rediss://, unix:// or"
            " redis+cluster:// (rediss+cluster://) URL"
        )

    log_level = (environ.get("AI_PROXY_LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"environment: AI_PROXY_LOG_LEVEL: unknown level {log_level!r}")
    log_format = (environ.get("AI_PROXY_LOG_FORMAT") or "text").lower()
    if log_format not in ("json", "text"):
        raise ConfigError("environment: AI_PROXY_LOG_FORMAT: must be 'json' or 'text'")

    aliases = _parse_aliases(raw.get("aliases"), models, source)

    return Config(
        models=tuple(models),
        server=server,
        http=_section(raw, "http", HttpConfig, source),
        retry=retry,
        breaker=_section(raw, "breaker", BreakerConfig, source),
        routing=_section(raw, "routing", RoutingConfig, source),
        storage=storage,
        source=source,
        log_level=log_level,
        log_format=log_format,
        disabled_models=tuple(disabled),
        aliases=aliases,
        clients=parse_clients(raw.get("clients"), server.api_keys, source),
    )


def _check_embedding_spaces(models: Iterable[ModelConfig], source: str) -> None:
    """The members of an embedding group must make comparable vectors: one `embedding_space`."""
    first: dict[str, ModelConfig] = {}
    for m in models:
        if m.kind != providers.EMBEDDING or not m.group:
            continue
        other = first.setdefault(m.group, m)
        if other.vector_space != m.vector_space:
            raise ConfigError(
                f"{source}: model '{m.name}': field 'embedding_space': group {m.group} mixes "
                f"'{other.name}' ({other.vector_space}) and '{m.name}' ({m.vector_space}); vectors of "
                "different models are not comparable (give members the same embedding_space only "
                "when they really make the same vectors)"
            )


# --- aliases: client-facing names (or globs) for a model or a group -------------------------------
def _parse_aliases(raw: Any, models: list[ModelConfig], source: str) -> tuple[tuple[str, str], ...]:
    """`aliases:` in file order; each target must be a configured model or group."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: field 'aliases': must be a mapping of name or glob to a model or group")
    names = {m.name for m in models}
    groups = {m.group for m in models if m.group}
    aliases = []
    for pattern, target in raw.items():
        if not isinstance(target, str) or not target.strip():
            raise ConfigError(f"{source}: alias '{pattern}': target must be a model or group name")
        target = target.strip()
        if target not in names and target.upper() not in groups:
            raise ConfigError(
                f"{source}: alias '{pattern}': target '{target}' is neither a model nor a group"
            )
        aliases.append((str(pattern), target))
    return tuple(aliases)


def alias_target(aliases: tuple[tuple[str, str], ...], name: str) -> str | None:
    """The target of the first alias whose name or glob matches `name` (any case), else None."""
    folded = name.lower()
    for pattern, target in aliases:
        if fnmatch.fnmatchcase(folded, pattern.lower()):
            return target
    return None


def _as_list(value: Any, source: str, where: str) -> list[str]:
    if isinstance(value, str):
        return value.split(",")
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    raise ConfigError(f"{source}: field '{where}': must be a list of strings")


_NUMBER_FIELDS = {
    "priority",
    "requests_per_minute",
    "requests_per_hour",
    "requests_per_day",
    "tokens_per_minute",
    "tokens_per_day",
    "max_request_length",
    "max_batch",
}


def _substitute_all(value: Any, environ: Mapping[str, str]) -> Any:
    """Substitute variables in every string of the parsed YAML."""
    if isinstance(value, str):
        return substitute(value, environ)
    if isinstance(value, dict):
        return {key: _substitute_all(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute_all(item, environ) for item in value]
    return value


def empty_variables(value: Any, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The ${VAR} names in `value` (a raw, unsubstituted string) that resolve to empty."""
    if not isinstance(value, str):
        return ()
    found = (
        m.group(1)
        for m in _VAR.finditer(value)
        if not (environ.get(m.group(1), "").strip() or (m.group(2) or "").strip())
    )
    return tuple(dict.fromkeys(found))


def secret_variables(entry: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[str, ...]:
    """The empty ${VAR}s of a raw model entry's secret: each one its `token` names, or the first one
    its `keys` name (any one key enables a pool)."""
    if "keys" not in entry:
        return empty_variables(entry.get("token"), environ)
    elements = entry["keys"] if isinstance(entry["keys"], list) else [entry["keys"]]
    return empty_variables(" ".join(e for e in elements if isinstance(e, str)), environ)[:1]


def _parse_model(entry: Any, index: int, secret_missing: tuple[str, ...], source: str) -> ModelConfig:
    label = f"model #{index + 1}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: {label}: must be a mapping of fields")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{source}: {label}: field 'name': required, a non-empty string")
    name = name.strip()
    where = f"{source}: model '{name}'"

    def fail(field_name: str, why: str) -> ConfigError:
        return ConfigError(f"{where}: field '{field_name}': {why}")

    provider = str(entry.get("provider") or "").strip().lower()
    if providers.spec(provider) is None:
        got = f"unknown provider {provider!r}" if provider else "required"
        raise fail(
            "provider",
            f"{got}; accepted: {', '.join(providers.names())} "
            "(any other OpenAI-compatible service is provider: openai with its url)",
        )

    url = str(entry.get("url") or "").strip()
    if not url:
        raise fail("url", f"required: for provider {provider}, {providers.SPECS[provider].url}")
    if not url.startswith(("http://", "https://")):
        raise fail("url", "must start with http:// or https://")

    known = {f.name for f in fields(ModelConfig)}
    values: dict[str, Any] = {}
    for key, value in entry.items():
        if key not in known or key in ("name", "provider", "url", "enabled"):
            continue
        if key in _NUMBER_FIELDS:
            if value is None or value == "":
                value = 0
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise fail(key, f"must be an integer, got {value!r}") from None
            if number < 0 and key != "priority":
                raise fail(key, "must not be negative")
            value = number
        values[key] = value

    token = str(values.pop("token", "") or "").strip()
    keys = _key_pool(entry, values.pop("keys", None), fail)
    kind = str(values.pop("kind", "chat") or "chat").strip().lower()
    if kind not in providers.KINDS:
        raise fail("kind", f"must be one of {', '.join(providers.KINDS)}")
    problem = providers.kind_problem(provider, kind, url)
    if problem:
        raise fail("kind", problem)
    reasoning = str(values.pop("reasoning", "split") or "split").strip().lower()
    if reasoning not in REASONING_MODES:
        raise fail("reasoning", f"must be one of {', '.join(REASONING_MODES)}")
    day_resets_at = str(values.pop("day_resets_at", "") or "").strip()
    if day_resets_at and not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", day_resets_at):
        raise fail("day_resets_at", "must be HH:MM")
    tz = str(values.pop("timezone", "UTC") or "UTC").strip()
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(tz)
    except Exception:
        raise fail("timezone", f"unknown time zone {tz!r}") from None
    headers = values.pop("headers", None) or {}
    if not isinstance(headers, dict):
        raise fail("headers", "must be a mapping of header names to values")
    headers = {str(k): str(v) for k, v in headers.items()}
    verify = values.pop("verify_ssl_certs", True)
    if isinstance(verify, str) and verify.lower() in ("true", "false"):
        verify = verify.lower() == "true"
    upstream = str(values.pop("upstream_model", "") or "").strip() or default_upstream_model(name, provider)
    model_size = str(values.pop("model_size", "") or "").strip()
    for key in ("auth_url", "scope", "task_type", "input_type", "embedding_space"):
        if key in values:
            values[key] = str(values[key] or "").strip()

    enabled = entry.get("enabled", True) is not False
    missing_env: tuple[str, ...] = ()
    if keys is None:
        if enabled and secret_missing:  # a token such as "${ID}:${SECRET}" with one part unset is no token
            missing_env, enabled = secret_missing, False
            needs = " and ".join(missing_env)
            log.warning("model %s disabled: its token needs %s (unset or empty)", name, needs)
        keys = (token,)
    elif not keys:
        if enabled:
            missing_env = secret_missing
            if missing_env:
                needs = " or ".join(missing_env)
                why = "(every element resolves to empty)"
                log.warning("model %s disabled: its keys need %s %s", name, needs, why)
            else:
                log.warning("model %s disabled: every element of its keys resolves to empty", name)
        enabled = False
    else:
        token = keys[0]

    return ModelConfig(
        name=name,
        provider=provider,
        url=url,
        upstream_model=upstream,
        token=token,
        keys=keys,
        kind=kind,
        reasoning=reasoning,
        day_resets_at=day_resets_at,
        timezone=tz,
        headers=headers,
        verify_ssl_certs=verify,
        model_size=model_size,
        enabled=enabled,
        missing_env=missing_env,
        **values,
    )


# --- key pools (routing) ---


def _key_pool(entry: dict, raw: Any, fail: Callable[[str, str], ConfigError]) -> tuple[str, ...] | None:
    """A model's `keys:` (None when absent): an element holding a comma-separated string becomes
    several keys; empty and repeated ones are dropped with one warning that names no key."""
    if "keys" not in entry:
        return None
    if "token" in entry:
        raise fail("keys", "give either 'token' or 'keys', not both")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise fail("keys", "must be a list of keys")
    keys: list[str] = []
    empty = repeated = 0
    for element in raw:
        if isinstance(element, dict | list):
            raise fail("keys", "each element must be a key (a string)")
        for part in ("" if element is None else str(element)).split(","):
            part = part.strip()
            if not part:
                empty += 1
            elif part in keys:
                repeated += 1
            else:
                keys.append(part)
    if keys and (empty or repeated):
        log.warning(
            "model %s: %d empty and %d repeated entries dropped from its keys, %d left",
            entry.get("name"),
            empty,
            repeated,
            len(keys),
        )
    return tuple(keys)


def default_upstream_model(name: str, provider: str) -> str:
    """Upstream id is the public name minus a leading "provider/", plus the provider's id prefix
    (Workers AI ids start with '@')."""
    upstream = name.removeprefix(provider + "/")
    spec = providers.spec(provider)
    prefix = spec.model_prefix if spec else ""
    return upstream if upstream.startswith(prefix) else prefix + upstream


def _section(raw: dict, key: str, cls: type, source: str) -> Any:
    section = raw.get(key) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: field '{key}': must be a mapping")
    defaults = cls()
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in section:
            continue
        value = section[f.name]
        default = getattr(defaults, f.name)
        try:
            values[f.name] = _coerce(value, default)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{source}: field '{key}.{f.name}': expected {type(default).__name__}, got {value!r}"
            ) from None
    unknown = set(section) - {f.name for f in fields(cls)}
    if unknown:
        log.warning("%s: unknown keys in '%s' ignored: %s", source, key, ", ".join(sorted(unknown)))
    return cls(**values)


def _coerce(value: Any, default: Any) -> Any:
    if isinstance(default, bool) and isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes", "1", "on"):
            return True
        if low in ("false", "no", "0", "off"):
            return False
        return value  # e.g. a CA bundle path for `verify`
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, int):
        number = int(value)
        if number < 0:
            raise ValueError
        return number
    if isinstance(default, float):
        number = float(value)
        if number < 0:
            raise ValueError
        return number
    if isinstance(default, tuple):
        return tuple(value) if isinstance(value, list | tuple) else value
    if value is None:
        return default
    return str(value)


# --- clients (their own keys, limits and models) ---

_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@#+-]{0,63}")
_CLIENT_LIMITS = (
    "requests_per_minute",
    "requests_per_hour",
    "requests_per_day",
    "tokens_per_minute",
    "tokens_per_day",
)
_CLIENT_FIELDS = frozenset(("name", "key", "key_sha256", "models", "admin", *_CLIENT_LIMITS))


def parse_clients(raw: Any, api_keys: tuple[str, ...], source: str) -> tuple[ClientConfig, ...]:
    """`server.api_keys` as unlimited admins (`admin#N`), then the `clients:` list. Errors are one
    line naming the client and the field, never a key."""
    clients = [ClientConfig(name=f"admin#{n}", key=key, admin=True) for n, key in enumerate(api_keys, 1)]
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: field 'clients': must be a list")
    for index, entry in enumerate(raw):
        client = _parse_client(entry, index, source)
        if client.key or client.key_sha256:
            clients.append(client)
        else:
            log.warning("client %s disabled: its key resolves to empty (set its variable)", client.name)
    names: set[str] = set()
    keys: set[str] = set()
    for client in clients:
        if client.name in names:
            raise ConfigError(f"{source}: client '{client.name}': field 'name': duplicate client name")
        names.add(client.name)
        digest = client.key_sha256 or hashlib.sha256(client.key.encode()).hexdigest()
        if digest in keys:
            raise ConfigError(f"{source}: client '{client.name}': field 'key': another client's key too")
        keys.add(digest)
    return tuple(clients)


def _parse_client(entry: Any, index: int, source: str) -> ClientConfig:
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: client #{index + 1}: must be a mapping of fields")
    name = entry.get("name")
    if not isinstance(name, str) or not _CLIENT_NAME.fullmatch(name.strip()):
        raise ConfigError(
            f"{source}: client #{index + 1}: field 'name': required, 1-64 letters, digits or ._@#+-"
        )
    name = name.strip()

    def fail(field_name: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: client '{name}': field '{field_name}': {why}")

    unknown = set(entry) - _CLIENT_FIELDS
    if unknown:
        raise fail(sorted(unknown)[0], f"unknown field; accepted: {', '.join(sorted(_CLIENT_FIELDS))}")
    key = entry.get("key")
    digest = entry.get("key_sha256")
    if key is not None and digest is not None:
        raise fail("key", "give either 'key' or 'key_sha256', not both")
    key = "" if key is None else str(key).strip()
    digest = "" if digest is None else str(digest).strip().lower()
    if digest and not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise fail("key_sha256", "must be 64 hex digits (the sha256 of the key)")
    if "key" not in entry and "key_sha256" not in entry:
        raise fail("key", "required (or key_sha256)")
    models = entry.get("models")
    if models is None:
        models = []
    elif isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not all(isinstance(m, str) and m.strip() for m in models):
        raise fail("models", "must be a list of model names, groups, aliases or globs")
    limits: dict[str, int] = {}
    for field_name in _CLIENT_LIMITS:
        value = entry.get(field_name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise fail(field_name, f"must be a non-negative integer, got {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise fail(field_name, f"must be a non-negative integer, got {value!r}") from None
        if number < 0:
            raise fail(field_name, "must not be negative")
        limits[field_name] = number
    admin = entry.get("admin", False)
    if isinstance(admin, str) and admin.strip().lower() in ("true", "false"):
        admin = admin.strip().lower() == "true"
    if not isinstance(admin, bool):
        raise fail("admin", "must be true or false")
    return ClientConfig(
        name=name,
        key=key,
        key_sha256=digest,
        models=tuple(m.strip() for m in models),
        admin=admin,
        **limits,
    )
