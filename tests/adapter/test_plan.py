"""plan_discovery: the one function that decides which listeners stop and start."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mcpgw.adapter.discovery import plan_discovery


def test_new_servers_start_at_once() -> None:
    plan = plan_discovery(["a", "b"], ["a"], [])
    assert plan.start == {"b"} and plan.stop == frozenset()


def test_server_missing_once_is_only_marked_absent() -> None:
    plan = plan_discovery(["a"], ["a", "b"], [])
    assert plan.stop == frozenset() and plan.absent == {"b"}


def test_server_missing_twice_in_a_row_is_stopped() -> None:
    plan = plan_discovery(["a"], ["a", "b"], ["b"])
    assert plan.stop == {"b"} and plan.absent == frozenset()


def test_server_that_came_back_is_no_longer_absent() -> None:
    plan = plan_discovery(["a", "b"], ["a", "b"], ["b"])
    assert plan.stop == frozenset() and plan.absent == frozenset()


def test_sudden_empty_listing_stops_nothing() -> None:
    plan = plan_discovery([], ["a", "b"], [])
    assert plan.suspicious_empty_listing
    assert plan.stop == frozenset() and plan.start == frozenset()
    assert plan.absent == {"a", "b"}


def test_a_repeated_empty_listing_proposes_its_servers_for_confirmed_deletion() -> None:
    # The adapter still stops only those whose versions file is gone (see the deletion invariant tests).
    plan = plan_discovery([], ["a", "b"], ["a", "b"])
    assert plan.suspicious_empty_listing
    assert plan.stop == {"a", "b"}


def test_empty_listing_with_nothing_running_is_just_empty() -> None:
    plan = plan_discovery([], [], [])
    assert not plan.suspicious_empty_listing and plan.start == frozenset()


@given(st.sets(st.sampled_from("abcdef")), st.sets(st.sampled_from("abcdef")), st.sets(st.sampled_from("abcdef")))
def test_plan_never_stops_a_listed_server_nor_starts_a_running_one(listed: set[str], running: set[str],
                                                                    absent: set[str]) -> None:
    plan = plan_discovery(listed, running, absent)
    assert not (plan.stop & listed)
    assert not (plan.start & running)
    assert plan.stop <= running
    assert not (plan.stop & plan.absent)
