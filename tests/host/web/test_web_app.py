"""The web view's HTTP side: /healthz (200 while every source is ok or warn, 503 when one is down),
/metrics (Prometheus, the app's own registry), the event stream with resume over a real server, the page
and its local Plotly.js, and `nvscope web --bind` beyond loopback refused without keys."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from nvscope.host.cli import main
from nvscope.host.web.app import WebConfig, WebView, create_app

RIG_OK = {"daemon": "rig", "state": "running", "version": "0.1", "uptime_s": 12.5,
          "run": {"run_id": "srm-x", "run_kind": "srm", "done": 7, "planned": 30, "next_seq": 9},
          "journal": {"directory": "/spool", "unacked": 3, "capacity": 1000},
          "last_ack": {"run_id": "srm-x", "seq": 5, "age_s": 0.02},
          "host": {"id": "host-1", "connected": True, "heard_s_ago": 0.4, "silent": False,
                   "reported": {"stored": 40, "duplicates": 1, "malformed": 0, "out": "/data", "runs": {}}},
          "malformed": 2, "refused": 0, "replays": 1}


class FakeStatus:
    """A rig's status answers, set by the test (None: no answer)."""

    def __init__(self, info):
        self.info = info

    def __call__(self):
        return self.info


def _view(tmp_path, info) -> tuple[WebView, FakeStatus]:
    source = FakeStatus(info)
    return WebView(WebConfig(tmp_path, endpoint="tcp://127.0.0.1:5557"), status_source=source), source


def test_healthz_is_200_when_ok_or_warn_and_503_when_a_source_is_down(tmp_path):
    view, source = _view(tmp_path, RIG_OK)
    client = TestClient(create_app(view, start=False))
    view.health.poll()
    r = client.get("/healthz")
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["status"] == "ok" and {k: v["badge"] for k, v in h["sources"].items()} == \
        {"rig": "ok", "host": "ok", "disk": "ok"}
    rig, host = h["sources"]["rig"], h["sources"]["host"]
    assert rig["journal_unacked"] == 3 and rig["last_ack_age_s"] == 0.02 and rig["malformed"] == 2
    assert host["heard_s_ago"] == 0.4 and host["stored"] == 40 and h["sources"]["disk"]["free_bytes"] > 0

    source.info = {**RIG_OK, "journal": {"unacked": 600, "capacity": 1000}, "malformed": 5}  # malformed grew
    view.health.poll()
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "warn"
    assert "journal 600 of 1000" in r.json()["sources"]["rig"]["reason"]
    assert "malformed frames" in r.json()["sources"]["rig"]["reason"]

    source.info = {**RIG_OK, "host": {**RIG_OK["host"], "silent": True, "heard_s_ago": 9.0}}
    view.health.poll()
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["sources"]["host"]["badge"] == "down"
    assert "host silent for 9.0 s" in r.json()["sources"]["host"]["reason"]

    source.info = None  # the rig does not answer
    view.health.poll()
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["sources"]["rig"]["badge"] == "down"
    assert "no answer from the rig at tcp://127.0.0.1:5557" in r.json()["sources"]["rig"]["reason"]


def test_metrics_carry_the_health_figures_in_the_apps_own_registry(tmp_path):
    view, _ = _view(tmp_path, RIG_OK)
    client = TestClient(create_app(view, start=False))
    view.health.poll()
    text = client.get("/metrics").text
    for line in ('nvscope_health{source="rig"} 0.0', 'nvscope_health{source="host"} 0.0',
                 "nvscope_rig_journal_unacked 3.0", "nvscope_rig_journal_capacity 1000.0",
                 "nvscope_rig_last_ack_age_seconds 0.02", 'nvscope_malformed_frames{daemon="rig"} 2.0',
                 'nvscope_malformed_frames{daemon="host"} 0.0', "nvscope_host_heard_seconds_ago 0.4",
                 "nvscope_rig_uptime_seconds 12.5", "nvscope_rig_up 1.0", 'nvscope_runs{status="running"} 0.0'):
        assert line in text, line
    assert "nvscope_disk_free_bytes " in text
    assert REGISTRY.get_sample_value("nvscope_rig_journal_unacked") is None  # not the global registry
    _view(tmp_path, RIG_OK)  # a second app registers its own gauges without a clash


def test_the_page_and_its_local_plotly_are_served(tmp_path):
    view, _ = _view(tmp_path, None)
    client = TestClient(create_app(view, start=False))
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/static/plotly.min.js"' in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from the internet
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000 and b"plotly" in js.content[:2000].lower()
    assert client.get("/static/app.js").status_code == 200


def _read_events(client: httpx.Client, url: str, n: int, headers=None) -> list[tuple[int, str, dict]]:
    out = []
    with client.stream("GET", url, headers=headers or {}, timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        ev: dict = {}
        for line in r.iter_lines():
            if line.startswith("id: "):
                ev["id"] = int(line[4:])
            elif line.startswith("event: "):
                ev["event"] = line[7:]
            elif line.startswith("data: "):
                ev["data"] = json.loads(line[6:])
            elif line == "" and "event" in ev:
                out.append((ev["id"], ev["event"], ev["data"]))
                ev = {}
                if len(out) == n:
                    break
    return out


def test_event_stream_resumes_after_last_event_id_and_sends_a_snapshot_when_too_old(tmp_path, serve, swmr_writer):
    view, _ = _view(tmp_path, RIG_OK)
    served = serve(create_app(view))
    writer = swmr_writer(tmp_path / "srm-live.h5", nx=4, ny=4)
    with httpx.Client(base_url=served.url) as client:
        first = _read_events(client, "/events", 1)
        assert first[0][1] == "snapshot"
        for _ in range(4):
            writer.pixels(2)
            time.sleep(0.15)  # the tailer reads every 50 ms: one delta per write
        deadline = time.monotonic() + 10
        while view.tailer.files and view.tailer.files[tmp_path / "srm-live.h5"].rows["pixels"] < 8:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pixel_events = [e for e in view.ring.since(0) if e.type == "pixels"]
        assert len(pixel_events) >= 2  # (several writes may be read at once)
        rows = [r for e in pixel_events for r in range(e.data["first"], e.data["first"] + len(e.data["index"]))]
        assert rows == list(range(8))  # every row once, in order
        resume_at = pixel_events[0].seq  # a page that saw the first delta, then lost its connection
        wanted = view.ring.since(resume_at)
        got = _read_events(client, "/events", len(wanted), headers={"Last-Event-ID": str(resume_at)})
        assert [g[0] for g in got] == [e.seq for e in wanted]  # exactly the missed events, in order
        seen = len(pixel_events[0].data["index"])
        assert [r for g in got if g[1] == "pixels" for r in g[2]["index"]] == list(range(seen, 8))
        got = _read_events(client, f"/events?since={resume_at}", len(wanted))
        assert [g[0] for g in got] == [e.seq for e in wanted]
        ids = [g[0] for g in _read_events(client, "/events?since=0", 5)]
        assert ids == sorted(ids) and len(set(ids)) == 5  # monotone
        view.ring._events.clear()  # those events fell out of the ring: a snapshot instead
        got = _read_events(client, f"/events?since={resume_at}", 1)
        assert got[0][1] == "snapshot" and got[0][2]["data"]["srm-live"]["columns"]["index"] == list(range(8))
        writer.pixels(1)  # a live delta follows the snapshot
        live = _read_events(client, f"/events?since={view.ring.last_seq}", 1)
        assert live[0][1] in ("pixels", "run", "health")


def test_bind_beyond_loopback_is_refused_without_keys(tmp_path, capsys):
    assert main(["web", "--data", str(tmp_path), "--bind", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--bind 0.0.0.0: beyond loopback" in err and "--key" in err
    assert main(["web", "--data", str(tmp_path), "--key", "k.key_secret"]) == 2
    assert "--rig-key: missing" in capsys.readouterr().err


@pytest.mark.parametrize("bind", ["127.0.0.1", "::1", "localhost"])
def test_loopback_binds_pass_the_check(tmp_path, bind):
    import argparse

    from nvscope.host.web.cli import check_web_args

    args = argparse.Namespace(key=None, rig_key=None, port=8080, tail_interval=0.05, bind=bind, data=str(tmp_path))
    assert check_web_args(args) is None


def test_nvscope_web_serves_until_sigterm_and_exits_0(tmp_path):
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "junk.h5").write_bytes(b"junk")
    proc = subprocess.Popen([sys.executable, "-m", "nvscope.host.cli", "web", "--data", str(tmp_path), "--port",
                             str(port), "--connect", "tcp://127.0.0.1:1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith(f"nvscope web: http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status_code == 503 and r.json()["sources"]["rig"]["badge"] == "down"  # no rig there
        deadline = time.monotonic() + 10
        while not any(x["status"] == "unreadable" for x in httpx.get(f"http://127.0.0.1:{port}/api/runs").json()):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, proc.stderr.read()


def test_disk_space_badges():
    from nvscope.host.web.health import Counters, judge

    def disk(free):
        return judge(RIG_OK, (free, 10 << 30), Counters(), 0.0)["sources"]["disk"]

    assert disk(5 << 30)["badge"] == "ok"
    assert disk(500 << 20)["badge"] == "warn" and "GiB free" in disk(500 << 20)["reason"]
    assert disk(50 << 20)["badge"] == "down" and disk(50 << 20)["reason"] == "50 MiB free"
    assert judge(RIG_OK, None, Counters(), 0.0)["sources"]["disk"]["badge"] == "down"  # no data folder
