import pytest

from app.core.job import ACTIVE, TERMINAL, Event, IllegalTransition, JobState, transition


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        (JobState.SCHEDULED, Event.DUE, JobState.QUEUED),
        (JobState.RETRYING, Event.DUE, JobState.QUEUED),
        (JobState.QUEUED, Event.CLAIMED, JobState.RUNNING),
        (JobState.RUNNING, Event.SUCCEEDED, JobState.SUCCEEDED),
        (JobState.RUNNING, Event.RETRY, JobState.RETRYING),
        (JobState.RUNNING, Event.REQUEUE, JobState.QUEUED),
        (JobState.RUNNING, Event.FAILED, JobState.FAILED),
        (JobState.FAILED, Event.OPERATOR_RETRY, JobState.QUEUED),
        (JobState.CANCELLED, Event.OPERATOR_RETRY, JobState.QUEUED),
        (JobState.SUCCEEDED, Event.OPERATOR_RETRY, JobState.QUEUED),  # sent again
    ],
)
def test_the_diagram_allows_its_arrows(state: JobState, event: Event, expected: JobState) -> None:
    assert transition(state, event) is expected


@pytest.mark.parametrize("state", sorted(ACTIVE))
def test_every_unfinished_state_can_be_cancelled(state: JobState) -> None:
    assert transition(state, Event.CANCEL) is JobState.CANCELLED


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_finished_jobs_cannot_be_cancelled(state: JobState) -> None:
    with pytest.raises(IllegalTransition):
        transition(state, Event.CANCEL)


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (JobState.QUEUED, Event.OPERATOR_RETRY),
        (JobState.RUNNING, Event.OPERATOR_RETRY),
        (JobState.SCHEDULED, Event.CLAIMED),
        (JobState.QUEUED, Event.SUCCEEDED),
        (JobState.SUCCEEDED, Event.CLAIMED),
        (JobState.FAILED, Event.DUE),
    ],
)
def test_the_diagram_forbids_everything_else(state: JobState, event: Event) -> None:
    with pytest.raises(IllegalTransition) as info:
        transition(state, event)
    assert info.value.status == 409
