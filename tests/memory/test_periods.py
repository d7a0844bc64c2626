"""The period a recall query names (``backend.memory._periods.query_period``)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from backend.memory._periods import query_period

AS_OF = datetime(2024, 3, 11, 12, tzinfo=UTC)  # a Monday


def period(query: str) -> tuple[date, date] | None:
    found = query_period(query, as_of=AS_OF)
    return None if found is None else (found[0].date(), found[1].date())


def day(y: int, m: int, d: int) -> tuple[date, date]:
    return date(y, m, d), date.fromordinal(date(y, m, d).toordinal() + 1)


@pytest.mark.parametrize(
    "query",
    [
        "What did I buy on 2024-03-05?",
        "What did I buy on 5 March 2024?",
        "What did I buy on 5 Mar 2024?",
        "What did I buy on March 5, 2024?",
        "What did I buy on March 5th?",  # no year: the latest March 5 up to as_of
        "what did i buy on march 5th?",
        "What did I buy 6 days ago?",
        "What did I buy last Tuesday?",
    ],
)
def test_a_day_named_in_any_form_is_that_day(query: str) -> None:
    """A reviewer's finding: an ISO date or a day with its month and year resolved to the
    whole year or month, and a day without its year or a weekday to nothing."""
    assert period(query) == day(2024, 3, 5)


def test_relative_days_and_spans() -> None:
    assert period("What did I buy yesterday?") == day(2024, 3, 10)
    assert period("what happened last night") == day(2024, 3, 10)
    assert period("the day before yesterday") == day(2024, 3, 9)
    assert period("What did I buy on Monday?") == day(2024, 3, 11)  # today is one
    assert period("last Monday") == day(2024, 3, 4)  # "last": before today
    assert period("a few days ago what did I sell") == (date(2024, 3, 7), date(2024, 3, 10))
    assert period("in the last 3 days") == (date(2024, 3, 8), date(2024, 3, 12))
    assert period("two weeks ago") == (date(2024, 2, 26), date(2024, 3, 4))
    assert period("What did I say last week?") == (date(2024, 3, 4), date(2024, 3, 12))


def test_months_and_years() -> None:
    assert period("What did she do in July 2023?") == (date(2023, 7, 1), date(2023, 8, 1))
    assert period("What happened in May of 2022?") == (date(2022, 5, 1), date(2022, 6, 1))
    assert period("What did I do in May?") == (date(2023, 5, 1), date(2023, 6, 1))  # the last May
    assert period("What did I do last March?") == (date(2023, 3, 1), date(2023, 4, 1))
    assert period("What did I do in March?") == (date(2024, 3, 1), date(2024, 4, 1))
    assert period("December 25") == day(2023, 12, 25)  # never a day after as_of
    assert period("on Feb 29") == day(2024, 2, 29)
    assert period("Did I say I may short BTC in 2024?") == (date(2024, 1, 1), date(2025, 1, 1))


def test_a_span_before_a_named_day_ends_with_that_day() -> None:
    """ "The week before August 3": what was said that week, or on August 3 about it."""
    assert period("What did John do the week before August 3, 2023?") == (
        date(2023, 7, 27), date(2023, 8, 4),
    )  # fmt: skip
    assert period("the puppy she got two weeks before August 11, 2023") == (
        date(2023, 7, 28), date(2023, 8, 12),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # prices the size of years are not years (a reviewer's finding)
        (
            "What did I say last week about selling ETH at 2050?",
            (date(2024, 3, 4), date(2024, 3, 12)),
        ),
        ("Why did I sell ETH at 2010 yesterday?", day(2024, 3, 10)),
        ("ETH at 2,050 on May 3", day(2023, 5, 3)),
        ("target 2100 by July", None),
        ("my plan for 2025", None),
        # may and march as verbs
        ("Did Caroline march in the parade in 2023?", (date(2023, 1, 1), date(2024, 1, 1))),
        ("this may hurt", None),
        ("I sold 3 may be more", None),
        # ambiguous slashed dates are not read
        ("What did I buy on 03/05/2024?", None),
        ("on May 0", None),  # no such day
        ("What did I buy on 2024-02-30?", None),
        ("what is my risk limit?", None),
    ],
)
def test_what_is_not_a_date(query: str, expected: tuple[date, date] | None) -> None:
    assert period(query) == expected
