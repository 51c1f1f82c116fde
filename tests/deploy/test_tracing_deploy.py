"""Traces in the deployments: compose ships a collector and Jaeger and points every
service at them; Kubernetes takes the endpoint from the shared ConfigMap."""

from __future__ import annotations

import yaml

from tests.deploy.test_manifests import COMPOSE_FILE, DEPLOY, SERVICES, compose, compose_environment

ROOT = COMPOSE_FILE.parent


def test_compose_runs_a_collector_that_hands_traces_to_jaeger() -> None:
    services = compose()["services"]
    collector, jaeger = services["otel-collector"], services["jaeger"]
    (mount,) = collector["volumes"]
    config_path = ROOT / mount.split(":")[0]
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    pipeline = config["service"]["pipelines"]["traces"]
    assert "otlp" in pipeline["receivers"]
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    (exporter,) = pipeline["exporters"]
    assert config["exporters"][exporter]["endpoint"] == "jaeger:4317"
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "16686:16686" in jaeger["ports"]


def test_every_compose_service_exports_to_the_collector() -> None:
    for name in SERVICES:
        environment = compose_environment(compose()["services"][name])
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith("http://otel-collector:4318}")
        assert environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"


def test_kubernetes_takes_the_endpoint_from_the_shared_config_map() -> None:
    config = yaml.safe_load((DEPLOY / "configmap.yaml").read_text(encoding="utf-8"))
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in config["data"]
    for name in SERVICES:
        deployment = yaml.safe_load((DEPLOY / name / "deployment.yaml").read_text("utf-8"))
        containers = deployment["spec"]["template"]["spec"]["containers"]
        sources = [s.get("configMapRef", {}).get("name") for s in containers[0]["envFrom"]]
        assert "dealflow-common" in sources, name
