#!/usr/bin/python3
"""pos-loadtest relay / control --report DIR against a real relay, redis-server
and pos-discovery on loopback: the CSV has a header and one row per second
whose counts add up to the totals the command printed, handshakes.csv one row
per handshake, and report.html one <svg> per chart and no reference to
anything outside the page (no URL, no script), so it opens offline. A
--report that cannot be written fails before any load, with the reason.
"""
import csv
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import harness  # noqa: E402
from harness import binary, run, test, tmpdir  # noqa: E402
from test_relay_run import stack  # noqa: E402

del harness._tests[:]  # the tests of test_relay_run run on their own

LOADTEST = binary("loadtest/pos-loadtest")
SANITIZERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def loadtest(*args, ok=(0,)):
    r = subprocess.run([LOADTEST, *args], capture_output=True, text=True, timeout=120)
    for marker in SANITIZERS:
        assert marker not in r.stderr, r.stderr[-4000:]
    assert r.returncode in ok, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows, f"{path} is empty"
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


class Page(HTMLParser):
    """Counts the <svg> elements and their titles; collects every attribute value."""

    def __init__(self):
        super().__init__()
        self.svgs, self.titles, self.attrs, self.stack = 0, [], [], []
        self.in_title = False

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)
        self.svgs += tag == "svg"
        self.in_title = tag == "title" and "svg" in self.stack
        self.attrs += [v or "" for _, v in attrs]

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop() != tag:
            pass
        self.in_title = False

    def handle_data(self, data):
        if self.in_title and self.stack[-2:] == ["svg", "title"]:
            self.titles.append(data)


def check_page(path, n_charts):
    html = open(path, encoding="utf-8").read()
    p = Page()
    p.feed(html)
    assert p.svgs == n_charts, f"{path}: {p.svgs} <svg>, wanted one per chart ({n_charts})"
    for bad in ("http:", "https:", "//", "<script", "<link", "<img", "<iframe", "url(",
                "@import", "href="):
        assert bad not in html.lower(), f"{path} references something outside it: {bad!r}"
    return p.titles, html


@test
def relay_report_has_series_adding_up_and_an_offline_page():
    redis, disc, relay = stack()
    token = relay.token()
    out = os.path.join(tmpdir(), "new-dir")  # created by the command
    r = loadtest("relay", "--api-url", disc.url, "--relay-id", relay.id, "--token", token,
                 "--circuits", "2", "--size", "200", "--duration", "3", "--rate", "1000",
                 "--json", "--report", out)
    tot = json.loads(r.stdout)
    print(f"    printed: {tot}")
    head, rows = read_csv(os.path.join(out, "series.csv"))
    assert head == ["second", "sent", "delivered", "lost", "throughput_mbit_s", "p50_us",
                    "p99_us", "p999_us"], head
    assert [int(x["second"]) for x in rows] == [0, 1, 2], rows
    for key in ("sent", "delivered", "lost"):
        total = sum(int(x[key]) for x in rows)
        assert total == tot[key], f"{key}: rows add up to {total}, printed {tot[key]}"
    for x in rows:
        sent, got = int(x["sent"]), int(x["delivered"])
        assert sent >= 100, f"every second of a --rate 1000 run sends: {x}"
        assert got + int(x["lost"]) == sent, x
        assert abs(float(x["throughput_mbit_s"]) - got * 200 * 8 / 1e6) < 0.01, x
        if got:
            assert 0 <= float(x["p50_us"]) <= float(x["p99_us"]) <= float(x["p999_us"]), x
    hhead, hs = read_csv(os.path.join(out, "handshakes.csv"))
    assert hhead == ["handshake", "handshake_ms"] and len(hs) == 4, (hhead, hs)  # 2N clients
    assert all(float(h["handshake_ms"]) > 0 for h in hs), hs
    titles, html = check_page(os.path.join(out, "report.html"), 5)
    print(f"    charts: {titles}")
    for want in ("Datagrams per second", "throughput", "Lost", "latency", "Handshake time"):
        assert any(want.lower() in t.lower() for t in titles), (want, titles)
    assert f"<td>{tot['sent']}</td>" in html, "the page's summary shows the totals"


@test
def control_report_has_series_adding_up_and_an_offline_page():
    redis, disc, relay = stack()
    token = relay.token()
    out = tmpdir()
    r = loadtest("control", "--addr", f"127.0.0.1:{relay.port}", "--peer-id", relay.peer_id,
                 "--token", token, "--conns", "20", "--concurrency", "5", "--endpoints", "2",
                 "--json", "--report", out)
    tot = json.loads(r.stdout)
    print(f"    printed: {tot}")
    head, rows = read_csv(os.path.join(out, "series.csv"))
    assert head == ["second", "attempted", "accepted", "refused", "failed",
                    "handshake_p50_ms", "handshake_p99_ms"], head
    assert [int(x["second"]) for x in rows] == list(range(len(rows))) and rows, rows
    for key in ("attempted", "accepted", "refused", "failed"):
        total = sum(int(x[key]) for x in rows)
        assert total == tot[key], f"{key}: rows add up to {total}, printed {tot[key]}"
    assert tot["accepted"] == 20, tot
    _, hs = read_csv(os.path.join(out, "handshakes.csv"))
    assert len(hs) == 20, hs
    p50 = sorted(float(h["handshake_ms"]) for h in hs)[9]
    assert abs(p50 - tot["handshake_p50_ms"]) < 0.1, (p50, tot)
    titles, _ = check_page(os.path.join(out, "report.html"), 4)
    print(f"    charts: {titles}")


@test
def unwritable_report_dir_fails_before_the_load():
    redis, disc, relay = stack()
    token = relay.token()
    afile = os.path.join(tmpdir(), "a-file")
    open(afile, "w").close()
    for bad, why in ((afile, "not a directory"), ("/proc/no/such/dir", "cannot create")):
        r = loadtest("relay", "--api-url", disc.url, "--token", token, "--circuits", "1",
                     "--size", "100", "--duration", "1", "--report", bad, ok=(1,))
        assert "--report" in r.stderr and why in r.stderr and not r.stdout, r.stderr
        r = loadtest("control", "--addr", f"127.0.0.1:{relay.port}", "--peer-id", relay.peer_id,
                     "--token", token, "--conns", "1", "--report", bad, ok=(1,))
        assert "--report" in r.stderr and why in r.stderr and not r.stdout, r.stderr
    m = relay.metrics()
    assert not m.get("pos_relay_auth_ok_total"), "no client may have connected"


if __name__ == "__main__":
    run("loadtest-report")
