"""The settings of ``llmctl serve`` (and ``llmctl demo``): defaults, a config file, the environment.

Built once by the composition root (`controller.serve`) with `load`, then passed down as plain
values (`state_settings`, `scheduling`); nothing imports a module-level instance. Precedence,
highest first: command-line flags (``overrides``), ``LLMCTL_*`` environment variables, the config
file (``--config`` / ``LLMCTL_CONFIG``, YAML or TOML, same field names), the defaults below.
Every field carries a description; `controller.serve --help` and the README list them. Raises
`errors.ConfigurationError` (fail at start) for a missing or unknown file, or invalid values.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import sys
from typing import Any, Literal

import pydantic
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from controller import crontab, datadir, httpauth, natssettings
from dwqueue import secretfiles
from runtimestate import downloads, echo, errors, state
from runtimestate.backends import base
from runtimestate.reconcile import cycle, probing, upgradewatch

ENV_PREFIX = "LLMCTL_"
CONFIG_ENV = "LLMCTL_CONFIG"
DEFAULT_HTTP_ADDRESS = "127.0.0.1:9180"
DEFAULT_CYCLE_INTERVAL_S = 30.0
LogFormat = Literal["json", "console"]


class Settings(natssettings.NatsSettings):
    """Everything ``serve`` can be told; each field is also ``LLMCTL_<FIELD>`` in upper case.

    The NATS credential and TLS fields come from `natssettings.NatsSettings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    database_url: str | None = pydantic.Field(
        None,
        description="sqlite:///path/file.db or postgresql://user@host/db; "
        "unset: a SQLite file in data_dir (one replica only)",
    )
    nats_url: str | None = pydantic.Field(
        None,
        description="nats://host:4222 of the NATS server for events and triggers; "
        "unset: start an embedded nats-server on loopback",
    )
    subject_prefix: str = pydantic.Field("llmctl", description="first token of every subject")
    cycle_interval_s: float | None = pydantic.Field(
        None,
        gt=0,
        description=f"seconds between backend cycles (default {DEFAULT_CYCLE_INTERVAL_S:g}); "
        "exclusive with cycle_cron",
    )
    cycle_cron: str | None = pydantic.Field(
        None,
        description="crontab expression for backend cycles: 5 fields (minute hour day month "
        "weekday) or 6 with seconds first; exclusive with cycle_interval_s",
    )
    download_interval_s: float = pydantic.Field(
        1.0, gt=0, description="seconds between download cycles (claim queued pulls)"
    )
    reaper_interval_s: float = pydantic.Field(
        5.0, gt=0, description="seconds between sweeps that requeue jobs with expired leases"
    )
    trigger_min_interval_s: float = pydantic.Field(
        1.0,
        ge=0,
        description="at most one triggered cycle per this many seconds; triggers arriving "
        "sooner are coalesced into one cycle at the end of the window",
    )
    download_concurrency: int = pydantic.Field(
        8, ge=1, description="pulls this process runs at once, over all backends"
    )
    lease_ttl_s: float = pydantic.Field(
        30.0, gt=0, description="lease of a running download; another replica takes it over after"
    )
    heartbeat_s: float = pydantic.Field(
        0.5, gt=0, description="how often a running pull renews its lease and notices a cancel"
    )
    observe_concurrency: int = pydantic.Field(64, ge=1, description="backends observed at once")
    registry_url: str = pydantic.Field(
        "https://registry.ollama.ai",
        description="the Ollama registry asked for model sizes (manifests) before pulls onto "
        "backends with a declared disk; empty: pulls are not admitted",
    )
    upgrade_check_interval_s: float = pydantic.Field(
        3600.0,
        ge=0,
        description="seconds between two checks of one model's upstream revision (registry "
        "digest, hub commit), shared by every replica; 0: no checks",
    )
    hub_url: str = pydantic.Field(
        "https://huggingface.co",
        description="the Hugging Face hub asked for the current commit of node agents' models; "
        "empty: not checked",
    )
    hub_token: pydantic.SecretStr | None = pydantic.Field(
        None,
        repr=False,
        description="token sent to hub_url (only there) to check private repos (prefer "
        "hub_token_file); exclusive with hub_token_file",
    )
    hub_token_file: pathlib.Path | None = pydantic.Field(
        None,
        description="file holding the token sent to hub_url to check private repos; "
        "exclusive with hub_token",
    )
    cycle_deadline_s: float = pydantic.Field(
        30.0, gt=0, description="deadline of the observation phase of one backend cycle"
    )
    connect_timeout_s: float = pydantic.Field(3.0, gt=0, description="TCP connect timeout")
    read_timeout_s: float = pydantic.Field(10.0, gt=0, description="read timeout of one request")
    stall_timeout_s: float = pydantic.Field(
        60.0, gt=0, description="longest silence of a pull before it is retried"
    )
    request_timeout_s: float = pydantic.Field(
        20.0, gt=0, description="deadline of one backend call other than a pull"
    )
    probe_grace_s: float = pydantic.Field(
        120.0, ge=0, description="how long a failing backend keeps its last good model list"
    )
    misfire_grace_s: float = pydantic.Field(
        10.0, gt=0, description="how late a scheduled cycle may still start"
    )
    shutdown_timeout_s: float = pydantic.Field(
        8.0, gt=0, description="how long a stop may take before in-flight work is abandoned"
    )
    log_format: LogFormat | None = pydantic.Field(
        None, description="json or console; unset: console on a terminal, else json"
    )
    log_level: Literal["debug", "info", "warning", "error"] = pydantic.Field(
        "info", description="lowest level logged"
    )
    http_address: str = pydantic.Field(
        DEFAULT_HTTP_ADDRESS,
        description="host:port of /metrics, /healthz, /readyz and /v1/state (port 0: any)",
    )
    data_dir: pathlib.Path = pydantic.Field(
        default_factory=datadir.default,
        description="where the default SQLite file, the embedded NATS store and the "
        "serve lock live",
    )
    # Who may read /v1/state, and TLS for the listener (`controller.httpauth`).
    http_token: pydantic.SecretStr | None = pydantic.Field(
        None,
        repr=False,
        description="bearer token /v1/state requires (prefer http_token_file); "
        "exclusive with http_token_file",
    )
    http_token_file: pathlib.Path | None = pydantic.Field(
        None,
        description="file holding the bearer token /v1/state requires "
        "(surrounding whitespace stripped); exclusive with http_token",
    )
    http_allow_unauthenticated: bool = pydantic.Field(
        False,
        description="true: serve /v1/state without a token on a non-loopback http_address "
        "(refused by default)",
    )
    http_tls_cert_file: pathlib.Path | None = pydantic.Field(
        None,
        description="PEM certificate (chain) of the HTTP listener: HTTPS; with http_tls_key_file",
    )
    http_tls_key_file: pathlib.Path | None = pydantic.Field(
        None, description="PEM private key of http_tls_cert_file"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file sources read the path `load` put in model_config (none by default).
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls),
            TomlConfigSettingsSource(settings_cls),
        )

    @pydantic.field_validator("cycle_cron")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        if value is not None:
            crontab.trigger(value)
        return value

    @pydantic.field_validator("http_address")
    @classmethod
    def _address_parses(cls, value: str) -> str:
        split_address(value)
        return value

    @pydantic.model_validator(mode="after")
    def _one_schedule(self) -> Settings:
        if self.cycle_interval_s is not None and self.cycle_cron is not None:
            raise ValueError("give cycle_interval_s or cycle_cron, not both")
        return self

    @pydantic.model_validator(mode="after")
    def _one_http_token(self) -> Settings:
        httpauth.check_settings(self)
        return self

    @pydantic.model_validator(mode="after")
    def _one_hub_token(self) -> Settings:
        if self.hub_token is not None and self.hub_token_file is not None:
            raise ValueError("give hub_token or hub_token_file, not both")
        if self.hub_token is not None and not self.hub_token.get_secret_value().strip():
            raise ValueError("hub_token is empty; set a token or unset it")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'llmctl.db'}"

    @property
    def resolved_log_format(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return "console" if sys.stderr.isatty() else "json"

    @property
    def interval_s(self) -> float:
        return self.cycle_interval_s or DEFAULT_CYCLE_INTERVAL_S

    def state_settings(self) -> state.Settings:
        """The runtime's settings, built from these."""
        return state.Settings(
            timeouts=base.Timeouts(
                connect=self.connect_timeout_s,
                read=self.read_timeout_s,
                stall=self.stall_timeout_s,
                total=self.request_timeout_s,
            ),
            downloads=downloads.Settings(
                concurrency=self.download_concurrency,
                lease=dt.timedelta(seconds=self.lease_ttl_s),
                heartbeat_s=self.heartbeat_s,
            ),
            cycle=cycle.Settings(
                concurrency=self.observe_concurrency,
                deadline_s=self.cycle_deadline_s,
                probing=_probing(self.probe_grace_s),
                prefix=self.subject_prefix,
                registry_url=self.registry_url or None,
                upgrades=self._upgrades(),
            ),
        )

    def _upgrades(self) -> upgradewatch.Settings | None:
        if not self.upgrade_check_interval_s:
            return None
        return upgradewatch.Settings(
            interval_s=self.upgrade_check_interval_s,
            registry_url=self.registry_url or None,
            hub_url=self.hub_url or None,
            hub_token=self._hub_token(),
        )

    def _hub_token(self) -> str | None:
        """The hub token, read from its file when one is given. Raises ConfigurationError."""
        if self.hub_token is not None:
            return self.hub_token.get_secret_value().strip()
        if self.hub_token_file is None:
            return None
        try:
            return secretfiles.read(self.hub_token_file, "the hub token file", "hub_token_file")
        except secretfiles.SecretFileError as exc:
            raise errors.ConfigurationError(str(exc)) from None


def _probing(grace_s: float) -> probing.Policy:
    default = probing.Policy()
    grace = dt.timedelta(seconds=grace_s)
    base_delay = min(default.base_delay, max(grace, dt.timedelta(seconds=0.1)))
    return probing.Policy(grace=grace, base_delay=base_delay, max_delay=default.max_delay)


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9180`` for IPv6) as (host, port). Raises ValueError."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(
            f"an address is host:port, such as {DEFAULT_HTTP_ADDRESS}: {echo.quoted(address)}"
        )
    return host.strip("[]"), int(port)


def load(config_file: pathlib.Path | None = None, **overrides: Any) -> Settings:
    """Settings from flags (``overrides``, None values ignored), environment, file, defaults.

    Raises ConfigurationError with every problem when the result is not valid.
    """
    cls: type[Settings] = Settings
    if config_file is not None:
        cls = _with_file(config_file)
    given = {key: value for key, value in overrides.items() if value is not None}
    # A flag choosing one kind of schedule replaces the other kind set in the file or env.
    if "cycle_cron" in given and "cycle_interval_s" not in given:
        given["cycle_interval_s"] = None
    elif "cycle_interval_s" in given and "cycle_cron" not in given:
        given["cycle_cron"] = None
    for from_file, value in natssettings.ALTERNATIVES.items():  # --nats-password-file beats env
        if from_file in given:
            given.setdefault(value, None)
    try:
        return cls(**given)
    except pydantic.ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise errors.ConfigurationError("invalid settings:\n  " + "\n  ".join(problems)) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed file
        raise errors.ConfigurationError(f"cannot read {config_file}: {exc}") from None


def _with_file(path: pathlib.Path) -> type[Settings]:
    if not path.is_file():
        raise errors.ConfigurationError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        key = "yaml_file"
    elif suffix == ".toml":
        key = "toml_file"
    else:
        raise errors.ConfigurationError(f"config file {path} must end in .yaml, .yml or .toml")
    config = SettingsConfigDict(**Settings.model_config)
    if key == "yaml_file":
        config["yaml_file"] = path
    else:
        config["toml_file"] = path  # the suffix was checked above
    return type("FileSettings", (Settings,), {"model_config": config})
