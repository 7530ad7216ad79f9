"""The operator console (`/ui`) in a real browser against a real 3-node cluster.

Debian's chromium, headless, driven through chromedriver by selenium; the cluster runs with
read, write and admin tokens and a real redis-server behind its cache. The page is opened on
a follower (a page served by the node that is killed cannot survive it: it talks only to its
own origin). The API calls that set the scene (sessions, locks, a deadlock, queue traffic)
go through the HTTP API as a user's client would; the page must show what they did.

One cluster and one browser for the module (CI time); the tests run in file order and the
last one kills the leader. After every test the browser's console must hold no error.
Screenshots of each view go to a temporary directory (printed), and to
`$DISTSYNC_CONSOLE_SHOTS` when set (how docs/console/*.png were made).
"""

from __future__ import annotations

import os
import shutil
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import diag, ready, wait_until
from needs_tools import require_tool

from distsync.cache.redis_proc import RedisServer
from distsync.local import LocalCluster, http_json

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

READ = "console-read-" + "r" * 20
WRITE = "console-write-" + "w" * 20
ADMIN = "console-admin-" + "a" * 20
ENV = {"DISTSYNC_READ_TOKEN": READ, "DISTSYNC_WRITE_TOKEN": WRITE,
       "DISTSYNC_ADMIN_TOKEN": ADMIN}
WAIT_S = 20.0  # generous: 2 shared cores; every wait is for a condition, never a sleep


def _tool(name: str, *alternatives: str) -> str:
    for n in (name, *alternatives):
        if shutil.which(n):
            return shutil.which(n) or n
    require_tool(name, "the operator console's browser tests drive it")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("console-screenshots")
    yield out
    print(f"\nconsole screenshots: {out}")
    keep = os.environ.get("DISTSYNC_CONSOLE_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in out.glob("*.png"):
            shutil.copy2(png, Path(keep) / png.name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = _tool("chromium", "chromium-browser")
    driver_path = _tool("chromedriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=Service(driver_path))
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def lc() -> Iterator[LocalCluster]:
    require_tool("redis-server", "the console's cache view reads a real backend")
    with RedisServer() as rs, LocalCluster(3, env=ENV, token=READ,
                                           extra_args=["--redis-url", rs.url]) as c:
        ready(c)
        yield c


@pytest.fixture(scope="module")
def page_node(lc: LocalCluster) -> str:
    """A follower: the page lives through the leader's death."""
    leader = ready(lc)
    return next(n for n in lc.nodes if n != leader)


@pytest.fixture(autouse=True)
def no_console_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test ends with an empty error log in the browser (JavaScript errors, failed
    loads, console.error): the page must handle what it meets, not spill it."""
    if "browser" not in request.fixturenames:
        yield
        return
    drv = request.getfixturevalue("browser")
    drv.get_log("browser")  # drop what an earlier test left
    yield
    errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"browser console errors: {errors}"


def api(lc: LocalCluster, method: str, path: str, body: Any = None,
        token: str = WRITE, timeout: float = 10.0) -> tuple[int, Any]:
    leader = lc.leader(timeout=WAIT_S)
    return http_json(method, f"{lc.nodes[leader].url}{path}", body, timeout=timeout,
                     headers={"Authorization": f"Bearer {token}"})


def ok(lc: LocalCluster, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    status, got = api(lc, method, path, body, **kw)
    assert status == 200, f"{method} {path} -> {status} {got}"
    return got


def until(drv: Any, lc: LocalCluster, cond: Callable[[], Any], what: str) -> Any:
    """Wait for a condition on the page; on timeout, fail with the page text and node logs."""
    def check(_: Any) -> Any:
        try:
            return cond()
        except StaleElementReferenceException:  # the poll re-rendered the table under us
            return False
    try:
        return WebDriverWait(drv, WAIT_S, poll_frequency=0.1).until(check)
    except TimeoutException:
        body = drv.find_element(By.TAG_NAME, "body").text
        msg = f"the page never showed: {what}\n--- page ---\n{body}"
        raise AssertionError(diag(lc, msg)) from None


# The page re-renders its tables on every poll, so an element found now may be gone a moment
# later: every read below takes what it needs in one script, which runs between renders.
_READ = """
return Array.from(document.querySelectorAll(arguments[0])).map((e) => {
  const out = {text: (e.innerText !== undefined ? e.innerText : e.textContent).trim()};
  for (const a of e.getAttributeNames()) out[a] = e.getAttribute(a);
  return out;
});
"""


def read(drv: Any, css: str) -> list[dict[str, str]]:
    """Text and attributes of every element matching `css`, read at one instant."""
    return drv.execute_script(_READ, css)


def text(drv: Any, css: str) -> str:
    found = read(drv, css)
    return found[0]["text"] if found else ""


def sign_in(drv: Any, lc: LocalCluster, node: str, token: str, view: str = "cluster") -> None:
    drv.get(f"{lc.nodes[node].url}/ui/#{view}")
    drv.execute_script("sessionStorage.clear()")
    drv.refresh()
    box = until(drv, lc, lambda: drv.find_element(By.ID, "token").is_displayed()
                and drv.find_element(By.ID, "token"), "the sign-in form")
    box.send_keys(token)
    drv.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    until(drv, lc, lambda: drv.find_element(By.ID, "main").is_displayed(), "the views")


def click(drv: Any, lc: LocalCluster, css: str, what: str) -> None:
    """Click the element once it is there; a re-render between finding and clicking (a stale
    element, which was not clicked) is retried."""
    def attempt() -> bool:
        found = drv.find_elements(By.CSS_SELECTOR, css)
        if not found:
            return False
        found[0].click()
        return True
    until(drv, lc, attempt, what)


def goto(drv: Any, view: str) -> None:
    drv.find_element(By.CSS_SELECTOR, f'#tabs a[data-view="{view}"]').click()


def confirm(drv: Any, lc: LocalCluster, answer: str) -> None:
    until(drv, lc, lambda: drv.find_element(By.ID, "confirm").is_displayed(), "the confirmation")
    click(drv, lc, f'#confirm button[value="{answer}"]', f"{answer} in the confirmation")


def shoot(drv: Any, shots: Path, name: str) -> None:
    height = drv.execute_script("return document.documentElement.scrollHeight")
    width = drv.get_window_size()["width"]
    drv.set_window_size(width, max(600, min(int(height) + 120, 2400)))
    drv.save_screenshot(str(shots / f"{name}.png"))


# -- the tests, in file order --------------------------------------------------------------


def test_page_needs_a_token_and_shows_the_leader(browser: Any, lc: LocalCluster,
                                                 page_node: str, shots: Path) -> None:
    drv = browser
    drv.get(f"{lc.nodes[page_node].url}/ui/")
    drv.execute_script("sessionStorage.clear()")
    drv.refresh()
    until(drv, lc, lambda: drv.find_element(By.ID, "login").is_displayed(), "the sign-in form")
    assert not drv.find_element(By.ID, "main").is_displayed()
    # A wrong token is refused and the data stays hidden.
    drv.find_element(By.ID, "token").send_keys("not-a-valid-token-" + "z" * 10)
    drv.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    until(drv, lc, lambda: "not valid" in text(drv, "#login-error"), "the refusal")
    assert not drv.find_element(By.ID, "main").is_displayed()

    sign_in(drv, lc, page_node, ADMIN)
    leader = ready(lc)
    until(drv, lc, lambda: text(drv, "#leader") == leader, f"leader {leader}")
    assert "admin role" in text(drv, "#whoami")
    rows = read(drv, "#members tbody tr")
    assert sorted(r["data-node"] for r in rows) == sorted(lc.nodes)
    (lead_row,) = [r for r in rows if r["data-node"] == leader]
    assert "leader" in lead_row["text"] and lead_row["data-role"] == "leader"
    # The token stays in this tab's sessionStorage only.
    assert drv.execute_script("return sessionStorage.getItem('distsync.console.token')") == ADMIN
    assert drv.execute_script("return localStorage.length") == 0
    shoot(drv, shots, "cluster")


def test_admin_actions_ask_first_and_use_the_api(browser: Any, lc: LocalCluster,
                                                 page_node: str) -> None:
    drv = browser
    leader = ready(lc)
    # Cancelled: nothing changes.
    click(drv, lc, f'button[data-action="remove"][data-node="{leader}"]', "the remove button")
    confirm(drv, lc, "cancel")
    assert sorted(m["id"] for m in ok(lc, "GET", "/v1/cluster/members")["members"]) == \
        sorted(lc.nodes)
    # Confirmed: leadership moves to the other follower (not the page's node: the last test
    # kills the leader and the page must outlive it).
    target = next(n for n in lc.nodes if n not in (leader, page_node))
    click(drv, lc, f'button[data-action="transfer"][data-node="{target}"]', "the transfer button")
    confirm(drv, lc, "ok")
    until(drv, lc, lambda: text(drv, "#leader") == target, f"leader {target} after transfer")
    assert lc.leader(timeout=WAIT_S) == target
    until(drv, lc, lambda: "leadership transferred" in text(drv, "#action-result"),
          "the action's result")
    until(drv, lc, lambda: leader_moved(text(drv, "#events"), leader, target),
          "the leader change as an event")


def leader_moved(events: str, old: str, new: str) -> bool:
    """Whether the console's events (newest first) show leadership going from `old` to
    `new`: as one change, or, when a poll landed in the moment a transfer leaves no leader
    known, as `old` lost and then `new` (both are what the console saw; CI caught the
    second)."""
    if f"{old} → {new}" in events:
        return True
    lost, found = events.find(f"leader {old} lost"), events.find(f"new leader {new}")
    return lost >= 0 and 0 <= found < lost


def test_leader_moved_reads_both_shapes_of_a_transfer() -> None:
    assert leader_moved("leader changed: n3 → n2 (term 3)", "n3", "n2")
    assert leader_moved("new leader n2 (term 3)\nleader n3 lost (term 3)", "n3", "n2")
    assert not leader_moved("leader n3 lost (term 3)\nnew leader n2 (term 3)", "n3", "n2")
    assert not leader_moved("leader changed: n2 → n3 (term 3)", "n3", "n2")
    assert not leader_moved("leader n3 lost (term 3)", "n3", "n2")


def test_lock_holders_waiters_and_a_deadlock_cycle(browser: Any, lc: LocalCluster,
                                                   shots: Path) -> None:
    drv = browser
    a = ok(lc, "POST", "/v1/sessions", {"ttl_ms": 60000, "name": "worker-a"})["session"]
    b = ok(lc, "POST", "/v1/sessions", {"ttl_ms": 60000, "name": "worker-b"})["session"]
    waiter = None
    try:
        assert ok(lc, "POST", "/v1/locks/orders/acquire", {"session": a})["granted"]
        assert ok(lc, "POST", "/v1/locks/invoices/acquire", {"session": b})["granted"]
        # a waits for invoices (held by b): its long poll runs in the background.
        waiter = threading.Thread(target=api, args=(lc, "POST", "/v1/locks/invoices/acquire",
                                                    {"session": a, "wait_ms": 60000}),
                                  daemon=True)
        waiter.start()
        wait_until(lc, lambda: ok(lc, "GET", "/v1/locks/invoices")["waiters"], WAIT_S,
                   "a to wait for invoices")
        # b asking for orders would close the cycle: refused at once, the cycle named.
        status, dl = api(lc, "POST", "/v1/locks/orders/acquire", {"session": b, "wait_ms": 60000})
        assert status == 409 and dl["error"] == "deadlock", dl
        assert dl["cycle"] == [b, a] and dl["locks"] == ["orders", "invoices"]

        goto(drv, "locks")
        until(drv, lc, lambda: drv.find_elements(
            By.CSS_SELECTOR, f'#locks tr[data-lock="invoices"] li[data-waiter="{a}"]'),
            "a waiting for invoices")
        held = text(drv, f'#locks tr[data-lock="orders"] li[data-holder="{a}"]')
        token = ok(lc, "GET", "/v1/locks/orders")["holders"][0]["token"]
        assert f"token {token}" in held and "exclusive" in held, held
        assert drv.find_elements(
            By.CSS_SELECTOR, f'#locks tr[data-lock="invoices"] li[data-holder="{b}"]')
        # The sessions' keep-alive view: the leader's lease remaining for each.
        until(drv, lc, lambda: " s" in text(drv, f'#sessions tr[data-session="{a}"] td:nth-of-type(3)'),
              "a's lease remaining")
        # The refused cycle, as the detector reported it, in words and in the graph.
        item = until(drv, lc, lambda: text(drv, f'#deadlocks li[data-cycle="{b} {a}"]'),
                     "the deadlock record")
        assert f"{b} waits for orders held by {a}" in item
        assert f"{a} waits for invoices held by {b}" in item
        cycle = {(e["data-from"], e["data-to"]) for e in read(drv, "#graph g.edge.cycle")}
        assert cycle == {(b, "orders"), ("orders", a), (a, "invoices"), ("invoices", b)}
        marked = {g["data-id"] for g in read(drv, "#graph g.in-cycle")}
        assert marked == {a, b, "orders", "invoices"}
        # Readable without colour: the cycle's edges say so in text.
        labels = [t["text"] for t in read(drv, "#graph g.edge.cycle text")]
        assert len(labels) == 4 and all("cycle" in t for t in labels), labels
        shoot(drv, shots, "locks")
    finally:
        for s in (a, b):
            api(lc, "DELETE", f"/v1/sessions/{s}")
        if waiter is not None:
            waiter.join(timeout=WAIT_S)
    until(drv, lc, lambda: not drv.find_elements(By.CSS_SELECTOR, '#locks tr[data-lock="orders"]'),
          "the locks gone after the sessions closed")


def _count(drv: Any, queue: str, what: str) -> str:
    return text(drv, f'#queues tr[data-queue="{queue}"] td[data-count="{what}"]')


def test_queue_counts_follow_enqueue_dequeue_and_ack(browser: Any, lc: LocalCluster,
                                                     shots: Path) -> None:
    drv = browser
    goto(drv, "queues")
    ok(lc, "PUT", "/v1/queues/jobs", {"partitions": 4})
    ok(lc, "POST", "/v1/queues/jobs/messages",
       {"messages": [{"body": {"n": i}, "key": f"user-{i}"} for i in range(5)]})
    until(drv, lc, lambda: _count(drv, "jobs", "ready") == "5", "5 ready in jobs")
    got = ok(lc, "POST", "/v1/queues/jobs/dequeue", {"consumer": "worker-1", "max": 2})
    assert len(got["messages"]) == 2
    until(drv, lc, lambda: (_count(drv, "jobs", "ready"), _count(drv, "jobs", "in_flight"))
          == ("3", "2"), "3 ready and 2 in flight")
    ok(lc, "POST", "/v1/queues/jobs/ack", {"receipts": [m["receipt"] for m in got["messages"]]})
    until(drv, lc, lambda: (_count(drv, "jobs", "ready"), _count(drv, "jobs", "in_flight"))
          == ("3", "0"), "the acked messages gone")
    # The partition -> consumer assignment of the queue's hash ring.
    click(drv, lc, '#queues tr[data-queue="jobs"] button', "the jobs queue")
    until(drv, lc, lambda: "worker-1" in text(drv, "#partitions"), "worker-1 owning partitions")
    assert len(drv.find_elements(By.CSS_SELECTOR, "#partitions tbody tr")) == 4
    assert "null" not in text(drv, "#queue-detail") and "undefined" not in text(drv, "#view-queues")
    shoot(drv, shots, "queues")


def test_dead_letters_are_counted_peeked_and_redriven_by_an_admin(
    browser: Any, lc: LocalCluster, shots: Path,
) -> None:
    drv = browser
    ok(lc, "PUT", "/v1/queues/payments", {"max_deliveries": 1})
    ok(lc, "POST", "/v1/queues/payments/messages", {"body": "charge-7"})
    got = ok(lc, "POST", "/v1/queues/payments/dequeue", {"consumer": "w"})["messages"]
    ok(lc, "POST", "/v1/queues/payments/nack", {"receipt": got[0]["receipt"], "error": "boom"})
    until(drv, lc, lambda: _count(drv, "payments", "dead_lettered") == "1", "1 dead-lettered")
    until(drv, lc, lambda: _count(drv, "payments.dlq", "ready") == "1", "1 in payments.dlq")
    click(drv, lc, '#queues tr[data-queue="payments"] button', "the payments queue")
    # Peek first: the dead letter and why, left in place.
    click(drv, lc, 'button[data-peek="payments.dlq"]', "the peek button")
    row = until(drv, lc, lambda: text(drv, '#peek[data-queue="payments.dlq"] tbody tr'),
                "the peeked dead letter")
    assert "charge-7" in row and "from payments after 1 deliveries: boom" in row, row
    shoot(drv, shots, "dead-letters")
    click(drv, lc, 'button[data-action="redrive"]', "the redrive button")
    confirm(drv, lc, "ok")
    until(drv, lc, lambda: "1 message(s) moved" in text(drv, "#action-result"), "the redrive")
    until(drv, lc, lambda: (_count(drv, "payments", "ready"), _count(drv, "payments.dlq", "ready"))
          == ("1", "0"), "the message back in payments")
    again = ok(lc, "POST", "/v1/queues/payments/dequeue", {"consumer": "w"})["messages"]
    assert [m["body"] for m in again] == ["charge-7"]
    ok(lc, "POST", "/v1/queues/payments/ack", {"receipt": again[0]["receipt"]})


def test_cache_view_shows_every_node(browser: Any, lc: LocalCluster, shots: Path) -> None:
    drv = browser
    headers = {"Authorization": f"Bearer {WRITE}"}
    for nid, nd in lc.nodes.items():  # a write and two reads (hits) through each node
        url = f"{nd.url}/v1/cache/console-{nid}"
        urllib.request.urlopen(urllib.request.Request(
            url, data=b"v", method="PUT", headers=headers), timeout=10).read()
        for _ in range(2):
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10).read()
    goto(drv, "cache")

    def hits(nid: str) -> int:
        cell = text(drv, f'#cache tr[data-node="{nid}"] td:nth-of-type(2)')
        return int(cell.replace(",", "") or -1)

    for nid in lc.nodes:
        until(drv, lc, lambda nid=nid: hits(nid) >= 2, f"{nid}'s cache hits")
        row = text(drv, f'#cache tr[data-node="{nid}"]')
        assert "%" in row and "redis · no errors" in row, row
    shoot(drv, shots, "cache")


def test_read_only_token_sees_no_admin_buttons(browser: Any, lc: LocalCluster,
                                               page_node: str, shots: Path) -> None:
    drv = browser
    sign_in(drv, lc, page_node, READ)
    until(drv, lc, lambda: len(drv.find_elements(By.CSS_SELECTOR, "#members tbody tr")) == 3,
          "the members")
    assert "read role (read-only view)" in text(drv, "#whoami")
    for view in ("cluster", "queues", "locks", "cache"):
        goto(drv, view)
        until(drv, lc, lambda: drv.execute_script("return document.body.dataset.updated"),
              "an update")
        if view == "queues":
            click(drv, lc, '#queues tr[data-queue="payments"] button', "the payments queue")
            until(drv, lc, lambda: "Queue payments" in text(drv, "#queue-detail"), "the detail")
        buttons = read(drv, "button[data-action]")
        assert buttons == [], f"{view}: admin buttons given to a read token: {buttons}"
    goto(drv, "cluster")
    shoot(drv, shots, "read-only")


def test_phone_width(browser: Any, lc: LocalCluster, page_node: str, shots: Path) -> None:
    drv = browser
    sign_in(drv, lc, page_node, ADMIN)
    drv.set_window_size(390, 844)
    try:
        for view in ("cluster", "queues"):
            goto(drv, view)
            until(drv, lc, lambda v=view: drv.find_elements(By.CSS_SELECTOR, f"#view-{v} tbody tr"),
                  f"the {view} view")
            # Nothing wider than the screen but the tables' own scroll boxes.
            wide = drv.execute_script("return document.documentElement.scrollWidth")
            assert wide <= 390, f"{view}: the page is {wide} px wide on a 390 px screen"
            shoot(drv, shots, f"phone-{view}")
    finally:
        drv.set_window_size(1280, 900)


def test_page_follows_a_leader_killed(browser: Any, lc: LocalCluster, page_node: str,
                                      shots: Path) -> None:
    drv = browser
    goto(drv, "cluster")
    old = ready(lc)
    assert old != page_node
    until(drv, lc, lambda: text(drv, "#leader") == old, f"leader {old}")
    lc.kill(old)
    new = lc.leader(timeout=WAIT_S, among=[n for n in lc.nodes if n != old])
    until(drv, lc, lambda: text(drv, "#leader") == new, f"the new leader {new}")
    until(drv, lc, lambda: "down" in text(drv, f'#members tr[data-node="{old}"]'),
          f"{old} shown down")
    events = text(drv, "#events")
    assert f"{old} stopped answering" in events
    assert f"{old} lost" in events or f"{old} → {new}" in events, events
    assert "not answering" in text(drv, "#banner") and old in text(drv, "#banner")
    shoot(drv, shots, "failover")
