"""Schemathesis against the published OpenAPI spec of `neurender serve` over real HTTP: no 5xx, responses match
the documented shapes and status codes. Bounded: at most 30 examples per operation."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from neurender.server.app import create_app
from neurender.server.config import ServerConfig
from neurender.server.fake_runner import STEP_SECONDS_ENV, run_fake_render, write_fake_pass_folder
from neurender.server.live import LiveServer


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema")
    write_fake_pass_folder(tmp / "shot", frames=2)
    mp = pytest.MonkeyPatch()
    mp.setenv(STEP_SECONDS_ENV, "0.001")
    config = ServerConfig(data_dir=tmp / "data", roots=[tmp], device="cpu", max_upload_bytes=256 * 1024)
    with LiveServer(create_app(config, runner=run_fake_render)) as server:
        # one real job so that some generated ids may hit an existing one
        httpx.post(server.url + "/jobs", json={"pass_dir": str(tmp / "shot"), "settings": {"steps": 1}})
        yield server
    mp.undo()


OPERATIONS = [
    ("GET", "/version"), ("POST", "/jobs"), ("POST", "/jobs/upload"), ("GET", "/jobs"), ("GET", "/jobs/{job_id}"),
    ("DELETE", "/jobs/{job_id}"), ("GET", "/jobs/{job_id}/frames/{frame}"), ("GET", "/jobs/{job_id}/events"),
    ("GET", "/jobs/{job_id}/controls/{kind}/{frame}"),
    ("POST", "/models/free"),
]


@pytest.mark.parametrize("method, path", OPERATIONS)
def test_no_server_errors(live, method, path):
    api = schemathesis.openapi.from_url(live.url + "/openapi.json")
    operation = api[path][method]
    checks = [not_a_server_error, response_schema_conformance, status_code_conformance]

    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        case.call_and_validate(base_url=live.url, checks=checks)

    run()


def test_openapi_is_published(live):
    spec = httpx.get(live.url + "/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/version", "/jobs", "/jobs/upload", "/jobs/{job_id}", "/jobs/{job_id}/frames/{frame}",
            "/jobs/{job_id}/events", "/models/free"} <= paths
    assert set(spec["paths"]["/jobs/{job_id}"]) == {"get", "delete"}
