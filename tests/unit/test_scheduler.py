"""Fair scheduling: caps are queues, one member cannot take every slot, servers take turns."""

from __future__ import annotations

from bot.domain import Job, JobState, Money, ShotParams, WorkKind
from bot.jobs.scheduler import Limits, fair_order, jobs_to_start, positions


def job(job_id: int, guild: int, user: int = 1, provider: str = "p", state: JobState = JobState.QUEUED) -> Job:
    return Job(
        id=job_id,
        guild_id=guild,
        channel_id=guild,
        user_id=user,
        character_id=1,
        character_name="Ava",
        character_version=1,
        kind=WorkKind.ANIMATE,
        provider=provider,
        model="m",
        action="a",
        prompt="p",
        negative_prompt=None,
        params=ShotParams(duration=5, aspect_ratio="16:9", camera="static"),
        bound=[],
        cost_estimate=Money.ZERO,
        cost_final=None,
        state=state,
        task_id=None,
        status_url=None,
        attempts=0,
        polls=0,
        next_poll_at=None,
        status_message_id=None,
        result_message_id=None,
        result_blob=None,
        error=None,
        parent_job_id=None,
        cancel_requested=False,
        created_at=float(job_id),
        started_at=None,
        finished_at=None,
    )


def test_servers_take_turns_whatever_the_order_of_queueing() -> None:
    busy = [job(n, guild=1) for n in range(1, 6)]  # server 1 queued five first
    late = [job(10, guild=2), job(11, guild=3)]
    order = [j.id for j in fair_order([*busy, *late], last_start={})]
    assert order == [1, 10, 11, 2, 3, 4, 5]
    # a server that just started a job goes after those that did not
    order = [j.id for j in fair_order([*busy, *late], last_start={1: 100.0})]
    assert order[:3] == [10, 11, 1]


def test_provider_cap_and_per_user_cap() -> None:
    queued = [job(1, 1, user=7), job(2, 1, user=7), job(3, 1, user=7), job(4, 2, user=8)]
    active = [job(9, 3, user=9, state=JobState.RUNNING)]
    limits = Limits(provider_caps={"p": 3}, per_user=2)
    starting = [j.id for j in jobs_to_start(queued, active, limits, last_start={})]
    assert starting == [1, 4]  # cap 3 with one running: two start; user 7's second waits for the other server
    limits = Limits(provider_caps={"p": 10}, per_user=2)
    assert [j.id for j in jobs_to_start(queued, active, limits, last_start={})] == [1, 4, 2]  # user 7: two at most


def test_a_full_provider_does_not_block_another_provider() -> None:
    queued = [job(1, 1, provider="slow"), job(2, 2, provider="fast")]
    active = [job(9, 3, provider="slow", state=JobState.RUNNING)]
    starting = jobs_to_start(queued, active, Limits(provider_caps={"slow": 1, "fast": 1}), last_start={})
    assert [j.id for j in starting] == [2]


def test_positions_follow_the_fair_order() -> None:
    queued = [job(1, 1), job(2, 1), job(3, 2)]
    assert positions(queued, last_start={}) == {1: 1, 3: 2, 2: 3}


def test_a_server_with_its_own_key_has_its_own_account() -> None:
    """The bot's Kling account is full; a server with its own Kling key still starts its shots, up to its own cap."""
    limits = Limits(provider_caps={"kling": 1}, per_user=5, server_accounts={(2, "kling"): 2})
    active = [job(1, guild=1, provider="kling", state=JobState.RUNNING)]
    queued = [job(2, guild=1, provider="kling"), *(job(n, guild=2, provider="kling") for n in (3, 4, 5))]
    started = [j.id for j in jobs_to_start(queued, active, limits, {})]
    assert started == [3, 4]  # guild 1 waits for the bot's account; guild 2 fills its own (2 at once)
    assert limits.account(queued[0]) == "kling" and limits.account(queued[1]) == (2, "kling")


def test_a_shot_counts_against_the_account_it_was_sent_with() -> None:
    """Server 2 removed its key while a shot sent with it renders: that shot keeps the server's account busy,
    not the bot's, and server 2's next shots go on the bot's account."""
    limits = Limits(provider_caps={"kling": 1}, per_user=5)  # server 2 has no key any more
    on_old_key = job(1, guild=2, provider="kling", state=JobState.RUNNING).model_copy(update={"account": "v1"})
    queued = [job(2, guild=2, provider="kling"), job(3, guild=1, provider="kling")]
    assert [j.id for j in jobs_to_start(queued, [on_old_key], limits, {})] == [2]  # the bot's one slot is free
    assert limits.account(on_old_key) == (2, "kling") and limits.account_cap((2, "kling")) == 1

    on_bots_key = job(4, guild=3, provider="kling", state=JobState.RUNNING).model_copy(update={"account": ""})
    keyed = Limits(provider_caps={"kling": 1}, per_user=5, server_accounts={(3, "kling"): 2})
    # Server 3 set its key after this shot left on the bot's key: it fills the bot's slot, not the server's.
    assert keyed.account(on_bots_key) == "kling"
    assert [j.id for j in jobs_to_start([job(5, guild=3, provider="kling")], [on_bots_key], keyed, {})] == [5]
    assert jobs_to_start([job(6, guild=1, provider="kling")], [on_bots_key], keyed, {}) == []
