"""Where the global options go: after the subcommand they are moved to where click reads them."""

from __future__ import annotations

import pytest
import typer

from controller import cli, natsoptions, rootoptions

ROOT = typer.main.get_command(cli.app)
assert isinstance(ROOT, typer.core.TyperGroup)


def hoisted(line: str) -> str:
    return " ".join(rootoptions.hoist(ROOT, line.split()))


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("backend list --database-url U", "--database-url U backend list"),
        ("backend list --database-url=U", "--database-url=U backend list"),
        ("backend --database-url=U list -o json", "--database-url=U backend list -o json"),
        ("backend get gpu-1 -o json --nats-url N", "--nats-url N backend get gpu-1 -o json"),
        (
            "downloads list --subject-prefix p --limit 3",
            "--subject-prefix p downloads list --limit 3",
        ),
        ("reconcile --once --database-url U", "--database-url U reconcile --once"),
    ],
)
def test_a_global_option_after_the_subcommand_moves_before_it(given: str, parsed: str) -> None:
    assert hoisted(given) == parsed


def test_a_global_option_given_twice_keeps_its_order_so_the_later_one_wins() -> None:
    assert hoisted("--database-url A backend list --database-url B") == (
        "--database-url A --database-url B backend list"
    )


@pytest.mark.parametrize(
    "line",
    [
        "backend add x --label --database-url",  # the label's value, odd but not ours to move
        "backend list -o --nats-url",  # -o's value: click reports it as a bad choice
        "backend add x --label=k=v --url --subject-prefix",  # --url's value
        "resolve m -- --database-url U",  # after --, arguments only
        "--database-url U backend list",  # already where click reads it
        "backend list --database-urls U",  # not a global option: click says so
        "backend list",
    ],
)
def test_a_token_that_is_not_a_global_option_in_its_place_is_left_alone(line: str) -> None:
    assert hoisted(line) == line


def test_the_value_of_a_short_option_in_a_cluster_is_left_alone() -> None:
    assert hoisted("downloads list -o --database-url") == "downloads list -o --database-url"
    assert hoisted("downloads list -ojson --database-url U") == (
        "--database-url U downloads list -ojson"
    )


def test_a_global_option_after_the_subcommand_without_its_value_is_a_usage_error() -> None:
    # Moved alone before the command word, it would take the command word as its value.
    with pytest.raises(typer.TyperException, match="'--database-url' requires an argument"):
        hoisted("backend list --database-url")


def test_every_nats_credential_flag_is_a_global_option() -> None:
    assert set(natsoptions.FLAGS) <= set(rootoptions.GLOBAL)
    assert all(rootoptions.is_global(f"{flag}=x") for flag in natsoptions.FLAGS)
