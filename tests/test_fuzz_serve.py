"""Generated fuzzing of the search service from its own OpenAPI schema (schemathesis).

Every operation of ``/openapi.json`` is called in-process (ASGI) with cases schemathesis derives
from the schema: ones that fit it (positive), ones that break it (negative: wrong types, numbers
out of range, missing fields) and, so that the paths behind a known galaxy or answer are reached
too, cases whose galaxy id or Galaxy Zoo answers are drawn from the index. The properties: no
response is a server error, and every response conforms to the schema (its status's body schema
and content type). The number of cases per operation is bounded so the run takes seconds.
"""
from __future__ import annotations

import os
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

# OUR CHOICE: 20 generated cases per operation (12 operations: ~200 requests in ~10 s on one core);
# GALAXALIGN_FUZZ_EXAMPLES asks for more in a deeper run.
EXAMPLES_PER_OPERATION = int(os.environ.get("GALAXALIGN_FUZZ_EXAMPLES", 20))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def api(fx):
    from galaxalign.serve import create_app
    from galaxalign.taxonomy import decision_tree

    app = create_app(fx["index"], model=fx["loaded_model"], max_upload_bytes=300_000)
    ids = [str(i) for i in fx["catalog"]["id"]]
    # one answer per question, so most drawn sets are consistent (a set that is not is a 400)
    answers = [q.answers[0].id for q in decision_tree().questions] + [a.id for q in decision_tree().questions
                                                                       for a in q.answers[1:2]]
    return schemathesis.openapi.from_asgi("/openapi.json", app), ids, answers


def case_strategy(operation, ids: list[str], answers: list[str]):
    """Positive and negative cases of ``operation``, plus positive ones with a real id / real answers."""
    options = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    path_names = {p.name for p in operation.path_parameters}
    query_names = {p.name for p in operation.query}
    answer_sets = st.lists(st.sampled_from(answers), min_size=1, max_size=4)
    if "galaxy_id" in path_names:
        options.append(st.sampled_from(ids).flatmap(
            lambda gid: operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"galaxy_id": gid})))
    if "answers" in query_names:
        options.append(answer_sets.flatmap(
            lambda a: operation.as_strategy(GenerationMode.POSITIVE, query={"answers": ",".join(a)})))
    if operation.method.upper() == "POST" and operation.path == "/api/search/symbol":
        options.append(st.builds(lambda a, k: {"answers": a, "k": k}, answer_sets, st.integers(1, 100)).flatmap(
            lambda body: operation.as_strategy(GenerationMode.POSITIVE, body=body)))
    return st.one_of(options)


def fuzz_operation(operation, ids, answers, statuses: dict[int, int]) -> None:
    """Call ``operation`` with generated cases; the first failed check fails (and is shrunk)."""

    @given(case=case_strategy(operation, ids, answers))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call_and_validate(checks=CHECKS)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    run()


def test_no_operation_gives_a_server_error_or_breaks_its_schema(api):
    schema, ids, answers = api
    operations = [result.ok() for result in schema.get_all_operations()]
    counts: dict[str, dict[int, int]] = {}
    t0 = time.perf_counter()
    for operation in operations:
        fuzz_operation(operation, ids, answers, counts.setdefault(f"{operation.method.upper()} {operation.path}", {}))
    total = sum(sum(c.values()) for c in counts.values())
    print(f"schemathesis: {total} cases over {len(operations)} operations in {time.perf_counter() - t0:.1f} s: "
          + "; ".join(f"{op} {dict(sorted(c.items()))}" for op, c in sorted(counts.items())))
    assert {"/api/search/text", "/api/search/image", "/api/search/id/{galaxy_id}", "/api/catalog",
            "/api/search/features", "/api/search/symbol"} <= {op.path for op in operations}
    # every operation ran; those that take input both answered some cases and refused others
    assert all(counts.values()), counts
    for op in ("GET /api/search/id/{galaxy_id}", "GET /api/galaxy/{galaxy_id}", "POST /api/search/text",
               "GET /api/search/features", "POST /api/search/symbol", "GET /api/catalog"):
        assert 200 in counts[op] and any(400 <= s < 500 for s in counts[op]), (op, counts[op])


def test_generated_uploads_never_give_a_server_error(api, fx):
    """The image and sketch searches with generated files (tests/test_fuzz_parsers.py's uploads: every
    Pillow format and mode, FITS cubes with NaN, files cut short, overwritten or gzipped, junk)."""
    from fastapi.testclient import TestClient
    from hypothesis import strategies as st
    from test_fuzz_parsers import uploads

    schema, _, _ = api
    statuses: dict[int, int] = {}
    with TestClient(schema.app, raise_server_exceptions=False) as client:

        @given(data=uploads, kind=st.sampled_from(["image", "sketch"]),
               k=st.one_of(st.just("3"), st.sampled_from(["0", "101", "x"])))
        @settings(max_examples=EXAMPLES_PER_OPERATION * 3, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(data, kind, k):
            r = client.post(f"/api/search/{kind}", params={"k": k}, files={"file": ("up.png", data, "image/png")})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, r.text
            assert r.status_code != 200 or len(r.json()["results"]) == int(k)

        run()
    print(f"uploads: {sum(statuses.values())} cases, statuses {dict(sorted(statuses.items()))}")
    assert statuses.get(200) and statuses.get(400)
