"""An API call that would prove nothing is the caller's mistake, a ValueError: never "ok" with zero cases."""

from __future__ import annotations

import pytest

import graphfix


@pytest.mark.parametrize("arguments", [{"batches": ()}, {"source_lengths": []}, {"steps": 0}, {"batches": (0,)},
                                       {"batches": "1"}, {"steps": True}],
                         ids=["no-batches", "no-source-lengths", "no-steps", "empty-batch", "text", "bool-steps"])
def test_a_proof_of_no_cases_is_a_value_error(marian_current, arguments):
    with pytest.raises(ValueError, match="proves nothing"):
        graphfix.validate(marian_current, **arguments)


def test_a_split_proof_of_no_cases_is_a_value_error(marian_current):
    with pytest.raises(ValueError, match="proves nothing"):
        graphfix.validate_split(marian_current, marian_current, batches=())
