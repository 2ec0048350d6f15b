"""Every file under deploy/ parses, and the commands, flags, environment variables, settings keys
and ports it uses exist in the code (so a rename cannot silently break a deployment)."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import tomllib
from typing import Any

import pytest
import typer.main
import yaml

from controller import cli, httpauth, settings, trigger
from controller import node as node_cli
from dwqueue import events
from gateway import limitfeed
from nodeagent import addresses
from nodeagent import command as nodecommand
from runtimestate import database
from runtimestate.resolver import exchange

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
HTTP_PORT = settings.split_address(settings.DEFAULT_HTTP_ADDRESS)[1]
ROOT = typer.main.get_command(cli.app).load_all()  # type: ignore[attr-defined]


def _yaml_docs(path: pathlib.Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _k8s() -> list[dict[str, Any]]:
    return [doc for p in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for doc in _yaml_docs(p)]


def _compose() -> dict[str, Any]:
    (doc,) = _yaml_docs(DEPLOY / "docker-compose.yml")
    return doc


def _unit(name: str = "llmctl.service") -> list[tuple[str, str]]:
    pairs = []
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if line.strip() and not line.startswith(("#", "[")):
            key, sep, value = line.partition("=")
            assert sep, f"not a key=value line: {line!r}"
            pairs.append((key, value))
    return pairs


def _dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(line.split(None, 1)[0], line.split(None, 1)[1]) for line in lines]


def _stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions by stage name (``FROM image AS name``)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for instruction, value in _dockerfile():
        if instruction == "FROM":
            current = stages.setdefault(value.split()[-1], [])
        current.append((instruction, value))
    return stages


def _packages() -> list[str]:
    """The top-level packages pyproject.toml installs."""
    with (DEPLOY.parent / "pyproject.toml").open("rb") as file:
        listed: list[str] = tomllib.load(file)["tool"]["setuptools"]["packages"]
    return sorted({name.split(".")[0] for name in listed})


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template", {}))
    return list(pod.get("spec", {}).get("containers", []))


def llmctl_invocations() -> list[list[str]]:
    """Every argv given to the llmctl entry point, in every file."""
    found: list[list[str]] = []
    for doc in _k8s():
        found += [list(c["args"]) for c in _containers(doc) if "args" in c]
    services = _compose()["services"]
    ours = ("llmctl:latest", "llmctl:node")
    found += [list(s["command"]) for s in services.values() if s.get("image") in ours]
    found += [list(_compose()["x-llmctl"]["command"])]
    for key, value in _unit() + _unit("llmctl-node.service"):
        if key == "ExecStart":
            argv = shlex.split(value)
            assert argv[0].endswith("/llmctl")
            found.append(argv[1:])
    for stage in ("node", "controller"):
        instructions = dict(_stages()[stage])
        assert yaml.safe_load(instructions["ENTRYPOINT"]) == ["llmctl"]
        found.append(yaml.safe_load(instructions["CMD"]))
    return found


def environment_names() -> set[str]:
    names: set[str] = set()
    for doc in _k8s():
        for container in _containers(doc):
            names |= {e["name"] for e in container.get("env", [])}
        if doc["kind"] in ("Secret", "ConfigMap"):
            names |= {k for k in doc.get("stringData", {}) | doc.get("data", {}) if k.isupper()}
    compose = _compose()
    names |= set(compose["x-llmctl"]["environment"])
    for key, value in _unit() + _unit("llmctl-node.service"):
        if key == "Environment":
            names.add(value.split("=", 1)[0])
    for instruction, value in _dockerfile():
        if instruction == "ENV":
            names |= set(re.findall(r"\b(LLMCTL_[A-Z_]+)=", value))
    return {n for n in names if n.startswith("LLMCTL_")}


def known_environment() -> set[str]:
    known = {f"LLMCTL_{field.upper()}" for field in settings.Settings.model_fields}
    known.add(settings.CONFIG_ENV)
    known.add(database.PASSWORD_FILE_ENV)  # read wherever a database URL is (not a setting)
    for command in [ROOT, *_commands(ROOT)]:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                known.add(envvar)
    return known


def _commands(group: Any) -> list[Any]:
    """Every command under ``group`` (typer vendors its own click: duck-typed)."""
    if not hasattr(group, "commands"):
        return []
    found = []
    for sub in group.commands.values():
        found += [sub, *_commands(sub)]
    return found


def test_every_deploy_file_parses() -> None:
    assert len(_k8s()) == 6
    assert {doc["kind"] for doc in _k8s()} == {
        "ConfigMap", "Secret", "Deployment", "Service", "CronJob", "Kustomization",
    }  # fmt: skip
    assert set(_compose()["services"]) == {
        "postgres", "nats", "ollama", "llmctl-1", "llmctl-2", "node-agent",
    }  # fmt: skip
    assert dict(_dockerfile())["EXPOSE"] == str(HTTP_PORT)
    assert ("ExecStart", "/opt/llmctl/bin/llmctl serve --http-address 127.0.0.1:9180") in _unit()


@pytest.mark.parametrize("argv", llmctl_invocations(), ids=" ".join)
def test_every_llmctl_command_and_flag_a_deploy_file_uses_exists(argv: list[str]) -> None:
    command: Any = ROOT
    words = list(argv)
    while words and hasattr(command, "commands") and not words[0].startswith("-"):
        sub = command.commands.get(words.pop(0))
        assert sub is not None, f"llmctl has no command {argv}"
        command = sub
    flags = {opt for param in command.params for opt in getattr(param, "opts", [])}
    used = {word for word in words if word.startswith("--")}
    assert used <= flags, f"unknown flags {used - flags} for llmctl {' '.join(argv)}"


def test_every_environment_variable_a_deploy_file_sets_is_read_by_llmctl() -> None:
    names = environment_names()
    assert {"LLMCTL_DATABASE_URL", "LLMCTL_NATS_URL", "LLMCTL_HTTP_ADDRESS"} <= names
    assert names <= known_environment(), names - known_environment()


def test_every_config_file_holds_only_settings_that_exist_and_loads(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("LLMCTL_")]:
        monkeypatch.delenv(name)
    (configmap,) = [d for d in _k8s() if d["kind"] == "ConfigMap"]
    files = {"configmap": configmap["data"]["llmctl.yaml"]}
    files["systemd"] = (DEPLOY / "systemd" / "llmctl.yaml").read_text()
    for label, text in files.items():
        keys = set(yaml.safe_load(text))
        assert keys <= set(settings.Settings.model_fields), (label, keys)
        path = tmp_path / f"{label}.yaml"
        path.write_text(text)
        loaded = settings.load(path)
        assert loaded.database_url is None


def test_the_ports_deploy_files_use_are_the_http_port_serve_listens_on() -> None:
    deployment = next(d for d in _k8s() if d["kind"] == "Deployment")
    (container,) = _containers(deployment)
    assert container["ports"][0]["containerPort"] == HTTP_PORT
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": HTTP_PORT}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": HTTP_PORT}
    (env,) = [e for e in container["env"] if e["name"] == "LLMCTL_HTTP_ADDRESS"]
    assert settings.split_address(env["value"])[1] == HTTP_PORT
    service = next(d for d in _k8s() if d["kind"] == "Service")
    assert service["spec"]["ports"][0]["targetPort"] == HTTP_PORT
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    compose = _compose()
    address = compose["x-llmctl"]["environment"]["LLMCTL_HTTP_ADDRESS"]
    assert settings.split_address(address)[1] == HTTP_PORT
    for name in ("llmctl-1", "llmctl-2"):
        (mapping,) = compose["services"][name]["ports"]
        assert mapping.rsplit(":", 1)[1] == str(HTTP_PORT)
    configmap = next(d for d in _k8s() if d["kind"] == "ConfigMap")
    config = yaml.safe_load(configmap["data"]["llmctl.yaml"])
    assert settings.split_address(config["http_address"])[1] == HTTP_PORT


def test_every_image_build_stage_copies_every_package_pyproject_installs() -> None:
    stages = _stages()
    (source,) = [name for name, lines in stages.items() if ("WORKDIR", "/src") in lines]
    copied = {value.split()[0] for instruction, value in stages[source] if instruction == "COPY"}
    assert set(_packages()) <= copied, set(_packages()) - copied
    installs = [name for name, lines in stages.items() if "pip install" in str(lines)]
    assert installs == ["build", "node-build"]
    assert all(stages[name][0][1] == f"{source} AS {name}" for name in installs)


def test_the_node_agent_image_unit_and_compose_service_serve_its_port_with_a_token_file() -> None:
    node = dict(_stages()["node"])
    assert node["FROM"].endswith("AS node")
    assert "node-build" in node["COPY"]
    assert node["EXPOSE"] == str(node_cli.DEFAULT_PORT)
    assert f"127.0.0.1:{node_cli.DEFAULT_PORT}/v1/health" in node["HEALTHCHECK"]
    assert 'pip install --no-cache-dir ".[${NODE_EXTRA}]"' in dict(_stages()["node-build"])["RUN"]
    assert dict(_stages()["node-build"])["ARG"] == "NODE_EXTRA=node"
    unit = dict(_unit("llmctl-node.service"))
    argv = shlex.split(unit["ExecStart"])
    assert argv[argv.index("--port") + 1] == str(node_cli.DEFAULT_PORT)
    assert argv[argv.index("--token-file") + 1] == "%d/node-token"
    assert unit["LoadCredential"] == "node-token:/etc/llmctl/node-token"
    assert unit["KillMode"] == "mixed"
    assert unit["Restart"] == "on-failure"
    assert unit["User"] == "llmctl-node"
    assert unit["StateDirectory"] == "llmctl-node"
    for flag in ("--cache-dir", "--state-dir"):
        assert argv[argv.index(flag) + 1].startswith("/var/lib/llmctl-node/")
    service = _compose()["services"]["node-agent"]
    command = service["command"]
    assert command[command.index("--token-file") + 1] == "/run/secrets/node_token"
    assert service["secrets"] == ["node_token"]
    assert "node_token" in _compose()["secrets"]
    assert service["build"]["target"] == "node"
    template = command[command.index("--command") + 1]
    nodecommand.check_template(tuple(shlex.split(template)))  # raises for a bad template
    assert service["ports"] == [f"127.0.0.1:{node_cli.DEFAULT_PORT}:{node_cli.DEFAULT_PORT}"]


def test_the_node_agent_unit_and_compose_service_put_instances_where_other_hosts_reach_them() -> (
    None
):
    argv = shlex.split(dict(_unit("llmctl-node.service"))["ExecStart"])
    assert argv[argv.index("--instance-host") + 1] == "0.0.0.0"
    assert "--advertise-host" not in argv  # the machine's fully-qualified name
    command = _compose()["services"]["node-agent"]["command"]
    host = command[command.index("--instance-host") + 1]
    advertised = command[command.index("--advertise-host") + 1]
    assert host == "0.0.0.0"
    assert advertised == "node-agent"  # the service name the other services resolve
    assert addresses.advertised(host, advertised) == advertised  # raises for a bad one


def test_serve_in_deploy_files_binds_beyond_loopback_only_with_a_token_from_a_file() -> None:
    deployment = next(d for d in _k8s() if d["kind"] == "Deployment")
    (container,) = _containers(deployment)
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for variable, key in [
        ("LLMCTL_HTTP_TOKEN_FILE", "http-token"),
        ("LLMCTL_DATABASE_PASSWORD_FILE", "database-password"),
    ]:
        directory, name = env[variable]["value"].rsplit("/", 1)
        (volume,) = [n for n, path in mounts.items() if path == directory]
        secret = volumes[volume]["secret"]
        assert {"key": key, "path": name} in secret["items"]
        (stored,) = [d for d in _k8s() if d["kind"] == "Secret"]
        assert stored["metadata"]["name"] == secret["secretName"]
        assert key in stored["stringData"]
    assert "envFrom" not in container  # the Secret's files never become environment variables
    compose = _compose()["x-llmctl"]
    assert not httpauth.is_loopback(
        settings.split_address(compose["environment"]["LLMCTL_HTTP_ADDRESS"])[0]
    )
    secret_file = compose["environment"]["LLMCTL_HTTP_TOKEN_FILE"]
    assert secret_file == f"/run/secrets/{compose['secrets'][0]}"
    assert compose["secrets"][0] in _compose()["secrets"]


def test_the_nats_permissions_example_names_the_subjects_and_stream_llmctl_uses() -> None:
    text = (DEPLOY / "nats" / "permissions.conf").read_text()
    quoted = set(re.findall(r'"([^"]+)"', text))
    prefix = events.DEFAULT_PREFIX
    ours = {
        trigger.subject(prefix, trigger.TRIGGER),
        trigger.subject(prefix, trigger.CANCEL),
        events.downloads_root(prefix) + ".>",
        f"{prefix}.v1.state.>",
        f"{prefix}.v1.cycles",
        limitfeed.subject(prefix),
        exchange.subject(prefix, ">"),
    }
    assert {s for s in quoted if s.startswith(f"{prefix}.")} == ours
    jetstream = {s for s in quoted if s.startswith("$JS")}
    assert jetstream, "the controller declares the replay stream, watchers replay it"
    assert all(f".{events.stream_name(prefix)}" in s for s in jetstream), jetstream
    users = re.findall(r"\{ user: (\w+), password: \$(\w+), permissions: \$(\w+) \}", text)
    assert users == [
        ("controller", "NATS_CONTROLLER_PASSWORD", "CONTROLLER"),
        ("watcher", "NATS_WATCHER_PASSWORD", "WATCHER"),
        ("resolver", "NATS_RESOLVER_PASSWORD", "RESOLVER"),
        ("gateway", "NATS_GATEWAY_PASSWORD", "GATEWAY"),
        ("operator", "NATS_OPERATOR_PASSWORD", "OPERATOR"),
    ]
