"""The rank job: what the parent hands every rank, typed both ways. In-process, no rank."""

from __future__ import annotations

import json

import pytest

from compile_guard.contracts.rank_job import RankJob, RankJobError, Target
from compile_guard.flow.scenarios import SCENARIOS, target_scenario
from compile_guard.quality.options import OFF


def test_a_job_round_trips_as_canonical_json():
    job = target_scenario("docs.examples.tp_mlp:good", nprocs=2, backend="aot_eager").replace(
        stall_s=3.0, eager_ledger=True, quality=OFF.to_dict(), deadline_s=90.0
    )
    text = job.to_json()
    assert RankJob.from_json(text) == job
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_flat_names_reach_their_part():
    """A matrix row's `spec` names options flat: each lands in the engine's spec or the harness's options."""
    job = RankJob(spec=SCENARIOS["tp2-aot"]).replace(agree_inputs=False, stall_s=3.0, compile="inductor")
    assert (job.agreement.inputs, job.agreement.stall_s, job.spec.compile) == (False, 3.0, "inductor")
    assert job.replace(quality={"compile_time": "cold"}).measure.compile_time == "cold"


def test_the_target_is_in_the_config_hash_and_the_options_are_not():
    """The options change no graph (a baseline stays valid); another model is another program."""
    base = RankJob(spec=SCENARIOS["tp2"])
    assert base.replace(stall_s=5.0, eager_ledger=True).config_hash() == base.config_hash()
    other = RankJob(spec=SCENARIOS["tp2"], target=Target(factory="pkg.mod:f"))
    assert other.config_hash() != base.config_hash()


@pytest.mark.parametrize(
    "change, said",
    [
        ({"extra": 1}, "unknown field(s) ['extra']"),
        ({"deadline_s": "60"}, "the rank job.deadline_s is str '60', expected float"),
        ({"agreement": {"stall_s": True}}, "the rank job.agreement.stall_s is bool True, expected float"),
    ],
)
def test_a_job_of_another_version_is_refused_naming_the_field(change, said):
    raw = {**json.loads(RankJob(spec=SCENARIOS["tp2"]).to_json()), **change}
    with pytest.raises(RankJobError) as info:
        RankJob.from_json(json.dumps(raw))
    assert said in str(info.value)


def test_every_option_is_parity_checked():
    """The compile handshake compares every option of the job, so two ranks given different jobs stop."""
    items = RankJob(spec=SCENARIOS["tp2"]).parity_items()
    assert items["job.agreement.stall_s"] == 0.0 and items["job.measure.repeats"] == 20 and items["job.target"] is None
    assert RankJob(spec=SCENARIOS["tp2"]).replace(stall_s=1.0).parity_items() != items
