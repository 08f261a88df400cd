"""Step 6: the weighted total of the terms that apply.

total = sum(w_k * score_k) / sum(w_k) over the terms whose status is 'ok' and whose weight is
positive. Terms that are not applicable (no camera path asked for) or failed do not drag the
total down: the weights of the others are renormalised, and `total_terms` says which counted.
No such term: total is null (a trainer should mask the sample, not read it as 0).
"""

from __future__ import annotations

from service.schemas import TermResult, TermStatus


def combine_terms(
    terms: dict[str, TermResult], weights: dict[str, float]
) -> tuple[float | None, list[str]]:
    used = [
        name
        for name, term in terms.items()
        if term.status == TermStatus.OK and term.score is not None and weights.get(name, 0.0) > 0
    ]
    if not used:
        return None, []
    weight_sum = sum(weights[name] for name in used)
    total = sum(weights[name] * terms[name].score for name in used) / weight_sum
    return float(total), used
