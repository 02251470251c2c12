"""The `/kubeflow` grammar: every subcommand, every refusal, and two properties.

The properties: no text at all makes ``parse_command`` raise anything but ``UsageError``,
and every command the policy allows survives ``render_command`` then ``parse_command``.
They run against the sample policy and against a wider one built here, since what is
allowed (and so what is refused) comes from the policy.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.grammar import (
    OVERVIEW,
    USAGE,
    Command,
    CreateCommand,
    DeleteCommand,
    GrantCommand,
    HelpCommand,
    ListCommand,
    RevokeCommand,
    StatusCommand,
    UsageError,
    help_text,
    parse_command,
    render_command,
)
from handlers.policy import Policy, load_policy, parse_policy
from handlers.usage import SUBCOMMANDS
from provisioning.gpus import GPU_FAMILIES
from provisioning.ids import is_request_id
from provisioning.spec import MAX_HOST_LENGTH, DeploymentSpec, GpuSpec, endpoint_host

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy(REPO / "policy.example.yaml")
LONG_PROJECT = "ml-platform-research-team-0001"  # 30 characters, the most a project id has
# More of everything than the sample, any email domain, and a GPU the bot has no machine
# family for (so its machine type must be named).
WIDE = parse_policy(
    {
        "approvers": {"users": ["U_APPROVER"]},
        "projects": ["demo-project", LONG_PROJECT],
        "zones": ["us-central1-a", "us-central1-b", "us-central1-c", "europe-west4-a"],
        "gpu_types": [
            "nvidia-tesla-t4",
            "nvidia-l4",
            "nvidia-tesla-a100",
            "nvidia-h100-80gb",
            "nvidia-future-x",
        ],
        "limits": {"max_gpus_per_node": 8, "max_gpu_nodes": 16},
        "defaults": {
            "project": "demo-project",
            "zone": "europe-west4-a",
            "machine_type": "n2-standard-16",
            "gpu_count": 2,
            "gpu_max_nodes": 3,
            "kubeflow_version": "1.10",
        },
    }
)
NO_GPUS = POLICY.model_copy(update={"gpu_types": ()})
COMMAND_TYPES = (
    CreateCommand,
    GrantCommand,
    RevokeCommand,
    StatusCommand,
    ListCommand,
    DeleteCommand,
    HelpCommand,
)


def refused(text: str, policy: Policy = POLICY) -> UsageError:
    """The UsageError that ``text`` gets, checked for the shape every refusal has."""
    with pytest.raises(UsageError) as caught:
        parse_command(text, policy)
    error = caught.value
    assert error.reason
    assert "\n" not in error.reason
    assert error.usage in (*USAGE.values(), OVERVIEW)
    assert str(error) == f"{error.reason}\nUsage: {error.usage}"
    return error


def spec(**fields: object) -> DeploymentSpec:
    base: dict[str, object] = {
        "name": "demo",
        "project": "demo-project",
        "zone": "us-central1-a",
        "machine_type": "e2-standard-8",
        "kubeflow_version": "26.03",
    }
    return DeploymentSpec.model_validate(base | fields)


# --- create ------------------------------------------------------------------------------


def test_create_with_only_a_name_takes_every_default_from_the_policy() -> None:
    assert parse_command("create demo", POLICY) == CreateCommand(spec=spec())


def test_create_defaults_follow_the_policy_it_is_given() -> None:
    command = parse_command("create demo --gpu nvidia-l4", WIDE)
    assert command == CreateCommand(
        spec=spec(
            zone="europe-west4-a",
            machine_type="n2-standard-16",
            kubeflow_version="1.10",
            gpu=GpuSpec(type="nvidia-l4", count=2, machine_type="g2-standard-8", max_nodes=3),
        )
    )


def test_create_with_every_flag_builds_exactly_that_spec() -> None:
    text = (
        "create demo --project demo-project --zone us-central1-c --gpu nvidia-tesla-t4:4 "
        "--gpu-nodes 1-3 --machine-type n1-highmem-16 --dry-run"
    )
    gpu = GpuSpec(
        type="nvidia-tesla-t4", count=4, machine_type="n1-highmem-16", min_nodes=1, max_nodes=3
    )
    assert parse_command(text, POLICY) == CreateCommand(
        spec=spec(zone="us-central1-c", gpu=gpu), dry_run=True
    )


def test_flags_accept_an_equals_sign_and_may_come_before_the_name() -> None:
    spaced = parse_command("create demo --zone us-central1-c --gpu nvidia-l4:2", POLICY)
    joined = parse_command("create --gpu=nvidia-l4:2 --zone=us-central1-c demo", POLICY)
    assert spaced == joined


def test_a_gpu_without_count_gets_the_default_count_family_machine_and_pool_bounds() -> None:
    command = parse_command("create demo --gpu nvidia-tesla-t4", POLICY)
    assert isinstance(command, CreateCommand)
    assert command.spec.gpu == GpuSpec(
        type="nvidia-tesla-t4", count=1, machine_type="n1-standard-8", min_nodes=0, max_nodes=2
    )
    assert command.spec.machine_type == "e2-standard-8"


def test_gpu_nodes_max_alone_scales_the_pool_from_zero() -> None:
    command = parse_command("create demo --gpu nvidia-l4 --gpu-nodes 4", POLICY)
    assert isinstance(command, CreateCommand)
    assert command.spec.gpu is not None
    assert (command.spec.gpu.min_nodes, command.spec.gpu.max_nodes) == (0, 4)


def test_machine_type_with_a_gpu_sets_the_gpu_pool_and_keeps_the_cluster_default() -> None:
    command = parse_command("create demo --gpu nvidia-l4 --machine-type g2-standard-24", POLICY)
    assert isinstance(command, CreateCommand)
    assert command.spec.gpu is not None
    assert command.spec.gpu.machine_type == "g2-standard-24"
    assert command.spec.machine_type == "e2-standard-8"


def test_machine_type_without_a_gpu_sets_the_cluster_machine_type() -> None:
    command = parse_command("create demo --machine-type n2-standard-4", POLICY)
    assert command == CreateCommand(spec=spec(machine_type="n2-standard-4"))


def test_a_gpu_the_bot_knows_no_family_for_takes_any_named_machine_type() -> None:
    command = parse_command("create demo --gpu nvidia-future-x --machine-type x9-big-1", WIDE)
    assert isinstance(command, CreateCommand)
    assert command.spec.gpu is not None
    assert command.spec.gpu.machine_type == "x9-big-1"


def test_a_name_of_24_characters_fits_and_of_2_characters_too() -> None:
    for name in ("a" * 23 + "1", "ab"):
        command = parse_command(f"create {name}", POLICY)
        assert isinstance(command, CreateCommand)
        assert command.spec.name == name


def test_a_long_project_leaves_room_for_a_name_of_exactly_the_host_limit() -> None:
    room = MAX_HOST_LENGTH - len(endpoint_host("", LONG_PROJECT))
    command = parse_command(f"create {'a' * room} --project {LONG_PROJECT}", WIDE)
    assert isinstance(command, CreateCommand)
    assert len(command.spec.host) == MAX_HOST_LENGTH


# --- what Slack and keyboards do to the text ----------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "CREATE demo --dry-run",
        "Create demo --DRY-RUN",
        "  \t create\tdemo \n --dry-run  ",
        "create\u00a0demo\u00a0--dry-run",
        "\u201ccreate\u201d \u2018demo\u2019 --dry-run",
        '"create" "demo" "--dry-run"',
        "create `demo` --dry-run",
        "create demo \u2014dry-run",
        "create demo \u2013dry-run",
        "create demo\u200b --dry-run",
    ],
)
def test_case_whitespace_quotes_smart_dashes_and_zero_width_characters_are_tolerated(
    text: str,
) -> None:
    assert parse_command(text, POLICY) == CreateCommand(spec=spec(), dry_run=True)


def test_a_quoted_flag_value_is_unquoted() -> None:
    for text in (
        "create demo --zone=\u201cus-central1-c\u201d",
        "create demo --zone 'us-central1-c'",
    ):
        command = parse_command(text, POLICY)
        assert isinstance(command, CreateCommand)
        assert command.spec.zone == "us-central1-c"


def test_an_email_that_slack_turned_into_a_mailto_link_is_read_as_the_address() -> None:
    command = parse_command("grant <mailto:ada@example.com|ada@example.com> demo", POLICY)
    assert command == GrantCommand(email="ada@example.com", name="demo")


def test_an_ampersand_that_slack_escaped_is_read_back_as_an_ampersand() -> None:
    assert parse_command("grant r&amp;d@example.com", POLICY) == GrantCommand(
        email="r&d@example.com"
    )


def test_an_apostrophe_inside_an_address_is_kept() -> None:
    command = parse_command("grant o'neil@example.com", POLICY)
    assert command == GrantCommand(email="o'neil@example.com")


# --- create refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("create", "create needs a deployment NAME"),
        ("create --zone us-central1-a", "create needs a deployment NAME"),
        ("create Demo", "`Demo` is not a valid deployment name"),
        ("create a", "`a` is not a valid deployment name"),
        ("create demo-", "`demo-` is not a valid deployment name"),
        ("create 9lives", "`9lives` is not a valid deployment name"),
        ("create my_demo", "`my_demo` is not a valid deployment name"),
        ("create " + "a" * 25, "is not a valid deployment name"),
        ("create kf-3k9x2a", "`kf-3k9x2a` looks like a request id"),
        ("create demo other", "unexpected `other`: create takes one NAME and flags"),
        (
            "create demo --project other-project",
            "project other-project is not allowed; allowed projects: demo-project",
        ),
        (
            "create demo --zone europe-west4-a",
            "zone europe-west4-a is not allowed; allowed zones: us-central1-a, us-central1-c",
        ),
        (
            "create demo --gpu nvidia-tesla-a100",
            "GPU type nvidia-tesla-a100 is not allowed; allowed GPU types: nvidia-tesla-t4, "
            "nvidia-l4",
        ),
        ("create demo --gpu nvidia-l4:0", "GPU count `0` must be a whole number from 1 to 4"),
        ("create demo --gpu nvidia-l4:5", "GPU count `5` must be a whole number from 1 to 4"),
        ("create demo --gpu nvidia-l4:two", "GPU count `two` must be a whole number from 1 to 4"),
        ("create demo --gpu nvidia-l4:", "GPU count `` must be a whole number from 1 to 4"),
        ("create demo --gpu nvidia-l4:1:2", "GPU count `1:2` must be a whole number"),
        ("create demo --gpu nvidia-l4:-1", "GPU count `-1` must be a whole number"),
        ("create demo --gpu nvidia-l4 --gpu-nodes 5", "at most 4 GPU nodes are allowed"),
        ("create demo --gpu nvidia-l4 --gpu-nodes 0-5", "at most 4 GPU nodes are allowed"),
        ("create demo --gpu nvidia-l4 --gpu-nodes 3-1", "MIN 3 is larger than MAX 1"),
        ("create demo --gpu nvidia-l4 --gpu-nodes 0", "MAX must be at least 1"),
        ("create demo --gpu nvidia-l4 --gpu-nodes 0-0", "MAX must be at least 1"),
        ("create demo --gpu nvidia-l4 --gpu-nodes two", "--gpu-nodes takes MAX or MIN-MAX"),
        ("create demo --gpu nvidia-l4 --gpu-nodes 1-2-3", "--gpu-nodes takes MAX or MIN-MAX"),
        ("create demo --gpu nvidia-l4 --gpu-nodes -1", "--gpu-nodes takes MAX or MIN-MAX"),
        ("create demo --gpu-nodes 2", "--gpu-nodes sizes the GPU pool, so it needs --gpu"),
        (
            "create demo --gpu nvidia-l4 --machine-type e2-standard-8",
            "machine type e2-standard-8 cannot carry nvidia-l4; use one starting with g2-",
        ),
        (
            "create demo --gpu nvidia-tesla-t4 --machine-type g2-standard-8",
            "machine type g2-standard-8 cannot carry nvidia-tesla-t4; use one starting with n1-",
        ),
        ("create demo --machine-type E2_BIG", "`E2_BIG` is not a machine type name"),
        ("create demo --machine-type " + "e2-" * 30, "is not a machine type name"),
        ("create demo --zone us-central1-a --zone us-central1-c", "--zone was given twice"),
        ("create demo --dry-run --dry-run", "--dry-run was given twice"),
        ("create demo --zone", "--zone needs a value"),
        ("create demo --zone=", "--zone needs a value"),
        ("create demo --zone= --dry-run", "--zone needs a value"),
        ("create demo --zone --dry-run", "--zone needs a value"),
        ("create demo --zone ''", "--zone needs a value"),
        ("create demo --dry-run=yes", "--dry-run takes no value"),
        ("create demo --colour red", "unknown flag `--colour`"),
        ("create demo --zones us-central1-a", "unknown flag `--zones`; did you mean `--zone`?"),
        ("create demo --", "unknown flag `--`"),
    ],
)
def test_create_refusals_say_what_was_wrong_and_show_create_usage(text: str, says: str) -> None:
    error = refused(text)
    assert says in error.reason
    assert error.usage == USAGE["create"]


def test_a_name_too_long_for_the_project_host_is_refused_with_the_room_there_is() -> None:
    name = "a" * 11
    error = refused(f"create {name} --project {LONG_PROJECT}", WIDE)
    assert f"`{name}` is too long for project {LONG_PROJECT}" in error.reason
    assert "use at most 10" in error.reason


def test_a_gpu_is_refused_where_the_policy_allows_none() -> None:
    error = refused("create demo --gpu nvidia-l4", NO_GPUS)
    assert "GPUs are not allowed here" in error.reason


def test_a_gpu_with_no_known_machine_family_needs_a_machine_type() -> None:
    error = refused("create demo --gpu nvidia-future-x", WIDE)
    assert "machine type for nvidia-future-x with --machine-type" in error.reason


def test_what_another_policy_allows_is_allowed_there() -> None:
    text = "create demo --zone europe-west4-a --gpu nvidia-tesla-a100:8 --gpu-nodes 16"
    refused(text, POLICY)
    command = parse_command(text, WIDE)
    assert isinstance(command, CreateCommand)
    assert command.spec.gpu == GpuSpec(
        type="nvidia-tesla-a100", count=8, machine_type="a2-highgpu-1g", max_nodes=16
    )


def test_a_pasted_wall_of_text_is_not_echoed_back_whole() -> None:
    error = refused("create " + "x" * 5000)
    assert len(error.reason) < 300
    error = refused("create demo --gpu nvidia-l4 --gpu-nodes " + "9" * 5000)
    assert len(error.reason) < 300


# --- grant and revoke ---------------------------------------------------------------------


@pytest.mark.parametrize(("word", "model"), [("grant", GrantCommand), ("revoke", RevokeCommand)])
def test_grant_and_revoke_take_an_email_and_an_optional_name(
    word: str, model: type[GrantCommand] | type[RevokeCommand]
) -> None:
    assert parse_command(f"{word} ada@example.com", POLICY) == model(email="ada@example.com")
    assert parse_command(f"{word} ada@example.com demo", POLICY) == model(
        email="ada@example.com", name="demo"
    )


def test_the_email_domain_is_compared_without_regard_to_case() -> None:
    assert parse_command("grant Ada@Example.COM", POLICY) == GrantCommand(email="Ada@Example.COM")


def test_a_policy_without_grant_domains_allows_any_domain() -> None:
    refused("grant ada@elsewhere.org", POLICY)
    assert parse_command("grant ada@elsewhere.org", WIDE) == GrantCommand(email="ada@elsewhere.org")


@pytest.mark.parametrize("word", ["grant", "revoke"])
@pytest.mark.parametrize(
    ("args", "says"),
    [
        ("", "needs the EMAIL of the person"),
        ("ada", "`ada` is not a valid email address"),
        ("ada@", "`ada@` is not a valid email address"),
        ("ada@example", "`ada@example` is not a valid email address"),
        ("ada@@example.com", "is not a valid email address"),
        ("<ada@example.com>", "is not a valid email address"),
        ("demo", "`demo` is not a valid email address"),
        ("ada@example.com Demo", "`Demo` is not a valid deployment name"),
        ("ada@example.com demo other", "unexpected `other`"),
        ("ada@example.com --project demo-project", "unknown flag `--project`"),
    ],
)
def test_grant_and_revoke_refusals_say_what_was_wrong(word: str, args: str, says: str) -> None:
    error = refused(f"{word} {args}")
    assert says in error.reason
    assert error.usage == USAGE[word]


def test_grants_outside_the_allowed_domains_are_refused_naming_them() -> None:
    error = refused("grant ada@elsewhere.org")
    assert error.reason == (
        "ada@elsewhere.org is not in an allowed domain; allowed domains: example.com"
    )


@pytest.mark.parametrize(
    ("flag", "lasts"),
    [
        ("--for 7d", timedelta(days=7)),
        ("--for=12h", timedelta(hours=12)),
        ("--for 2W", timedelta(weeks=2)),
        ("--for 1h", timedelta(hours=1)),
        ("--for 90d", timedelta(days=90)),
        ("--FOR 2160h", timedelta(days=90)),
    ],
)
def test_a_grant_may_end_after_an_hour_to_ninety_days(flag: str, lasts: timedelta) -> None:
    assert parse_command(f"grant ada@example.com demo {flag}", POLICY) == GrantCommand(
        email="ada@example.com", name="demo", duration=lasts
    )
    assert parse_command(f"grant {flag} ada@example.com", POLICY) == GrantCommand(
        email="ada@example.com", duration=lasts
    )


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--for", "--for needs a value"),
        ("--for 7", "--for takes hours, days or weeks, such as 12h, 7d or 2w, not `7`"),
        ("--for 30m", "--for takes hours, days or weeks, such as 12h, 7d or 2w, not `30m`"),
        ("--for 1.5d", "--for takes hours, days or weeks, such as 12h, 7d or 2w, not `1.5d`"),
        ("--for -1d", "--for takes hours, days or weeks, such as 12h, 7d or 2w, not `-1d`"),
        ("--for 0h", "--for 0h: access can last from 1h to 90d"),
        ("--for 91d", "--for 91d: access can last from 1h to 90d"),
        ("--for 13w", "--for 13w: access can last from 1h to 90d"),
        ("--for 99999999999w", "--for 99999999999w: access can last from 1h to 90d"),
        ("--for 7d --for 1d", "--for was given twice; give it once"),
    ],
)
def test_grant_durations_outside_the_bounds_or_unreadable_are_refused(flag: str, says: str) -> None:
    error = refused(f"grant ada@example.com demo {flag}")
    assert error.reason == says
    assert error.usage == USAGE["grant"] == "/kubeflow grant EMAIL [NAME] [--for DURATION]"


def test_revoke_takes_no_duration() -> None:
    error = refused("revoke ada@example.com demo --for 7d")
    assert error.reason == "unknown flag `--for`; revoke takes no flags"


def test_grant_help_explains_the_duration() -> None:
    text = help_text("grant")
    assert "--for DURATION: the access ends after DURATION" in text
    assert "from 1 hour to 90 days" in text
    assert "Example: `/kubeflow grant ada@example.com demo --for 7d`" in text


@pytest.mark.parametrize(
    ("lasts", "text"),
    [
        (timedelta(days=7), "grant ada@example.com demo --for 7d"),
        (timedelta(weeks=2), "grant ada@example.com demo --for 14d"),
        (timedelta(hours=36), "grant ada@example.com demo --for 36h"),
    ],
)
def test_a_grant_with_a_duration_renders_in_days_or_hours(lasts: timedelta, text: str) -> None:
    command = GrantCommand(email="ada@example.com", name="demo", duration=lasts)
    assert render_command(command) == text
    assert parse_command(text, POLICY) == command


def test_revoke_works_for_any_domain_so_access_stays_removable() -> None:
    assert parse_command("revoke ada@elsewhere.org", POLICY) == RevokeCommand(
        email="ada@elsewhere.org"
    )


# --- status, list, delete, help ----------------------------------------------------------


def test_status_takes_nothing_a_name_or_a_request_id() -> None:
    assert parse_command("status", POLICY) == StatusCommand()
    assert parse_command("status demo", POLICY) == StatusCommand(target="demo")
    command = parse_command("Status kf-3k9x2a", POLICY)
    assert command == StatusCommand(target="kf-3k9x2a")
    assert isinstance(command, StatusCommand)
    assert command.target is not None
    assert is_request_id(command.target)


def test_list_takes_nothing() -> None:
    assert parse_command("list", POLICY) == ListCommand()
    assert parse_command("  LIST ", POLICY) == ListCommand()


def test_delete_takes_a_name() -> None:
    assert parse_command("delete demo", POLICY) == DeleteCommand(name="demo")


def test_help_takes_an_optional_subcommand_in_any_case() -> None:
    assert parse_command("help", POLICY) == HelpCommand()
    assert parse_command("help create", POLICY) == HelpCommand(topic="create")
    assert parse_command("HELP Grant", POLICY) == HelpCommand(topic="grant")


@pytest.mark.parametrize("text", ["", "   ", "\t\n", "\u200b", '""', "--help", "-h"])
def test_no_subcommand_at_all_asks_for_help(text: str) -> None:
    assert parse_command(text, POLICY) == HelpCommand()


@pytest.mark.parametrize("word", SUBCOMMANDS)
def test_help_flag_after_a_subcommand_asks_for_that_subcommand_help(word: str) -> None:
    assert parse_command(f"{word} --help", POLICY) == HelpCommand(topic=word)
    assert parse_command(f"{word} junk -h", POLICY) == HelpCommand(topic=word)


@pytest.mark.parametrize(
    ("text", "says", "usage"),
    [
        ("status Demo", "`Demo` is neither a deployment name nor a request id", "status"),
        ("status demo other", "unexpected `other`: status takes at most one", "status"),
        ("status --all", "unknown flag `--all`; status takes no flags", "status"),
        ("list all", "unexpected `all`: list takes no arguments", "list"),
        ("list --all", "unknown flag `--all`; list takes no flags", "list"),
        ("delete", "delete needs the NAME of the deployment", "delete"),
        ("delete Demo", "`Demo` is not a valid deployment name", "delete"),
        ("delete demo other", "unexpected `other`: delete takes one NAME", "delete"),
        ("delete demo --force", "unknown flag `--force`", "delete"),
        ("help create grant", "unexpected `grant`: help takes at most one", "help"),
    ],
)
def test_status_list_delete_and_help_refusals_say_what_was_wrong(
    text: str, says: str, usage: str
) -> None:
    error = refused(text)
    assert says in error.reason
    assert error.usage == USAGE[usage]


@pytest.mark.parametrize("text", ["frobnicate", "frobnicate demo --zone x", "/kubeflow create"])
def test_an_unknown_subcommand_is_named_and_gets_the_overview(text: str) -> None:
    error = refused(text)
    assert error.reason.startswith(f"unknown subcommand `{text.split(maxsplit=1)[0]}`")
    assert error.usage == OVERVIEW


def test_a_misspelt_subcommand_gets_a_suggestion() -> None:
    error = refused("crate demo")
    assert error.reason == "unknown subcommand `crate`; did you mean `create`?"


def test_help_for_an_unknown_subcommand_is_refused_with_the_overview() -> None:
    error = refused("help frobnicate")
    assert error.reason == "unknown subcommand `frobnicate`"
    assert error.usage == OVERVIEW


# --- usage errors, usage lines and help text ----------------------------------------------


def test_a_usage_error_is_a_value_error_that_survives_copying_and_pickling() -> None:
    error = UsageError("zone x is not allowed", USAGE["create"])
    assert isinstance(error, ValueError)
    # deepcopy goes through the same __reduce__ that pickle uses.
    duplicate = copy.deepcopy(error)
    assert (duplicate.reason, duplicate.usage, str(duplicate)) == (
        error.reason,
        error.usage,
        str(error),
    )


def test_there_is_a_usage_line_for_every_subcommand() -> None:
    assert set(USAGE) == set(SUBCOMMANDS)
    for word, line in USAGE.items():
        assert line.startswith(f"/kubeflow {word}")
        assert "\n" not in line


def test_help_lists_every_subcommand_on_a_line_of_its_own() -> None:
    text = help_text(None)
    for line in USAGE.values():
        assert sum(line in row for row in text.splitlines()) == 1


def test_help_for_a_subcommand_shows_its_usage_and_an_unknown_topic_the_overview() -> None:
    assert USAGE["create"] in help_text("create")
    assert "--dry-run" in help_text("create")
    assert help_text("frobnicate") == help_text(None)


def test_help_for_create_names_what_the_policy_allows_when_given_one() -> None:
    text = help_text("create", policy=POLICY)
    assert "us-central1-a, us-central1-c" in text
    assert "nvidia-tesla-t4, nvidia-l4" in text


# --- render -------------------------------------------------------------------------------


def test_render_spells_out_every_create_flag() -> None:
    command = parse_command("create demo --gpu nvidia-l4 --dry-run", POLICY)
    assert render_command(command) == (
        "create demo --project demo-project --zone us-central1-a --gpu nvidia-l4:1 "
        "--gpu-nodes 0-2 --machine-type g2-standard-8 --dry-run"
    )
    assert render_command(parse_command("create demo", POLICY)) == (
        "create demo --project demo-project --zone us-central1-a --machine-type e2-standard-8"
    )


@pytest.mark.parametrize(
    "text",
    [
        "grant ada@example.com",
        "revoke ada@example.com demo",
        "status",
        "status kf-3k9x2a",
        "list",
        "delete demo",
        "help",
        "help delete",
    ],
)
def test_render_writes_other_commands_as_typed(text: str) -> None:
    assert render_command(parse_command(text, POLICY)) == text


# --- properties ---------------------------------------------------------------------------

SOUP_WORDS = [
    *SUBCOMMANDS,
    "CREATE",
    "Help",
    "--project",
    "--zone",
    "--gpu",
    "--gpu-nodes",
    "--machine-type",
    "--dry-run",
    "--help",
    "-h",
    "--",
    "--zone=",
    "--gpu=",
    "\u2014gpu",
    "\u2013zone",
    "demo",
    "Demo",
    "a",
    "kf-3k9x2a",
    "demo-project",
    LONG_PROJECT,
    "us-central1-a",
    "europe-west4-a",
    "nvidia-l4",
    "nvidia-l4:2",
    "nvidia-tesla-t4:9",
    "nvidia-future-x",
    "nvidia-l4:",
    ":",
    "0",
    "1-3",
    "3-1",
    "-1",
    "9" * 5000,
    "\u0661\u0662",
    "g2-standard-8",
    "n1-standard-8",
    "e2-standard-8",
    "ada@example.com",
    "ada@elsewhere.org",
    "<mailto:ada@example.com|ada@example.com>",
    "<mailto:",
    "&amp;",
    "&lt;",
    "&gt;",
    "=",
    '"',
    "'",
    "`",
    "\u201c",
    "\u201d",
    "\u2018",
    "\u200b",
    "\u0130",
    "\u00df",
    "\U0001f680",
    "\x00",
    "x" * 300,
]
SEPARATORS = [" ", "  ", "\t", "\n", "\u00a0", "\u2028", "", "=", ":", "-"]
soup = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(SOUP_WORDS), st.text(max_size=6)),
        st.sampled_from(SEPARATORS),
    ),
    max_size=14,
).map(lambda pairs: "".join(word + sep for word, sep in pairs))


def assert_command_or_usage_error(text: str, policy: Policy) -> None:
    try:
        command = parse_command(text, policy)
    except UsageError as error:
        assert error.reason
        assert "\n" not in error.reason
        assert error.usage in (*USAGE.values(), OVERVIEW)
    else:
        assert isinstance(command, COMMAND_TYPES)


@settings(max_examples=300)
@given(text=st.one_of(st.text(), soup), policy=st.sampled_from([POLICY, WIDE, NO_GPUS]))
def test_any_text_gives_a_command_or_a_usage_error_and_nothing_else(
    text: str, policy: Policy
) -> None:
    assert_command_or_usage_error(text, policy)


@settings(max_examples=300)
@given(words=soup, policy=st.sampled_from([POLICY, WIDE]))
def test_any_arguments_after_a_subcommand_give_a_command_or_a_usage_error(
    words: str, policy: Policy
) -> None:
    for word in SUBCOMMANDS:
        assert_command_or_usage_error(f"{word} {words}", policy)


def names(longest: int = 24) -> st.SearchStrategy[str]:
    """Deployment names, every length from 2 to ``longest`` equally likely."""
    return st.integers(2, longest).flatmap(
        lambda n: st.from_regex(rf"[a-z][-a-z0-9]{{{n - 2}}}[a-z0-9]", fullmatch=True)
    )


FREE_MACHINE_TYPES = st.from_regex(r"[a-z][a-z0-9]{0,6}-[-a-z0-9]{1,20}", fullmatch=True)


def gpu_machine_types(gpu_type: str) -> st.SearchStrategy[str]:
    family = GPU_FAMILIES.get(gpu_type)
    if family is None:
        return FREE_MACHINE_TYPES
    suffixes = st.from_regex(r"[a-z0-9][-a-z0-9]{0,20}", fullmatch=True)
    return st.tuples(st.sampled_from(family.machine_prefixes), suffixes).map("".join)


@st.composite
def create_commands(draw: st.DrawFn, policy: Policy) -> CreateCommand:
    project = draw(st.sampled_from(policy.projects))
    room = MAX_HOST_LENGTH - len(endpoint_host("", project))
    name = draw(names(min(24, room)).filter(lambda n: not is_request_id(n)))
    machine_type = draw(st.one_of(st.just(policy.defaults.machine_type), FREE_MACHINE_TYPES))
    gpu = None
    wants_gpu = draw(st.booleans())
    if policy.gpu_types and wants_gpu:
        gpu_type = draw(st.sampled_from(policy.gpu_types))
        high = draw(st.integers(1, policy.limits.max_gpu_nodes))
        gpu = GpuSpec(
            type=gpu_type,
            count=draw(st.integers(1, policy.limits.max_gpus_per_node)),
            machine_type=draw(gpu_machine_types(gpu_type)),
            min_nodes=draw(st.integers(0, high)),
            max_nodes=high,
        )
        # With a GPU, --machine-type is the GPU pool's; the cluster keeps the default.
        machine_type = policy.defaults.machine_type
    spec = DeploymentSpec(
        name=name,
        project=project,
        zone=draw(st.sampled_from(policy.zones)),
        machine_type=machine_type,
        gpu=gpu,
        kubeflow_version=policy.defaults.kubeflow_version,
    )
    return CreateCommand(spec=spec, dry_run=draw(st.booleans()))


def emails(policy: Policy) -> st.SearchStrategy[str]:
    local = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{0,30}", fullmatch=True)
    if policy.grant_domains:
        domain = st.sampled_from(policy.grant_domains).flatmap(
            lambda d: st.sampled_from([d, d.upper(), d.title()])
        )
    else:
        domain = st.from_regex(
            r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?(\.[a-z]{2,6}){1,2}", fullmatch=True
        )
    return st.tuples(local, domain).map("@".join)


def commands(policy: Policy) -> st.SearchStrategy[Command]:
    maybe_name = st.none() | names()
    request_ids = st.from_regex(r"kf-[a-z0-9]{6}", fullmatch=True)
    return st.one_of(
        create_commands(policy),
        st.builds(
            GrantCommand,
            email=emails(policy),
            name=maybe_name,
            duration=st.none() | st.integers(1, 90 * 24).map(lambda h: timedelta(hours=h)),
        ),
        st.builds(RevokeCommand, email=emails(policy), name=maybe_name),
        st.builds(StatusCommand, target=st.none() | names() | request_ids),
        st.just(ListCommand()),
        st.builds(DeleteCommand, name=names()),
        st.builds(HelpCommand, topic=st.none() | st.sampled_from(SUBCOMMANDS)),
    )


@settings(max_examples=300)
@given(command=commands(POLICY))
def test_every_valid_command_survives_render_then_parse_under_the_sample_policy(
    command: Command,
) -> None:
    assert parse_command(render_command(command), POLICY) == command


@settings(max_examples=300)
@given(command=commands(WIDE))
def test_every_valid_command_survives_render_then_parse_under_a_wider_policy(
    command: Command,
) -> None:
    assert parse_command(render_command(command), WIDE) == command
