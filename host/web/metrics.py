"""The health figures as Prometheus metrics, in a registry of the app's own (not the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from .health import BADGES


class WebMetrics:
    """Gauges set from each health judgement and the run list; `render` gives the text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.health = Gauge("nvscope_health", "health badge per source: 0 ok, 1 warn, 2 down", ["source"], registry=r)
        self.up = Gauge("nvscope_rig_up", "1 if the rig answered the last status request", registry=r)
        self.uptime = Gauge("nvscope_rig_uptime_seconds", "rig process uptime", registry=r)
        self.unacked = Gauge("nvscope_rig_journal_unacked", "messages in the rig's journal not yet acknowledged",
                             registry=r)
        self.capacity = Gauge("nvscope_rig_journal_capacity", "capacity of the rig's journal (messages)", registry=r)
        self.ack_age = Gauge("nvscope_rig_last_ack_age_seconds", "age of the host's last acknowledgement at the rig",
                             registry=r)
        self.malformed = Gauge("nvscope_malformed_frames", "malformed frames dropped (cumulative)", ["daemon"],
                               registry=r)
        self.heard = Gauge("nvscope_host_heard_seconds_ago", "time since the rig last heard its host (heartbeat)",
                           registry=r)
        self.host_connected = Gauge("nvscope_host_connected", "1 if a host is connected to the rig", registry=r)
        self.stored = Gauge("nvscope_host_stored_messages", "messages the host reports stored", registry=r)
        self.ack_latency = Gauge("nvscope_host_ack_latency_seconds",
                                 "the host's acknowledgement latency, when its report carries it", registry=r)
        self.disk_free = Gauge("nvscope_disk_free_bytes", "free space under the data folder", registry=r)
        self.runs = Gauge("nvscope_runs", "run files under the data folder by status", ["status"], registry=r)
        self.run_done = Gauge("nvscope_run_done", "steps stored of the running runs", ["run_id"], registry=r)
        self.run_planned = Gauge("nvscope_run_planned", "steps planned of the running runs", ["run_id"], registry=r)
        self.events = Gauge("nvscope_web_events", "sequence number of the last event published", registry=r)

    def update_health(self, h: dict) -> None:
        """Set the gauges from a health judgement (health.judge)."""
        s = h["sources"]
        for name, src in s.items():
            self.health.labels(name).set(BADGES.index(src["badge"]))
        rig, host, disk = s["rig"], s["host"], s["disk"]
        self.up.set(0 if "state" not in rig else 1)
        _set(self.uptime, rig.get("uptime_s"))
        _set(self.unacked, rig.get("journal_unacked"))
        _set(self.capacity, rig.get("journal_capacity"))
        _set(self.ack_age, rig.get("last_ack_age_s"))
        _set(self.malformed.labels("rig"), rig.get("malformed"))
        _set(self.malformed.labels("host"), host.get("malformed"))
        _set(self.heard, host.get("heard_s_ago"))
        _set(self.host_connected, None if "connected" not in host else bool(host.get("connected")))
        _set(self.stored, host.get("stored"))
        _set(self.ack_latency, host.get("ack_latency_s"))
        _set(self.disk_free, disk.get("free_bytes"))

    def update_runs(self, runs: list[dict], last_seq: int) -> None:
        """Set the run gauges from the run list."""
        self.runs.clear()
        self.run_done.clear()
        self.run_planned.clear()
        for status in ("running", "completed", "stopped", "failed", "unreadable"):
            self.runs.labels(status).set(sum(r["status"] == status for r in runs))
        for r in runs:
            if r["status"] == "running":
                self.run_done.labels(r["run_id"]).set(r["n_done"])
                self.run_planned.labels(r["run_id"]).set(r["n_planned"])
        self.events.set(last_seq)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


def _set(gauge: Gauge, value) -> None:
    if isinstance(value, (int, float)):  # (bool too)
        gauge.set(float(value))
    else:
        gauge.set(float("nan"))
