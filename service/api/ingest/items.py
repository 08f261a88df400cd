"""From uploaded tensors + request fields to the job spec a worker runs."""

from __future__ import annotations

from pydantic import ValidationError

from service.api.errors import Problem, invalid_request
from service.api.ingest.json_text import load_json
from service.api.schemas import ItemFields, RequestFields
from service.jobs.blobs import BlobRef
from service.jobs.records import ItemSpec, JobSpec
from service.schemas import ScoreOptions


def parse_fields(raw: bytes | str | dict | None, where: str) -> RequestFields:
    """Request fields from JSON text or a dict (422 with the field path if invalid)."""
    if raw is None or raw == b"" or raw == "":
        return RequestFields()
    if not isinstance(raw, dict):
        raw = load_json(raw, where)
    try:
        return RequestFields.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request(exc, (where,)) from None


def check_item_count(fields: RequestFields, count: int) -> None:
    if fields.items is not None and len(fields.items) != count:
        raise Problem("invalid-request", f"'items' has {len(fields.items)} entries for {count} "
                      "video(s); give one per video, in order")  # fmt: skip


def merge_options(request: ScoreOptions | None, item: ScoreOptions | None) -> ScoreOptions:
    """Item options override the request's, field by field."""
    merged = {}
    for options in (request, item):
        if options is not None:
            merged.update(options.model_dump(exclude_unset=True))
    try:
        return ScoreOptions.model_validate(merged)
    except ValidationError as exc:
        raise invalid_request(exc, ("options",)) from None


def build_spec(fields: RequestFields, refs: dict[tuple[str, int], BlobRef], count: int) -> JobSpec:
    check_item_count(fields, count)
    entries = fields.items or [ItemFields() for _ in range(count)]
    items = []
    for index, entry in enumerate(entries):
        geometry = {name: ref for (name, i), ref in refs.items() if i == index and name != "video"}
        items.append(ItemSpec(
            id=entry.id, video=refs[("video", index)], geometry=geometry or None,
            prompt=entry.prompt, trajectory=entry.trajectory,
            options=merge_options(fields.options, entry.options), report=entry.report,
        ))  # fmt: skip
    return JobSpec(items=items)
