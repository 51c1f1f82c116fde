"""Settings every Dealflow service reads from its environment.

Only a service's `bootstrap` instantiates these classes; nothing else reads the
environment. The well-known names of DESIGN.md (`DATABASE_URL`,
`KAFKA_BOOTSTRAP_SERVERS`, `DEALFLOW_JWT_SECRET`, `DEALFLOW_JWT_JWKS_URL`) are
read as they are; every other knob is `DEALFLOW_<FIELD>`.

Secrets have no default: a service without `DEALFLOW_JWT_SECRET` or
`DEALFLOW_JWT_JWKS_URL` refuses to start rather than run with a known key.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProcessSettings(BaseSettings):
    """What every Dealflow process reads the same way: the `DEALFLOW_` prefix, empty
    meaning unset, and where it listens. The services extend it as `ServiceSettings`;
    the console, which has no database and no broker, extends it directly."""

    # env_ignore_empty: an empty variable (`DEALFLOW_JWT_ISSUER=` in a manifest) means
    # "not set", not "the empty string", which would make every token fail issuer checks.
    model_config = SettingsConfigDict(
        env_prefix="DEALFLOW_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        env_ignore_empty=True,
    )

    service_name: ClassVar[str] = "service"
    """Set by each process's settings class; never read from the environment."""

    host: str = Field(default="127.0.0.1", description="Interface the HTTP API binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")


class ServiceSettings(ProcessSettings):
    """What every service needs beyond that: its database, the broker, auth."""

    database_url: str = Field(
        validation_alias=AliasChoices("DATABASE_URL"),
        description="SQLAlchemy async URL: postgresql+asyncpg://… or sqlite+aiosqlite:///…",
    )
    database_schema: str | None = Field(
        default=None,
        description="PostgreSQL schema owned by this service (defaults to the service name). "
        "Ignored on SQLite, where each service has its own file.",
    )
    database_pool_size: int = Field(
        default=20,
        ge=1,
        description="Connections a process opens at most, each kept open once opened; a "
        "request that finds none free waits for one. None is opened past it and closed "
        "again: under load such a connection was made and dropped about once a deal, each "
        "time a new server process and every statement prepared again.",
    )
    database_echo: bool = False
    database_statement_timeout_ms: int = Field(
        default=15_000,
        ge=0,
        description="PostgreSQL statement_timeout: a statement running longer is cancelled "
        "and the request answers 503. 0 turns it off.",
    )
    database_lock_timeout_ms: int = Field(
        default=5_000,
        ge=0,
        description="PostgreSQL lock_timeout: a statement waiting longer for a row or table "
        "lock held by another transaction fails, and the request answers 409. 0 turns it off.",
    )
    database_idle_in_transaction_timeout_ms: int = Field(
        default=60_000,
        ge=0,
        description="PostgreSQL idle_in_transaction_session_timeout: a session that holds a "
        "transaction open without running anything for longer is closed, releasing its "
        "locks. 0 turns it off.",
    )
    database_sqlite_busy_timeout_ms: int = Field(
        default=5_000,
        ge=0,
        description="SQLite busy timeout: how long a writer waits for another writer's "
        "transaction before the request answers 503 with Retry-After.",
    )

    kafka_bootstrap_servers: str = Field(
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated host:port list of the Kafka brokers.",
    )
    kafka_client_id: str | None = None
    kafka_enable_idempotence: bool = Field(
        default=True,
        description="Idempotent producer. On for Apache Kafka; Tansu refuses it, so the "
        "embedded runtime and the tests turn it off.",
    )
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    kafka_fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        description="How long the broker may hold a consumer's fetch for data, for the "
        "consumers a request or the accept saga waits on.",
    )
    kafka_background_fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        description="The same for background consumers, which no request waits on "
        "(the purge agent and its commands, follow-up sequences, reporting): a broker "
        "that holds a fetch its whole wait (Tansu) is polled that much less often.",
    )
    kafka_background_linger_ms: int = Field(
        default=100,
        ge=0,
        description="After a batch, a background consumer waits this long before it "
        "reads again, so that the next batch is larger: one transaction, one inbox insert "
        "and one offset commit then serve more events.",
    )
    kafka_commit_interval_ms: int = Field(
        default=200,
        ge=0,
        description="Offsets are committed at most this often per consumer, and whenever "
        "it falls idle. A crash reads again what was applied since; the inbox skips it.",
    )
    kafka_topic_partitions: int = Field(default=6, ge=1)
    kafka_replication_factor: int = Field(default=3, ge=1)
    kafka_create_topics: bool = Field(
        default=True, description="Create missing topics (and their .dlq) at start."
    )
    kafka_consumer_batch_size: int = Field(default=200, ge=1)
    kafka_request_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        description="Longest wait for the broker to answer one request (a send, a "
        "metadata fetch); past it the relay retries later and readiness says the broker "
        "is away.",
    )

    jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DEALFLOW_JWT_SECRET"),
        description="Shared HS256 secret (development and tests).",
    )
    jwt_jwks_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DEALFLOW_JWT_JWKS_URL"),
        description="JWKS of an enterprise identity provider (RS256/ES256 tokens).",
    )
    jwt_allow_hs256: bool = Field(
        default=False,
        description="With DEALFLOW_JWT_JWKS_URL set, accept HS256 tokens signed with "
        "DEALFLOW_JWT_SECRET as well (off: only the identity provider's tokens). Without "
        "a JWKS URL, HS256 is the only mode and this is not read.",
    )
    jwt_audience: str = "dealflow"
    jwt_issuer: str | None = None
    jwt_max_token_bytes: int = Field(
        default=8_192,
        ge=512,
        description="A longer bearer token is refused (401) before it is parsed; identity "
        "providers' tokens are 1-2 KB.",
    )
    jwt_jwks_cache_seconds: float = Field(
        default=300,
        gt=0,
        description="How long the identity provider's key set is kept before it is fetched "
        "again (a token naming an unknown key fetches it at once).",
    )

    http_max_header_bytes: int = Field(
        default=16_384,
        ge=1_024,
        description="Request line and headers together; more is answered 431.",
    )
    http_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1_024,
        description="A request body longer than this is answered 413, from its "
        "Content-Length or while it streams in, without reading it whole.",
    )
    rate_limit_per_second: float = Field(
        default=1_000,
        ge=0,
        description="Requests per second each caller (token `sub`) may make to one process "
        "of a service, on average; 0 turns the limit off. Past it: 429 with Retry-After.",
    )
    rate_limit_burst: int = Field(
        default=2_000,
        ge=1,
        description="Requests a caller may make at once above the average rate.",
    )

    outbox_poll_interval_ms: int = Field(
        default=500,
        ge=10,
        description="How often the relay looks for rows committed by other replicas; "
        "commits in this process wake it at once.",
    )
    outbox_batch_size: int = Field(default=500, ge=1)
    outbox_publish_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        description="Longest wait for the broker to ack one relay batch; what is not "
        "acked by then stays unsent and is sent again.",
    )
    outbox_retention_hours: int = Field(
        default=168, ge=1, description="How long published outbox rows are kept for audit."
    )
    inbox_retention_hours: int = Field(
        default=720,
        ge=1,
        description="How long applied event ids are remembered; keep above Kafka retention.",
    )
    idempotency_key_retention_hours: int = Field(
        default=24,
        ge=1,
        description="How long an Idempotency-Key of a create is remembered: a retry "
        "within it gets what the first request made.",
    )
    consumer_max_attempts: int = Field(
        default=5, ge=1, description="Attempts before a message goes to the dead-letter topic."
    )
    consumer_retry_backoff_ms: int = Field(default=200, ge=0)
    consumer_stall_pause_ms: int = Field(
        default=5_000,
        ge=10,
        description="How long a partition rests before it is read again after a record "
        "there could be neither applied nor dead-lettered.",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @model_validator(mode="after")
    def _requires_a_token_key(self) -> Self:
        if self.jwt_secret is None and not self.jwt_jwks_url:
            raise ValueError(
                "set DEALFLOW_JWT_SECRET (HS256) or DEALFLOW_JWT_JWKS_URL: "
                "every business endpoint needs a way to verify bearer tokens"
            )
        if self.jwt_jwks_url and self.jwt_allow_hs256 and self.jwt_secret is None:
            raise ValueError("DEALFLOW_JWT_ALLOW_HS256 needs DEALFLOW_JWT_SECRET")
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value()) < 32:
            # RFC 7518 section 3.2: an HS256 key shorter than the hash is guessable.
            raise ValueError("DEALFLOW_JWT_SECRET must be at least 32 characters")
        return self

    @property
    def db_schema(self) -> str:
        return self.database_schema or self.service_name


def environment_variables(settings_class: type[ServiceSettings]) -> dict[str, bool]:
    """Every environment variable a settings class reads -> whether it holds a secret.

    The deployment manifests must provide each of them (a test checks it), secrets from
    a Secret rather than a ConfigMap.
    """
    prefix = settings_class.model_config.get("env_prefix", "")
    names: dict[str, bool] = {}
    for name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            env = str(alias.choices[0])
        elif isinstance(alias, str):
            env = alias
        else:
            env = f"{prefix}{name}".upper()
        names[env] = name in secret_fields(settings_class)
    return names


def secret_fields(settings_class: type[ServiceSettings]) -> set[str]:
    """The fields of a settings class that hold secrets."""
    return {
        name
        for name, field in settings_class.model_fields.items()
        if field.annotation is not None and "SecretStr" in str(field.annotation)
    }
