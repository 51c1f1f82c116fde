"""The production manifests (Dockerfile, docker-compose.yml, deploy/) against the code.

Every service installed in the workspace (`dealflow.services` entry points) must be
deployable: a compose service and a Kubernetes Deployment + Service that provide every
environment variable its settings class reads, secrets from secrets only. A service
added to the workspace fails these tests until its manifests exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dealflow_common.runtime.processes import installed_services, owns_database, service_module
from dealflow_common.settings import environment_variables

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
KUSTOMIZATION = DEPLOY / "kustomization.yaml"
SECRET_EXAMPLE = DEPLOY / "secret.example.yaml"

SERVICES: dict[str, Any] = installed_services()

# A `${NAME:?message}` reference: compose refuses to start while NAME is unset or empty.
REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}$")

# Always secret, even though the settings field is a plain str: the URL holds a password.
ALWAYS_SECRET = {"DATABASE_URL"}


def interpolate(value: str) -> str:
    """A compose value as compose would expand it with only the required variables set."""

    def expand(match: re.Match[str]) -> str:
        operator, word = match.group(2) or "", match.group(3) or ""
        if operator.endswith("?"):
            return "placeholder-secret-long-enough-for-any-check-0123456789"
        return word if operator.endswith("-") else ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?([^}]*)\}", expand, value)


def check_configuration(
    monkeypatch: pytest.MonkeyPatch, settings_class: Any, environment: dict[str, Any], where: str
) -> None:
    """Start the settings class on exactly this environment, as the service would."""
    for variable in environment_variables(settings_class):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        if value is not None:
            monkeypatch.setenv(variable, str(value))
    problem = None
    try:
        settings_class()
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        problem = str(error)
    if problem is not None:
        pytest.fail(f"{where}: the service would refuse to start:\n{problem}")


def secret_variables(settings_class: Any) -> set[str]:
    variables = environment_variables(settings_class)
    flagged = {name for name, secret in variables.items() if secret}
    return flagged | (ALWAYS_SECRET & set(variables))


def has_database(name: str) -> bool:
    """Whether a service owns a schema (the console, a gateway, has none)."""
    return owns_database(SERVICES[name])


# --- docker-compose.yml --------------------------------------------------------------------


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


def compose_environment(service: dict[str, Any]) -> dict[str, Any]:
    """A compose `environment:` as a mapping, whichever of its two forms is used."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in environment)
        return dict(pairs)
    return dict(environment)


def compose_service(name: str) -> dict[str, Any]:
    services = compose().get("services", {})
    assert name in services, (
        f"docker-compose.yml has no service {name!r} (installed services: {sorted(SERVICES)}); "
        f"add one like `opportunity`"
    )
    return dict(services[name])


def test_at_least_one_service_is_installed() -> None:
    assert SERVICES, "no `dealflow.services` entry point is installed: run `make` first"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_runs_each_service_from_the_one_image(name: str) -> None:
    service = compose_service(name)
    build = service.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    dockerfile = "Dockerfile" if isinstance(build, str) else (build or {}).get("dockerfile")
    assert context in {".", "./"}, f"compose service {name!r} is not built from the repository"
    assert dockerfile in {None, "Dockerfile"}, (
        f"compose service {name!r} is built from {dockerfile!r}, not the Dockerfile"
    )
    command = service.get("command")
    assert isinstance(command, list), f"compose service {name!r}: command must be a list"
    module = service_module(SERVICES[name])
    assert command[:2] == [module, "serve"], (
        f"compose service {name!r} runs {command}, expected [{module!r}, 'serve', ...] "
        f"(the image's entrypoint is `python -m`)"
    )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_setting_a_service_reads_is_set_in_compose(name: str) -> None:
    environment = compose_environment(compose_service(name))
    missing = sorted(set(environment_variables(SERVICES[name])) - set(environment))
    assert not missing, f"docker-compose.yml service {name!r} does not set: {', '.join(missing)}"
    if has_database(name):
        assert environment.get("DEALFLOW_DATABASE_SCHEMA") == name, (
            f"compose service {name!r} must use its own schema: DEALFLOW_DATABASE_SCHEMA={name}"
        )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_environment_is_a_configuration_the_service_accepts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = {
        variable: None if value is None else interpolate(str(value))
        for variable, value in compose_environment(compose_service(name)).items()
    }
    check_configuration(monkeypatch, SERVICES[name], environment, f"compose service {name!r}")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_publishes_and_health_checks_the_service_port(name: str) -> None:
    service = compose_service(name)
    port = str(compose_environment(service).get("DEALFLOW_PORT"))
    ports = [str(p) for p in service.get("ports", [])]
    assert f"{port}:{port}" in ports, (
        f"compose service {name!r} listens on DEALFLOW_PORT={port} but publishes {ports}"
    )
    healthcheck = " ".join(str(part) for part in service.get("healthcheck", {}).get("test", []))
    assert "/readyz" in healthcheck, f"compose service {name!r} has no /readyz healthcheck"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_holds_no_secret_value(name: str) -> None:
    environment = compose_environment(compose_service(name))
    for variable in sorted(secret_variables(SERVICES[name]) - ALWAYS_SECRET):
        value = str(environment.get(variable))
        assert REQUIRED_REFERENCE.match(value), (
            f"compose service {name!r} sets {variable}={value!r}: a secret must be a "
            f"required reference such as ${{{variable}:?set {variable}}}, never a literal"
        )
    if not has_database(name):
        assert "DATABASE_URL" not in environment, f"{name!r} has no database: no DATABASE_URL"
        return
    url = str(environment.get("DATABASE_URL"))
    password = re.match(r"^[^:]+://[^:@/]+:(.*)@[^@]+$", url)
    assert password, f"compose service {name!r}: DATABASE_URL={url!r} names no password"
    assert REQUIRED_REFERENCE.match(password.group(1)), (
        f"compose service {name!r}: the password in DATABASE_URL={url!r} must be a "
        f"${{POSTGRES_PASSWORD:?...}} reference"
    )


def test_compose_runs_kafka_in_kraft_mode_on_three_brokers() -> None:
    services = compose()["services"]
    kafka = {
        name: compose_environment(service)
        for name, service in services.items()
        if str(service.get("image", "")).startswith("apache/kafka")
    }
    assert len(kafka) >= 3, f"docker-compose.yml runs {len(kafka)} Kafka broker(s), needs 3"
    zookeeper = [
        name
        for name, service in services.items()
        if "zookeeper" in str(service.get("image", "")).lower()
        or any("ZOOKEEPER" in str(key) for key in compose_environment(service))
    ]
    assert not zookeeper, f"KRaft needs no ZooKeeper, yet compose has {zookeeper}"
    for name, environment in kafka.items():
        roles = str(environment.get("KAFKA_PROCESS_ROLES", ""))
        assert set(roles.split(",")) == {"broker", "controller"}, (
            f"Kafka {name!r}: KAFKA_PROCESS_ROLES={roles!r}, expected broker,controller (KRaft)"
        )
        voters = str(environment.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "")).split(",")
        assert len(voters) >= 3, f"Kafka {name!r}: the controller quorum has {voters}"
        assert str(environment.get("KAFKA_DEFAULT_REPLICATION_FACTOR")) == "3", name
        assert str(environment.get("KAFKA_MIN_INSYNC_REPLICAS")) == "2", name
    node_ids = [str(environment.get("KAFKA_NODE_ID")) for environment in kafka.values()]
    assert len(set(node_ids)) == len(node_ids), f"Kafka node ids repeat: {node_ids}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_services_reach_every_broker(name: str) -> None:
    if "kafka_bootstrap_servers" not in SERVICES[name].model_fields:
        environment = compose_environment(compose_service(name))
        assert "KAFKA_BOOTSTRAP_SERVERS" not in environment, f"{name!r} uses no broker"
        return
    bootstrap = str(compose_environment(compose_service(name)).get("KAFKA_BOOTSTRAP_SERVERS"))
    assert len(bootstrap.split(",")) >= 3, (
        f"compose service {name!r}: KAFKA_BOOTSTRAP_SERVERS={bootstrap!r} should list the "
        f"three brokers"
    )


# --- deploy/ (Kubernetes) ------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p not in {KUSTOMIZATION, SECRET_EXAMPLE})


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object under deploy/ (the example Secret aside), by (kind, name)."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                key = (document["kind"], document["metadata"]["name"])
                assert key not in objects, f"{key} is defined twice under deploy/"
                objects[key] = document
    return objects


def example_secret_keys() -> set[str]:
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text(encoding="utf-8"))
    assert secret["kind"] == "Secret", "deploy/secret.example.yaml is not a Secret"
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


def deployment(name: str) -> dict[str, Any]:
    found = manifests().get(("Deployment", name))
    assert found, f"deploy/ has no Deployment {name!r}: add deploy/{name}/deployment.yaml"
    return found


def main_container(name: str) -> dict[str, Any]:
    containers = deployment(name)["spec"]["template"]["spec"]["containers"]
    module = service_module(SERVICES[name])
    serving = [c for c in containers if module in [*c.get("command", []), *c.get("args", [])]]
    assert len(serving) == 1, f"Deployment {name!r}: expected one container running {module}"
    return dict(serving[0])


def sources(container: dict[str, Any]) -> dict[str, str]:
    """Each variable a container gets -> where from ("ConfigMap x", "Secret y", "value")."""
    objects = manifests()
    provided: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config_map = source["configMapRef"]["name"]
            found = objects.get(("ConfigMap", config_map))
            assert found, f"ConfigMap {config_map!r} is referenced but not under deploy/"
            for key in found.get("data", {}):
                provided[key] = f"ConfigMap {config_map}"
        if "secretRef" in source:
            secret = source["secretRef"]["name"]
            assert secret == "dealflow-secrets", f"unexpected Secret {secret!r}"
            for key in example_secret_keys():
                provided[key] = f"Secret {secret}"
    for variable in container.get("env", []):
        reference = variable.get("valueFrom", {})
        if "secretKeyRef" in reference:
            provided[variable["name"]] = f"Secret {reference['secretKeyRef']['name']}"
        elif "configMapKeyRef" in reference:
            provided[variable["name"]] = f"ConfigMap {reference['configMapKeyRef']['name']}"
        else:
            provided[variable["name"]] = "value"
    return provided


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"port {port!r} is not a named port of {container['name']!r}"
    return int(named[port])


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_setting_a_service_reads_is_provided_in_kubernetes(name: str) -> None:
    provided = sources(main_container(name))
    missing = sorted(set(environment_variables(SERVICES[name])) - set(provided))
    assert not missing, (
        f"Deployment {name!r} gets no value for: {', '.join(missing)} "
        f"(add them to deploy/configmap.yaml, deploy/{name}/configmap.yaml or, for "
        f"secrets, to the Secret and deploy/secret.example.yaml)"
    )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_kubernetes_environment_is_a_configuration_the_service_accepts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = manifests()
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text(encoding="utf-8"))
    environment: dict[str, Any] = {}
    for source in main_container(name).get("envFrom", []):
        if "configMapRef" in source:
            environment.update(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
        if "secretRef" in source:
            environment.update(secret.get("stringData", {}))
    check_configuration(monkeypatch, SERVICES[name], environment, f"Deployment {name!r}")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_secrets_come_from_the_secret_never_a_config_map(name: str) -> None:
    provided = sources(main_container(name))
    for variable in sorted(secret_variables(SERVICES[name])):
        assert provided.get(variable, "").startswith("Secret "), (
            f"Deployment {name!r} takes {variable} from {provided.get(variable, 'nowhere')}; "
            f"it holds a secret and must come from the Secret dealflow-secrets"
        )
    for (kind, config_map), document in manifests().items():
        if kind == "ConfigMap":
            leaked = sorted(secret_variables(SERVICES[name]) & set(document.get("data", {})))
            assert not leaked, f"ConfigMap {config_map!r} holds secret(s): {', '.join(leaked)}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_probes_check_health_and_readiness_on_the_configured_port(name: str) -> None:
    container = main_container(name)
    config_map = manifests().get(("ConfigMap", f"dealflow-{name}"))
    assert config_map, f"deploy/ has no ConfigMap dealflow-{name} (DEALFLOW_PORT, schema)"
    port = int(config_map["data"]["DEALFLOW_PORT"])
    if has_database(name):
        assert config_map["data"].get("DEALFLOW_DATABASE_SCHEMA") == name, (
            f"ConfigMap dealflow-{name} must set DEALFLOW_DATABASE_SCHEMA={name}"
        )
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container.get(probe, {}).get("httpGet")
        assert http, f"Deployment {name!r} has no httpGet {probe}"
        assert http["path"] == path, f"Deployment {name!r}: {probe} checks {http['path']}"
        assert port_number(container, http["port"]) == port, (
            f"Deployment {name!r}: {probe} checks port {http['port']}, "
            f"but the service listens on DEALFLOW_PORT={port}"
        )
    assert "httpGet" in container.get("startupProbe", {}), f"{name!r} has no startupProbe"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_a_service_routes_to_the_deployment_http_port(name: str) -> None:
    service = manifests().get(("Service", name))
    assert service, f"deploy/ has no Service {name!r}: add deploy/{name}/service.yaml"
    pod_labels = deployment(name)["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= pod_labels.items(), (
        f"Service {name!r} selects {selector}, which the pods ({pod_labels}) do not carry"
    )
    http = [p for p in service["spec"]["ports"] if p.get("name") == "http"]
    assert http, f"Service {name!r} has no port named http"
    container = main_container(name)
    target = port_number(container, http[0]["targetPort"])
    assert target in [p["containerPort"] for p in container["ports"]], (
        f"Service {name!r} targets port {target}, which the container does not expose"
    )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_an_init_container_migrates_the_schema_first(name: str) -> None:
    module = service_module(SERVICES[name])
    init = deployment(name)["spec"]["template"]["spec"].get("initContainers", [])
    migrating = [
        c for c in init if {module, "migrate"} <= {*c.get("command", []), *c.get("args", [])}
    ]
    if not has_database(name):
        assert not migrating, f"Deployment {name!r} has no database to migrate"
        return
    assert migrating, f"Deployment {name!r} has no initContainer running `{module} migrate`"
    assert sources(migrating[0]) == sources(main_container(name)), (
        f"Deployment {name!r}: the migrate initContainer must get the same environment"
    )


def test_jwt_issuer_is_left_unset_rather_than_empty() -> None:
    # An empty DEALFLOW_JWT_ISSUER is read as the issuer "" and PyJWT then requires an
    # `iss` claim equal to it: every token would be rejected.
    for (kind, config_map), document in manifests().items():
        if kind == "ConfigMap":
            value = document.get("data", {}).get("DEALFLOW_JWT_ISSUER")
            assert value != "", f"ConfigMap {config_map!r} sets DEALFLOW_JWT_ISSUER to ''"
    for name in SERVICES:
        value = compose_environment(compose_service(name)).get("DEALFLOW_JWT_ISSUER")
        assert value is None or not re.fullmatch(r"|\$\{DEALFLOW_JWT_ISSUER(:?-)?\}", value), (
            f"compose service {name!r} may set DEALFLOW_JWT_ISSUER to '' ({value!r}); "
            f"leave the value out so that it is passed through only when set"
        )


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    listed = set(kustomization.get("resources", []))
    present = {p.relative_to(DEPLOY).as_posix() for p in manifest_files()}
    assert not present - listed, f"kustomization.yaml does not list: {sorted(present - listed)}"
    assert not listed - present, f"kustomization.yaml lists missing files: {listed - present}"
    assert SECRET_EXAMPLE.name not in listed, "the example Secret must never be applied"
    assert kustomization.get("namespace") == "dealflow"


# --- Dockerfile ----------------------------------------------------------------------------


def test_the_image_runs_as_a_non_root_user() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    final_stage = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    users = [line.split()[1] for line in lines[final_stage:] if line.upper().startswith("USER ")]
    assert users, "the Dockerfile's final stage never switches away from root (no USER)"
    user = users[-1].split(":")[0]
    assert user.isdigit(), (
        f"the final stage runs as {users[-1]!r}: use a numeric UID, which Kubernetes can "
        f"check against runAsNonRoot"
    )
    assert int(user) != 0, "the final stage runs as root (UID 0)"
