"""`controller.settings`: defaults, the config file, the environment and flags, in that order."""

from __future__ import annotations

import datetime as dt
import os
import pathlib

import pytest

from controller import crontab, settings
from runtimestate import errors


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    for name in [n for n in os.environ if n.startswith("LLMCTL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def test_defaults_need_no_configuration(tmp_path: pathlib.Path) -> None:
    loaded = settings.load()
    assert loaded.http_address == "127.0.0.1:9180"
    assert loaded.nats_url is None  # embedded
    assert loaded.interval_s == 30
    assert loaded.cycle_cron is None
    assert loaded.data_dir == tmp_path / "xdg" / "llmctl"
    assert loaded.resolved_database_url == f"sqlite:///{tmp_path / 'xdg' / 'llmctl' / 'llmctl.db'}"
    assert loaded.resolved_log_format == "json"  # tests do not run on a terminal


def test_every_setting_is_documented() -> None:
    undocumented = [n for n, f in settings.Settings.model_fields.items() if not f.description]
    assert undocumented == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("llmctl.yaml", "download_concurrency: 3\ncycle_cron: '*/5 * * * *'\n"),
        ("llmctl.toml", "download_concurrency = 3\ncycle_cron = '*/5 * * * *'\n"),
    ],
)
def test_a_yaml_or_toml_file_sets_fields(tmp_path: pathlib.Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    loaded = settings.load(path)
    assert loaded.download_concurrency == 3
    assert loaded.cycle_cron == "*/5 * * * *"


def test_environment_beats_the_file_and_flags_beat_the_environment(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "llmctl.yaml"
    path.write_text("download_concurrency: 3\nlease_ttl_s: 10\nhttp_address: 127.0.0.1:1\n")
    monkeypatch.setenv("LLMCTL_DOWNLOAD_CONCURRENCY", "5")
    monkeypatch.setenv("LLMCTL_HTTP_ADDRESS", "127.0.0.1:2")
    loaded = settings.load(path, http_address="127.0.0.1:3", nats_url=None)
    assert loaded.lease_ttl_s == 10  # file
    assert loaded.download_concurrency == 5  # environment over file
    assert loaded.http_address == "127.0.0.1:3"  # flag over environment


def test_a_typo_in_the_file_is_an_error_naming_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "llmctl.yaml"
    path.write_text("download_concurency: 3\n")
    with pytest.raises(errors.ConfigurationError, match="download_concurency"):
        settings.load(path)


@pytest.mark.parametrize("name", ["missing.yaml", "llmctl.ini"])
def test_a_missing_or_unknown_kind_of_file_is_an_error(tmp_path: pathlib.Path, name: str) -> None:
    if name.endswith(".ini"):
        (tmp_path / name).write_text("x=1\n")
    with pytest.raises(errors.ConfigurationError, match=name):
        settings.load(tmp_path / name)


def test_an_interval_and_a_cron_expression_together_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(errors.ConfigurationError, match="not both"):
        settings.load(cycle_interval_s=5, cycle_cron="* * * * *")
    monkeypatch.setenv("LLMCTL_CYCLE_INTERVAL_S", "5")
    loaded = settings.load(cycle_cron="* * * * *")  # a flag replaces the other kind
    assert (loaded.cycle_interval_s, loaded.cycle_cron) == (None, "* * * * *")


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", "2026-01-01T10:07:00", "2026-01-01T10:15:00"),
        ("0 3 * * 1", "2026-01-01T10:07:00", "2026-01-05T03:00:00"),  # next Monday
        ("*/10 * * * * *", "2026-01-01T10:07:03", "2026-01-01T10:07:10"),  # seconds first
    ],
)
def test_cron_expressions_fire_as_written(expression: str, after: str, expected: str) -> None:
    now = dt.datetime.fromisoformat(after).replace(tzinfo=dt.UTC)
    fire = crontab.trigger(expression).get_next_fire_time(None, now)
    assert fire == dt.datetime.fromisoformat(expected).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("field", "days"),
    [
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("*/2", "sun,tue,thu,sat"),  # crontab counts from Sunday
        ("sat-sun", "sun,sat"),
        ("*", "*"),
        ("1,3", "mon,wed"),
    ],
)
def test_crontab_weekdays_keep_their_crontab_meaning(field: str, days: str) -> None:
    assert crontab.crontab_weekdays(field) == days


@pytest.mark.parametrize("bad", ["* * *", "61 * * * *", "every minute", "* * * * 8"])
def test_an_invalid_cron_expression_is_refused(bad: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="cycle_cron"):
        settings.load(cycle_cron=bad)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9180", ("127.0.0.1", 9180)),
        ("[::1]:80", ("::1", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_http_addresses_split_into_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert settings.split_address(address) == expected


@pytest.mark.parametrize("bad", ["9180", "localhost", "host:port", "host:70000"])
def test_an_invalid_http_address_is_refused(bad: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="http_address"):
        settings.load(http_address=bad)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cycle_cron", "1 " * 3000),
        ("cycle_cron", "x" * 6000 + " * * * *"),
        ("cycle_cron", "* * * * " + "mon," * 1500),
        ("http_address", "h" * 6000),
    ],
    ids=["fields", "bad field", "bad weekday", "address"],
)
def test_a_long_invalid_setting_is_echoed_cut_to_80_characters(field: str, value: str) -> None:
    with pytest.raises(errors.ConfigurationError, match=field) as raised:
        settings.load(**{field: value})
    message = str(raised.value)
    assert "characters)" in message
    assert len(message) < 600, message[:600]


def test_state_settings_carry_the_values_through() -> None:
    loaded = settings.load(
        download_concurrency=2, lease_ttl_s=12, request_timeout_s=4, subject_prefix="x1"
    )
    runtime = loaded.state_settings()
    assert runtime.downloads.concurrency == 2
    assert runtime.downloads.lease == dt.timedelta(seconds=12)
    assert runtime.timeouts.total == 4
    assert runtime.cycle.prefix == "x1"


def test_settings_errors_are_the_one_configuration_error_of_the_tree(
    tmp_path: pathlib.Path,
) -> None:
    config = tmp_path / "llmctl.yaml"
    config.write_text("download_concurrency: 0\ncycle_interval_s: -1\n")
    with pytest.raises(errors.ConfigurationError) as raised:
        settings.load(config)
    assert isinstance(raised.value, errors.LlmctlError)
    assert raised.value.reason == "configuration"
    lines = str(raised.value).splitlines()  # one line per invalid setting, kept whole
    assert lines[0] == "invalid settings:"
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == [
        "cycle_interval_s",
        "download_concurrency",
    ]


def test_the_hub_token_reaches_the_upgrade_checks_from_its_file_and_is_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    secret = tmp_path / "hub-token"
    secret.write_text("hf_secret\n")
    monkeypatch.setenv("LLMCTL_HUB_TOKEN_FILE", str(secret))
    loaded = settings.load()
    upgrades = loaded.state_settings().cycle.upgrades
    assert upgrades is not None
    assert upgrades.hub_token == "hf_secret"
    assert "hf_secret" not in repr(loaded) + repr(upgrades)


def test_a_hub_token_given_twice_or_an_unreadable_file_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("LLMCTL_HUB_TOKEN", "hf_secret")
    monkeypatch.setenv("LLMCTL_HUB_TOKEN_FILE", str(tmp_path / "hub-token"))
    with pytest.raises(errors.ConfigurationError, match="hub_token or hub_token_file"):
        settings.load()
    monkeypatch.delenv("LLMCTL_HUB_TOKEN")
    missing = settings.load()  # the file is read when the checks are built, at start
    with pytest.raises(errors.ConfigurationError, match="hub_token_file") as refused:
        missing.state_settings()
    assert "hf_secret" not in str(refused.value)
    monkeypatch.setenv("LLMCTL_HUB_TOKEN", " ")
    monkeypatch.delenv("LLMCTL_HUB_TOKEN_FILE")
    with pytest.raises(errors.ConfigurationError, match="hub_token is empty"):
        settings.load()
