"""Lag maths, group ids to stages, rates, and member assignments as DescribeGroups sends them."""

from __future__ import annotations

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from edgewise.app.core.consumer_lag import (
    GroupLag,
    PartitionLag,
    decode_owned,
    partition_lag,
    rate,
    stages_of_group,
)
from edgewise.app.core.settings import Settings
from edgewise.app.run.factory import STAGE_MODULES, STAGES, app_id_for


def test_lag_is_end_minus_committed_never_negative() -> None:
    assert partition_lag(committed=40, start=0, end=100) == 60
    assert partition_lag(committed=100, start=0, end=100) == 0
    assert partition_lag(committed=120, start=0, end=100) == 0  # end read before the commit


def test_nothing_committed_or_below_the_log_start_counts_from_the_start() -> None:
    assert partition_lag(committed=-1, start=10, end=100) == 90
    assert partition_lag(committed=3, start=10, end=100) == 90  # retention deleted 3..9


def test_group_totals_add_partitions() -> None:
    group = GroupLag("g", "Stable", 2, [PartitionLag("t", 0, 5, 0, 9),
                                        PartitionLag("t", 1, -1, 2, 4)])
    assert group.lag == 4 + 2
    assert group.committed_total == 5 + 2
    assert group.end_total == 13


def test_group_ids_name_their_stages_as_the_factory_makes_them() -> None:
    settings = Settings(app_id="edgewise")
    for stages in (["score"], ["review", "correct"], ["route", "aggregate", "cdc_transform"]):
        group = app_id_for(settings, stages)
        assert sorted(stages_of_group(group, "edgewise", STAGE_MODULES, STAGES)) == sorted(stages)
    assert stages_of_group("edgewise", "edgewise", STAGE_MODULES, STAGES) == list(STAGES)
    assert stages_of_group("edgewise-nosuch", "edgewise", STAGE_MODULES, STAGES) is None
    assert stages_of_group("connect-cluster", "edgewise", STAGE_MODULES, STAGES) is None


def test_rate_is_per_second_and_not_negative_after_a_reset() -> None:
    assert rate(100, 400, 2.0) == 150.0
    assert rate(400, 100, 2.0) == 0.0
    assert rate(0, 10, 0.0) == 0.0


def test_owned_partitions_from_member_assignments() -> None:
    one = ConsumerProtocolMemberAssignment(0, [("a", [0, 1]), ("b", [3])], b"").encode()
    two = ConsumerProtocolMemberAssignment(0, [("a", [2])], b"").encode()
    members = [("m1", "client", "host", b"", one), ("m2", "client", "host", b"", two)]
    assert decode_owned(members) == {"m1": 3, "m2": 1}
    assert decode_owned([("m1", "client", "host", b"", b"")]) is None  # Tansu sends none
