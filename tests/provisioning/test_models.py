"""Behaviour of the plain models: deployment specs, request records, ids and transitions."""

from __future__ import annotations

import re
from collections import deque
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from provisioning.actions import Action, CreateAction, DeleteAction, GrantAction, RevokeAction
from provisioning.gpus import GPU_FAMILIES, default_machine_type, machine_fits_gpu
from provisioning.ids import is_request_id, new_request_id
from provisioning.records import (
    ACTIVE_STATES,
    FINAL_STATES,
    TRANSITIONS,
    HistoryEntry,
    MessageRef,
    RequestRecord,
    State,
    StepReport,
    StepStatus,
    may_follow,
)
from provisioning.spec import MAX_HOST_LENGTH, DeploymentSpec, GpuSpec, name_problem

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PROJECT = "demo-project"  # 12 characters: a 24-character name still fits the host


def deployment(name: str = "demo", project: str = PROJECT, **fields: object) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {"name": name, "project": project, "zone": "us-central1-a", **fields}
    )


# -- Deployment names and hosts ------------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "a" * 24, "ml-lab-2", "x0", "a-b"])
def test_names_of_two_to_twenty_four_characters_are_accepted(name: str) -> None:
    assert deployment(name).name == name
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["a", "a" * 25, "ml-lab-", "-ml-lab", "2ml-lab", "ML-lab", "ml_lab", "ml.lab", ""],
)
def test_names_too_short_too_long_or_badly_formed_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError):
        deployment(name)
    assert "2 to 24 characters" in (name_problem(name) or "")


def test_a_host_of_exactly_sixty_two_characters_is_accepted() -> None:
    spec = deployment("a" * 24, "p" * 16)

    assert len(spec.host) == MAX_HOST_LENGTH == 62


def test_a_host_longer_than_sixty_two_characters_is_rejected_saying_how_long_it_is() -> None:
    with pytest.raises(ValidationError) as raised:
        deployment("a" * 24, "p" * 17)

    text = str(raised.value)
    assert f"the host {'a' * 24}.endpoints.{'p' * 17}.cloud.goog is 63 characters long" in text
    assert "at most 62 fit, so shorten the name" in text


def test_the_spec_derives_its_host_url_and_region() -> None:
    spec = deployment("ml-lab")

    assert spec.host == f"ml-lab.endpoints.{PROJECT}.cloud.goog"
    assert spec.url == f"https://ml-lab.endpoints.{PROJECT}.cloud.goog/"
    assert spec.region == "us-central1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("project", "Demo-Project"),
        ("project", "short"),
        ("project", "demo-project-"),
        ("zone", "us-central1"),
        ("zone", "US-central1-a"),
        ("machine_type", "standard"),
        ("kubeflow_version", ""),
    ],
)
def test_malformed_project_zone_machine_or_version_is_rejected(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        deployment(**{field: value})


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        deployment(region="us-central1")


# -- GPUs ----------------------------------------------------------------------------------


def test_a_gpu_whose_minimum_exceeds_its_maximum_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"min_nodes \(3\) is larger than max_nodes \(2\)"):
        GpuSpec(type="nvidia-tesla-t4", machine_type="n1-standard-8", min_nodes=3, max_nodes=2)


def test_a_gpu_with_equal_minimum_and_maximum_is_accepted() -> None:
    gpu = GpuSpec(type="nvidia-tesla-t4", machine_type="n1-standard-8", min_nodes=2, max_nodes=2)

    assert (gpu.min_nodes, gpu.max_nodes) == (2, 2)


@pytest.mark.parametrize(
    ("gpu", "machine"),
    [
        ("nvidia-l4", "n1-standard-8"),
        ("nvidia-tesla-t4", "g2-standard-8"),
        ("nvidia-tesla-a100", "n1-standard-8"),
        ("nvidia-h100-80gb", "a2-highgpu-1g"),
    ],
)
def test_a_machine_family_that_cannot_carry_the_gpu_is_rejected(gpu: str, machine: str) -> None:
    with pytest.raises(ValidationError, match=f"machine type {machine} cannot carry {gpu}"):
        GpuSpec(type=gpu, machine_type=machine)


@pytest.mark.parametrize("gpu", sorted(GPU_FAMILIES))
def test_every_known_gpu_fits_its_default_machine_type(gpu: str) -> None:
    machine = default_machine_type(gpu)

    assert machine is not None
    assert machine_fits_gpu(machine, gpu)
    assert GpuSpec(type=gpu, machine_type=machine).machine_type == machine


def test_an_unknown_gpu_passes_the_family_check() -> None:
    assert default_machine_type("nvidia-b200") is None
    assert GpuSpec(type="nvidia-b200", machine_type="a4-highgpu-8g").type == "nvidia-b200"


@pytest.mark.parametrize("count", [0, 9])
def test_a_gpu_count_outside_one_to_eight_is_rejected(count: int) -> None:
    with pytest.raises(ValidationError):
        GpuSpec(type="nvidia-tesla-t4", machine_type="n1-standard-8", count=count)


@pytest.mark.parametrize("gpu_type", ["tesla-t4", "amd-mi300", "NVIDIA-L4"])
def test_a_gpu_type_not_named_nvidia_is_rejected(gpu_type: str) -> None:
    with pytest.raises(ValidationError):
        GpuSpec(type=gpu_type, machine_type="n1-standard-8")


# -- Request records -----------------------------------------------------------------------

ACTIONS: list[Action] = [
    CreateAction(
        spec=deployment(
            "ml-lab",
            gpu=GpuSpec(type="nvidia-l4", count=2, machine_type="g2-standard-24", max_nodes=3),
        ),
        requester_email="ada@example.com",
    ),
    GrantAction(email="bo@example.com", deployment="ml-lab", project=PROJECT),
    RevokeAction(email="bo@example.com", deployment="ml-lab", project=PROJECT),
    DeleteAction(deployment="ml-lab", project=PROJECT, zone="us-central1-a"),
]


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.kind)
def test_a_request_record_survives_a_json_round_trip(action: Action) -> None:
    record = RequestRecord(
        id="kf-3k9x2a",
        action=action,
        requester="U0ADA",
        channel="C0KUBEFLOW",
        thread_ts="1772442000.000100",
        cards=(MessageRef(channel="C0APPROVERS", ts="1772442001.000200"),),
        status_message=MessageRef(channel="C0KUBEFLOW", ts="1772442002.000300"),
        state=State.RUNNING,
        created_at=T0,
        updated_at=T0 + timedelta(minutes=3),
        expires_at=T0 + timedelta(days=1),
        decided_by="U0APPROVER",
        decided_at=T0 + timedelta(minutes=1),
        steps=(
            StepReport(
                name="apis",
                title="Enable the project's APIs",
                status=StepStatus.DONE,
                outcome="updated",
                detail="enable 12 APIs",
                seconds=4.2,
                calls=("enable_services projects/demo-project",),
            ),
        ),
        history=(HistoryEntry(at=T0, actor="U0APPROVER", event="approved", detail="ok"),),
        version=4,
    )

    again = RequestRecord.model_validate_json(record.model_dump_json())

    assert again == record
    assert again.kind == action.kind
    assert again.deployment == "ml-lab"
    assert again.project == PROJECT


def test_a_record_with_a_malformed_id_is_rejected() -> None:
    with pytest.raises(ValidationError):
        RequestRecord(
            id="kf-3K9X2A",
            action=ACTIONS[1],
            requester="U0ADA",
            channel="C0KUBEFLOW",
            created_at=T0,
            updated_at=T0,
        )


def test_only_create_and_delete_requests_hold_their_deployment_name() -> None:
    def record(action: Action) -> RequestRecord:
        return RequestRecord(
            id="kf-3k9x2a",
            action=action,
            requester="U0ADA",
            channel="C0KUBEFLOW",
            created_at=T0,
            updated_at=T0,
        )

    assert [record(a).lock_key for a in ACTIONS] == ["ml-lab", None, None, "ml-lab"]


# -- Request ids ---------------------------------------------------------------------------


def test_new_request_ids_are_kf_and_six_lowercase_letters_or_digits() -> None:
    ids = [new_request_id() for _ in range(5000)]

    assert all(re.fullmatch(r"kf-[a-z0-9]{6}", i) for i in ids)
    assert all(is_request_id(i) for i in ids)
    # 5000 draws from 36**6 values: a handful of collisions at most, by chance.
    assert len(set(ids)) > 4990
    drawn = set("".join(i[3:] for i in ids))
    assert drawn == set("abcdefghijklmnopqrstuvwxyz0123456789")


@pytest.mark.parametrize(
    "text", ["kf-abc12", "kf-abc1234", "KF-abc123", "kf-ABC123", "kf_abc123", " kf-abc123"]
)
def test_text_that_only_looks_like_a_request_id_is_not_one(text: str) -> None:
    assert not is_request_id(text)


# -- Transitions ---------------------------------------------------------------------------


def test_every_state_has_an_entry_in_the_transitions() -> None:
    assert set(TRANSITIONS) == set(State)


def test_final_states_have_no_successors() -> None:
    assert {
        State.DENIED,
        State.EXPIRED,
        State.SUCCEEDED,
        State.FAILED,
        State.CANCELLED,
    } == FINAL_STATES
    for state in FINAL_STATES:
        assert TRANSITIONS[state] == frozenset()
        assert not any(may_follow(state, new) for new in State)


def test_active_and_final_states_split_the_states_between_them() -> None:
    assert ACTIVE_STATES.isdisjoint(FINAL_STATES)
    assert set(State) == ACTIVE_STATES | FINAL_STATES


@pytest.mark.parametrize("state", sorted(ACTIVE_STATES))
def test_every_active_state_can_reach_a_final_one(state: State) -> None:
    seen = {state}
    frontier = deque([state])
    while frontier:
        for new in TRANSITIONS[frontier.popleft()] - seen:
            seen.add(new)
            frontier.append(new)

    assert seen & FINAL_STATES


@pytest.mark.parametrize("state", sorted(ACTIVE_STATES))
def test_every_active_state_can_be_cancelled(state: State) -> None:
    assert may_follow(state, State.CANCELLED)


def test_a_request_cannot_go_back_to_pending_or_skip_approval() -> None:
    assert not any(may_follow(state, State.PENDING) for state in State)
    assert not may_follow(State.PENDING, State.QUEUED)
    assert not may_follow(State.PENDING, State.RUNNING)
