"""What the console reads from its environment.

The console has no database and no broker: it serves the browser app and forwards the
app's calls to the services. So it does not extend `ServiceSettings` (whose database
and broker settings would be required but never used) but `ProcessSettings`, the same
conventions (`DEALFLOW_` prefix, empty means unset, host and port), so that
`make run`, the tests and the manifests treat it like any service.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator

from dealflow_common.settings import ProcessSettings

# The services the browser may reach through /api/<name>/..., with their setting.
UPSTREAMS = ("opportunity", "quote", "order", "sequence", "purge", "reporting")


class ConsoleSettings(ProcessSettings):
    service_name: ClassVar[str] = "console"

    opportunity_url: str = Field(
        default="http://127.0.0.1:8001", description="Base URL of the opportunity service"
    )
    quote_url: str = Field(
        default="http://127.0.0.1:8002", description="Base URL of the quote service"
    )
    order_url: str = Field(
        default="http://127.0.0.1:8003", description="Base URL of the order service"
    )
    sequence_url: str = Field(
        default="http://127.0.0.1:8004", description="Base URL of the sequence service"
    )
    purge_url: str = Field(
        default="http://127.0.0.1:8005", description="Base URL of the purge service"
    )
    reporting_url: str | None = Field(
        default=None,
        description="Base URL of the reporting service (pipeline, forecast). Unset: the "
        "board sums the deal lists itself and shows no forecast chart",
    )
    console_upstream_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait for a service to answer a forwarded call"
    )

    console_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1_024,
        description="A request body longer than this is answered 413 before it is "
        "forwarded (the services refuse more than 1 MiB too)",
    )

    console_dev_sign_in: bool = Field(
        default=False,
        description="Offer the development sign-in: pick a development user and the "
        "console mints a short-lived token with DEALFLOW_JWT_SECRET. On in `make run` "
        "only; never in production",
    )
    console_dev_token_ttl_seconds: int = Field(
        default=3600, ge=60, le=12 * 3600, description="Lifetime of a development token"
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DEALFLOW_JWT_SECRET"),
        description="Shared HS256 secret; read only for the development sign-in.",
    )
    jwt_audience: str = "dealflow"

    console_oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer the browser signs in with (authorization code "
        "with PKCE); its discovery document is at <issuer>/.well-known/openid-configuration",
    )
    console_oidc_client_id: str | None = Field(
        default=None, description="The console's public client id at the identity provider"
    )
    console_oidc_scope: str = Field(
        default="openid profile", description="Scopes the console asks the provider for"
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @model_validator(mode="after")
    def _a_way_to_sign_in(self) -> Self:
        if self.console_dev_sign_in and self.jwt_secret is None:
            raise ValueError("DEALFLOW_CONSOLE_DEV_SIGN_IN needs DEALFLOW_JWT_SECRET")
        if bool(self.console_oidc_issuer) != bool(self.console_oidc_client_id):
            raise ValueError(
                "set both DEALFLOW_CONSOLE_OIDC_ISSUER and DEALFLOW_CONSOLE_OIDC_CLIENT_ID"
            )
        if not self.console_dev_sign_in and not self.console_oidc_issuer:
            raise ValueError(
                "set DEALFLOW_CONSOLE_OIDC_ISSUER and DEALFLOW_CONSOLE_OIDC_CLIENT_ID (or, "
                "for development only, DEALFLOW_CONSOLE_DEV_SIGN_IN=true): nobody could "
                "sign in otherwise"
            )
        return self

    def upstreams(self) -> dict[str, str]:
        """Service name -> base URL, for every service the console can reach."""
        found = {name: getattr(self, f"{name}_url") for name in UPSTREAMS}
        return {name: url.rstrip("/") for name, url in found.items() if url}
