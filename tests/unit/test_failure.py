"""Phi-accrual failure detection: suspicion grows with silence, steady peers stay available."""

from __future__ import annotations

import math
import random
import statistics
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynakv.core.failure import DetectorSettings, FailureDetector, Liveness, PhiAccrual, phi_of
from dynakv.messages import Heartbeat
from tests.unit.components import parts, sends

DEFAULTS = DetectorSettings()


def beating(times: list[float], settings: DetectorSettings = DEFAULTS) -> PhiAccrual:
    detector = PhiAccrual(settings)
    for now in times:
        detector.heartbeat(now)
    return detector


def steady(count: int, every: float = 1.0, start: float = 0.0) -> list[float]:
    return [start + i * every for i in range(count)]


def first_unavailable(detector: PhiAccrual, since: float, threshold: float = 8.0) -> float:
    """Seconds of silence after `since` until phi reaches threshold (to 1 ms)."""
    elapsed = 0.0
    while detector.phi(since + elapsed) < threshold:
        elapsed += 0.001
    return elapsed


def test_phi_is_zero_before_any_heartbeat():
    assert PhiAccrual(DEFAULTS).phi(123.0) == 0.0


def test_phi_rises_with_silence():
    detector = beating(steady(20))
    last = 19.0
    values = [detector.phi(last + gap) for gap in (0.5, 3.5, 4.2, 4.5, 5.0, 10.0, 1000.0)]
    assert values == sorted(values)
    assert values[0] == 0.0
    assert values[-1] > 1000
    assert all(math.isfinite(v) for v in values)


def test_steady_heartbeats_keep_a_peer_available():
    detector = beating(steady(600))
    for now in steady(600):
        assert detector.phi(now + 1.0) < 1.0  # an on-time next beat is no suspicion at all


def test_silence_makes_a_peer_unavailable_after_the_pause_and_a_few_deviations():
    detector = beating(steady(1000))
    # Steady beats: deviation at its 0.1 s floor, mean 1 s, plus the 3 s acceptable pause.
    silence = first_unavailable(detector, since=999.0)
    assert 4.0 + 3 * 0.1 < silence < 4.0 + 7 * 0.1


def test_jittery_heartbeats_widen_the_tolerance():
    rng = random.Random(7)
    times, now = [], 0.0
    for _ in range(1000):
        times.append(now)
        now += rng.uniform(0.5, 1.5)  # std ~0.29 s
    jittery = beating(times)
    steady_peer = beating(steady(1000))
    jittery_silence = first_unavailable(jittery, since=times[-1])
    steady_silence = first_unavailable(steady_peer, since=999.0)
    assert jittery_silence > steady_silence + 0.5
    intervals = [b - a for a, b in pairwise(times)]
    mean, std = statistics.fmean(intervals), statistics.pstdev(intervals)
    assert mean + 3.0 + 3 * std < jittery_silence < mean + 3.0 + 7 * std
    # And every one of its real beats arrived while it was still considered available.
    replay = PhiAccrual(DEFAULTS)
    for now in times:
        assert replay.phi(now) < DEFAULTS.threshold
        replay.heartbeat(now)


def test_min_std_deviation_is_the_floor_for_perfectly_regular_beats():
    tight = DetectorSettings(min_std_deviation=0.1, acceptable_pause=0.0)
    loose = DetectorSettings(min_std_deviation=0.5, acceptable_pause=0.0)
    times = steady(1100)  # enough to push the two seeded intervals out of the window
    # With zero variance, phi is exactly that of a normal of the floor deviation.
    assert beating(times, tight).phi(1100.2) == pytest.approx(phi_of(1.2, 1.0, 0.1))
    assert beating(times, loose).phi(1100.2) == pytest.approx(phi_of(1.2, 1.0, 0.5))
    assert beating(times, loose).phi(1100.2) < beating(times, tight).phi(1100.2)


def test_the_window_is_bounded_and_forgets_old_intervals():
    settings = DetectorSettings(window=50, acceptable_pause=0.0)
    detector = beating(steady(40, every=5.0), settings)  # slow beats first
    fast_start = 39 * 5.0 + 0.2
    for now in steady(200, every=0.2, start=fast_start):
        detector.heartbeat(now)
        assert detector.samples <= 50
    assert detector.samples == 50
    # Only the fast intervals remain: 1 s of silence is now very suspicious.
    last = fast_start + 199 * 0.2
    assert detector.phi(last + 1.0) > DEFAULTS.threshold


def test_the_first_heartbeat_seeds_the_window_with_the_estimate():
    settings = DetectorSettings(first_heartbeat_estimate=2.0, acceptable_pause=0.0)
    detector = beating([10.0], settings)
    assert detector.samples == 2
    # Seeded with 1.5 s and 2.5 s: mean 2 s, deviation 0.5 s.
    assert detector.phi(12.0) == pytest.approx(phi_of(2.0, 2.0, 0.5))
    assert detector.phi(12.0) == pytest.approx(math.log10(2))


def test_an_interval_that_ends_an_outage_is_not_recorded():
    detector = beating(steady(100))
    before = detector.phi(99.0 + 4.4)
    detector.heartbeat(99.0 + 60.0)  # back after a minute: phi was far above the threshold
    assert detector.samples == 101  # 2 seeds + 99 intervals, the 60 s gap left out
    assert detector.phi(159.0 + 4.4) == pytest.approx(before)


def test_reordered_or_duplicate_heartbeats_are_ignored():
    detector = beating([0.0, 1.0, 2.0])
    detector.heartbeat(2.0)
    detector.heartbeat(1.5)
    assert detector.samples == 4
    assert detector.last_heartbeat == 2.0


def test_settings_are_validated():
    for bad in (
        {"threshold": 0.0},
        {"window": 0},
        {"min_std_deviation": 0.0},
        {"acceptable_pause": -1.0},
        {"first_heartbeat_estimate": 0.0},
    ):
        with pytest.raises(ValueError):
            DetectorSettings(**bad)


# --- FailureDetector: many peers ---------------------------------------------------------------


def test_a_peer_never_watched_nor_heard_from_is_available():
    detector = FailureDetector()
    assert detector.is_available("stranger", 1e6)
    assert detector.phi("stranger", 1e6) == 0.0


def test_a_watched_silent_peer_is_available_until_estimate_plus_pause():
    detector = FailureDetector()
    detector.watch("b", 100.0)
    detector.watch("b", 103.0)  # watching again does not restart the grace period
    assert detector.is_available("b", 103.99)
    assert detector.phi("b", 103.99) == 0.0
    assert not detector.is_available("b", 104.0)
    assert detector.phi("b", 104.0) == math.inf


def test_a_watched_peer_that_beats_is_judged_by_its_heartbeats():
    detector = FailureDetector()
    detector.watch("b", 0.0)
    for now in steady(30, start=10.0):
        detector.heartbeat("b", now)
    assert detector.is_available("b", 40.0)
    assert not detector.is_available("b", 39.0 + 6.0)
    detector.heartbeat("b", 45.5)  # back: the outage interval is not recorded
    assert detector.is_available("b", 46.0)


def test_peers_are_independent_and_forget_drops_the_history():
    detector = FailureDetector()
    for now in steady(20):
        detector.heartbeat("a", now)
        if now < 5:
            detector.heartbeat("b", now)
    assert detector.is_available("a", 19.5)
    assert not detector.is_available("b", 19.5)
    assert detector.peers() == ["a", "b"]
    detector.forget("b")
    detector.forget("never-seen")
    assert detector.peers() == ["a"]
    assert detector.is_available("b", 19.5)  # unknown again


def test_custom_threshold_applies():
    lenient = FailureDetector(DetectorSettings(threshold=16.0))
    strict = FailureDetector(DetectorSettings(threshold=1.0))
    for now in steady(100):
        lenient.heartbeat("p", now)
        strict.heartbeat("p", now)
    at = 99.0 + 4.5
    assert lenient.phi("p", at) == strict.phi("p", at)
    assert lenient.is_available("p", at)
    assert not strict.is_available("p", at)


# --- laws ---------------------------------------------------------------------------------------


@given(
    intervals=st.lists(st.floats(0.01, 10.0), min_size=0, max_size=30),
    first=st.floats(0.0, 1e6),
    a=st.floats(0.0, 1e4, allow_subnormal=False),
    b=st.floats(0.0, 1e4, allow_subnormal=False),
    pause=st.floats(0.0, 10.0),
    min_std=st.floats(0.001, 2.0),
)
def test_phi_is_monotonic_non_decreasing_in_elapsed_time(intervals, first, a, b, pause, min_std):
    settings = DetectorSettings(acceptable_pause=pause, min_std_deviation=min_std)
    times = [first]
    for gap in intervals:
        times.append(times[-1] + gap)
    detector = beating(times, settings)
    early, late = sorted((a, b))
    low, high = detector.phi(times[-1] + early), detector.phi(times[-1] + late)
    assert 0.0 <= low <= high
    assert not math.isnan(high)


@given(
    mean=st.floats(0.01, 100.0),
    std=st.floats(0.001, 10.0),
    x=st.floats(-1e6, 1e6),
    dx=st.floats(0.0, 1e6),
)
def test_phi_of_is_monotonic_finite_and_never_negative(mean, std, x, dx):
    low, high = phi_of(x, mean, std), phi_of(x + dx, mean, std)
    assert 0.0 <= low <= high
    assert math.isfinite(high)


def test_phi_of_is_monotonic_on_a_dense_sweep():
    previous = 0.0
    for step in range(-200_000, 200_000):
        value = phi_of(1.0 + step * 1e-5, 1.0, 0.1)
        assert value >= previous, step
        previous = value


# --- Liveness: the node's down set, alone -------------------------------------------------


def test_a_broken_connection_marks_the_peer_down_until_it_is_heard_from():
    p = parts("n1")
    liveness = Liveness(p.context)
    down_before = p.view.down
    liveness.unreachable_peer("n2")
    assert p.view.down == {"n2"} and p.view.down is not down_before  # replaced, not changed
    assert [log.event for log in p.logs] == ["peer_unreachable"]
    liveness.unreachable_peer("n1")  # never itself
    assert p.view.down == {"n2"}
    liveness.on_heartbeat(1.0, "n2", Heartbeat())
    assert p.view.down == set()


def test_heartbeats_go_to_every_peer_and_silence_makes_a_peer_suspected():
    p = parts("n1", heartbeat_interval=1.0)
    liveness = Liveness(p.context)
    now = 0.0
    for _ in range(20):
        assert sorted(to for to, _ in sends(liveness.on_tick(now), Heartbeat)) == ["n2", "n3"]
        liveness.on_heartbeat(now, "n2", Heartbeat())
        liveness.on_heartbeat(now, "n3", Heartbeat())
        now += 1.0
    for _ in range(30):  # n3 falls silent
        liveness.on_tick(now)
        liveness.on_heartbeat(now, "n2", Heartbeat())
        now += 1.0
    assert p.view.down == {"n3"} and liveness.suspected == {"n3"}
    assert any(log.event == "peer_suspected" for log in p.logs)
    liveness.on_heartbeat(now, "#client", Heartbeat())  # a client's heartbeat counts for nothing
    assert "#client" not in liveness.detector.peers()
