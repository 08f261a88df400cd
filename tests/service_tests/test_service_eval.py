"""`reward3d eval --service`: videos scored through the real service (API + Redis + a worker
process), many in flight; results identical to in-process scoring; a rerun reuses them; report
pages kept by the worker, served at GET /v1/jobs/{id}/report with the same auth, and drawn
into the run's report folder."""

from __future__ import annotations

import csv
import http.server
import json
import threading

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from service.api.routes.jobs import REPORT_HEADERS
from service.cli import app
from service.evaluation.store import ResultStore
from tests.browser import dump_dom
from tests.eval_folders import CLIPS, write_folders, write_prompts

from .conftest import API_KEY, OTHER_KEY, ApiServer, WorkerProcess, make_settings

runner = CliRunner()
COUNT = 4  # clips per folder


@pytest.fixture(scope="module")
def service(redis_url, fresh_redis, tmp_path_factory):
    root = tmp_path_factory.mktemp("svc-eval")
    settings = make_settings(redis_url, root)
    server = ApiServer(settings).start()
    worker = WorkerProcess(settings, root / "worker.log").start().wait_warm(fresh_redis)
    clean, broken = write_folders(root / "videos", count=COUNT)
    # One clip with a requested camera path beside it (sent as the item's trajectory).
    with np.load(clean / "move_right_2.geometry.npz") as geometry:
        path = {"world_to_camera": geometry["world_to_camera"][::-1].tolist()}
    (clean / "move_right_2.trajectory.json").write_text(json.dumps(path))
    yield server.url, clean, broken, write_prompts(root / "prompts.jsonl", count=COUNT)
    worker.stop()
    server.stop()


def evaluate(*args, key=API_KEY):
    return runner.invoke(app, ["eval", *map(str, args), "--geometry", "oracle", "--long-side", "96",
                               "--resamples", "500", "--api-key", key])  # fmt: skip


def totals(folder) -> dict:
    return {(r["group"], r["name"]): r["total"] for r in csv.DictReader((folder / "results.csv").open())}


def test_service_results_equal_in_process_and_resume(service, tmp_path):
    url, clean, broken, prompts = service
    result = evaluate(clean, "--compare", broken, "--prompts", prompts, "--out", tmp_path / "remote",
                      "--service", url, "--concurrency", "4", "--report", tmp_path / "report")  # fmt: skip
    assert result.exit_code == 0, result.output
    local = evaluate(clean, "--compare", broken, "--prompts", prompts, "--out", tmp_path / "local")
    assert local.exit_code == 0, local.output
    remote_totals = totals(tmp_path / "remote")
    assert len(remote_totals) == 2 * COUNT and remote_totals == totals(tmp_path / "local")
    records = ResultStore(tmp_path / "remote").records.values()
    assert all(r["source"] == url and r["job_id"] for r in records)
    (requested,) = [r for r in records if r["name"] == "move_right_2.npy" and r["group"] == "clean"]
    assert requested["result"]["terms"]["trajectory"]["metrics"]["target_source"] == "poses"
    # The pages are the worker's full reports (frames and re-renders), not result-only pages.
    page = tmp_path / "report" / "videos" / "clean" / f"{CLIPS[0][0]}_0.npy.html"
    assert page.read_text().count('class="frame-render"') == 6
    # A rerun reuses every result and every page.
    again = evaluate(clean, "--compare", broken, "--prompts", prompts, "--out", tmp_path / "remote",
                     "--service", url, "--report", tmp_path / "report")  # fmt: skip
    assert again.exit_code == 0 and "0 scored now, 8 reused" in " ".join(again.output.split())


def test_report_endpoint_auth_and_headers(service, tmp_path):
    url, clean, broken, prompts = service
    result = evaluate(clean, "--out", tmp_path, "--service", url, "--report", tmp_path / "report")
    assert result.exit_code == 0, result.output
    job_id = next(iter(ResultStore(tmp_path).records.values()))["job_id"]
    with httpx.Client(base_url=url, timeout=30) as client:
        ok = client.get(f"/v1/jobs/{job_id}/report", headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/html")
        assert ok.headers["content-security-policy"].startswith("default-src 'none'")
        assert client.get(f"/v1/jobs/{job_id}/report").status_code == 401
        foreign = client.get(f"/v1/jobs/{job_id}/report", headers={"Authorization": f"Bearer {OTHER_KEY}"})
        assert foreign.status_code == 404  # jobs are private to their key
        missing = client.get(f"/v1/jobs/{job_id}/report?item=5",
                             headers={"Authorization": f"Bearer {API_KEY}"})  # fmt: skip
        assert missing.status_code == 404 and missing.json()["code"] == "not-found"
    # Served with the endpoint's headers (its Content-Security-Policy), the page still loads
    # without a console message and with every image decoded.
    page = ok.content

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            for name, value in {**REPORT_HEADERS, "Content-Type": "text/html; charset=utf-8"}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        from tests.browser import run_chromium

        dom, console = run_chromium(f"http://127.0.0.1:{server.server_port}/", "--dump-dom")
    finally:
        server.shutdown()
    assert console == [], console  # a CSP violation would be logged here
    assert 'data-broken-images="0"' in dom and "<polyline" in dom


def test_items_without_report_keep_none(service, tmp_path):
    url, clean, _, _ = service
    result = evaluate(clean, "--out", tmp_path, "--service", url)
    assert result.exit_code == 0, result.output
    job_id = next(iter(ResultStore(tmp_path).records.values()))["job_id"]
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        job = c.get(f"/v1/jobs/{job_id}").json()
        assert job["items"][0]["report"] is None
        assert c.get(f"/v1/jobs/{job_id}/report").status_code == 404


def test_wrong_key_stops_the_run(service, tmp_path):
    url, clean, _, _ = service
    result = evaluate(clean, "--out", tmp_path, "--service", url, key="wrong-key-0123456789abcdef")
    assert result.exit_code == 1 and "refused the API key" in " ".join(result.output.split())
    assert not (tmp_path / "results.jsonl").exists()
