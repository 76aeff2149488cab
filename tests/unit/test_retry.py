"""ocb.retry: the deadline, the backoff and its cap, Retry-After, the lost-answer lookup."""

import email.utils

import pytest

from ocb import retry


class Clock:
    """A fake monotonic clock that sleeping advances; records every wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


class Flaky(Exception):
    def __init__(self, retry_after: str | None = None) -> None:
        super().__init__("flaky")
        self.retry_after = retry_after


class Fatal(Exception):
    pass


def attempts(*outcomes):
    """A callable that raises or returns each outcome in turn; .calls counts the attempts."""
    queue = list(outcomes)

    def attempt():
        attempt.calls += 1
        outcome = queue.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    attempt.calls = 0
    return attempt


def run(attempt, budget=60.0, first=1.0, cap=8.0, **kwargs):
    clock = Clock()
    policy = retry.Policy(budget, first_wait=first, max_wait=cap, sleep=clock.sleep, clock=clock,
                          wall_clock=lambda: 1_700_000_000.0)
    result = retry.call(attempt, policy, transient=lambda exc: isinstance(exc, Flaky),
                        retry_after=lambda exc: getattr(exc, "retry_after", None), **kwargs)
    return result, clock.waits


@pytest.mark.parametrize("outcomes, waits", [
    (["ok"], []),
    ([Flaky(), "ok"], [1.0]),
    ([Flaky(), Flaky(), Flaky(), "ok"], [1.0, 2.0, 4.0]),
    ([Flaky()] * 6 + ["ok"], [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]),  # capped at 8
    ([Flaky("3"), "ok"], [3.0]),  # Retry-After wins over the backoff
    ([Flaky("20"), "ok"], [20.0]),  # even past the cap: the server said so
    ([Flaky("0"), Flaky(), "ok"], [0.0, 2.0]),  # the backoff still advances
    ([Flaky("soon"), "ok"], [1.0]),  # unreadable: the backoff
], ids=["first-try", "once", "doubling", "capped", "retry-after", "retry-after-past-cap", "retry-after-zero",
        "retry-after-unreadable"])
def test_waits_follow_the_backoff_and_retry_after(outcomes, waits):
    result, actual = run(attempts(*outcomes))
    assert result == "ok" and actual == waits


def test_a_failure_that_is_not_transient_is_raised_at_once():
    attempt = attempts(Fatal("no"))
    with pytest.raises(Fatal):
        run(attempt)
    assert attempt.calls == 1


@pytest.mark.parametrize("budget, outcomes, calls, waits", [
    (0.0, [Flaky()], 1, []),
    (2.5, [Flaky()] * 5, 2, [1.0]),  # 1 then 2 would end at 3 > 2.5
    (3.0, [Flaky()] * 5, 3, [1.0, 2.0]),  # a wait that ends on the deadline is allowed
    (60.0, [Flaky("3600")], 1, []),  # a Retry-After past the budget: give up now, not in an hour
])
def test_the_budget_is_a_deadline_and_the_last_failure_is_raised(budget, outcomes, calls, waits):
    attempt = attempts(*outcomes)
    with pytest.raises(Flaky):
        run(attempt, budget=budget)
    assert attempt.calls == calls
    assert sum(waits) <= budget


def test_before_retry_can_end_with_the_operation_that_landed():
    """A commit whose answer was lost: the lookup finds it, the commit is not made again."""
    attempt = attempts(Flaky(), "committed twice")
    result, waits = run(attempt, before_retry=lambda exc: "found it")
    assert result == "found it" and attempt.calls == 1 and waits == []


def test_before_retry_none_goes_on_and_an_error_from_it_propagates():
    looked = []
    result, _ = run(attempts(Flaky(), "ok"), before_retry=lambda exc: looked.append(exc) or None)
    assert result == "ok" and len(looked) == 1
    with pytest.raises(Fatal):
        run(attempts(Flaky(), "ok"), before_retry=lambda exc: (_ for _ in ()).throw(Fatal("moved")))


def test_only_the_caught_types_are_looked_at():
    attempt = attempts(KeyError("x"))
    with pytest.raises(KeyError):
        run(attempt, catch=(Flaky,))
    assert attempt.calls == 1


NOW = 1_700_000_000.0


@pytest.mark.parametrize("header, seconds", [
    (None, None),
    ("5", 5.0),
    (" 7 ", 7.0),
    ("-1", None),
    ("1.5", None),  # delta-seconds are integers (RFC 9110)
    ("later", None),
    (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
    (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # a date already past: no wait
])
def test_retry_after_seconds(header, seconds):
    assert retry.retry_after_seconds(header, NOW) == seconds


@pytest.mark.parametrize("header, seconds", [
    (None, None),
    ("", None),
    ('"api";r=0;t=55', 55.0),
    ('"api";r=3;t=55', None),  # requests remain: no wait asked
    ('"api";r=0;t=55, "resolvers";r=0;t=120', 120.0),  # the longest exhausted one
    ('"api";r=10;t=5, "pages";r=0;t=30', 30.0),
    ("api;r=0;t=7", 7.0),
    ("garbage", None),
])
def test_ratelimit_seconds(header, seconds):
    assert retry.ratelimit_seconds(header) == seconds


def test_wait_hint_takes_retry_after_first_then_ratelimit():
    assert retry.wait_hint("3", '"api";r=0;t=55', 0.0) == 3.0
    assert retry.wait_hint(None, '"api";r=0;t=55', 0.0) == 55.0
    assert retry.wait_hint("soon", '"api";r=0;t=9', 0.0) == 9.0
    assert retry.wait_hint(None, None, 0.0) is None


def test_a_hint_callback_sets_the_wait():
    clock = Clock()
    policy = retry.Policy(60.0, sleep=clock.sleep, clock=clock)
    result = retry.call(attempts(Flaky(), "ok"), policy, transient=lambda exc: isinstance(exc, Flaky),
                        hint=lambda exc, now: 5.0)
    assert (result, clock.waits) == ("ok", [5.0])
    # a hint past the deadline ends the loop with the failure, without waiting
    with pytest.raises(Flaky):
        retry.call(attempts(Flaky(), "ok"), retry.Policy(4.0, sleep=clock.sleep, clock=clock),
                   transient=lambda exc: isinstance(exc, Flaky), hint=lambda exc, now: 300.0)
    assert clock.waits == [5.0]
