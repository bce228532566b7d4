"""The report of a deliberately bad run, looked at as a person would: in headless Chromium.

The run is the centred eight-schools model, a funnel, with 20 warmup steps, so the sampler
diverges. Chromium is driven over its DevTools protocol on a pipe
(``--remote-debugging-pipe``: NUL-separated JSON on file descriptors 3 and 4), so the test
needs nothing beyond the standard library and Debian's ``chromium`` (which ``./dev test``
installs when missing).
"""

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time

import jax
import numpyro
import numpyro.distributions as dist
import pytest

import inferax
from inferax import diagnostics, examples, samplers

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


def centred_eight_schools(J, sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


@pytest.fixture(scope="module")
def bad_run():
    data = examples.EIGHT_SCHOOLS
    target = inferax.from_numpyro(centred_eight_schools, data["J"], data["sigma"], y=data["y"])
    return inferax.sample(
        target,
        samplers.hmc(num_integration_steps=8),
        jax.random.key(0),
        num_chains=2,
        num_warmup=20,
        num_samples=200,
        progress=False,
    )


@pytest.fixture(scope="module")
def bad_report(bad_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "bad.html"
    return diagnostics.report(bad_run.to_datatree(), path, title="bad <run>")


def test_a_seeded_divergence_is_the_first_finding(bad_run):
    findings = diagnostics.check(bad_run)  # a Posterior works as well as its DataTree
    first = findings[0]
    assert first.check == "diverging" and first.severity == "error"
    assert int(bad_run.stats["diverging"].sum()) == first.value > 0
    line = str(first)
    assert "\n" not in line and line.startswith("error: ") and "target_acceptance_rate" in line


def test_the_report_is_self_contained_with_findings_first(bad_report):
    page = bad_report.read_text()
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    assert "<script" not in page and "plot-error'>" not in page
    images = re.findall(r"<img src='([^']*)'", page)
    assert len(images) == 5 and all(i.startswith("data:image/png;base64,") for i in images)
    assert "<title>bad &lt;run&gt;</title>" in page
    assert page.index("id='findings'") < page.index("<h3>Summary</h3>")
    assert page.index("<h3>Summary</h3>") < page.index("<figcaption>Trace")
    for caption in (
        "Trace",
        "Rank",
        "Pairs (divergences in red)",
        "Energy and E-BFMI",
        "Autocorrelation",
    ):
        assert f"<figcaption>{caption}</figcaption>" in page
    assert "theta[7]" in page and "hmc(num_integration_steps=8" in page


class Chromium:
    """A headless Chromium, driven over the DevTools protocol on a pipe."""

    def __init__(self, executable: str, profile: str):
        # Pipe ends at fds >= 10, so that moving them to 3 and 4 in the child cannot clash;
        # bash (dash takes single-digit fds only) moves them there and execs Chromium, so
        # no Python runs between fork and exec.
        ends = [*os.pipe(), *os.pipe()]
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in ends]
        for fd in ends:
            os.close(fd)
        to_browser_r, self._to_browser, self._from_browser, from_browser_w = high
        wire = (
            f"exec 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- "
            f'{from_browser_w}>&-; exec "$@"'
        )
        self.process = subprocess.Popen(
            [
                "bash",
                "-c",
                wire,
                "bash",
                executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(to_browser_r, from_browser_w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        reply = self.wait(lambda m: m.get("id") == self._next_id, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait(self, predicate, timeout: float = 30.0) -> dict:
        """The first message, event or reply, for which ``predicate`` holds."""
        for event in self.events:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if predicate(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                self._buffer += os.read(self._from_browser, 1 << 20)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if executable is None:
        pytest.skip("Chromium is not installed (./dev test installs Debian's chromium)")
    chromium = Chromium(executable, str(tmp_path_factory.mktemp("chromium-profile")))
    yield chromium
    chromium.close()


def open_page(browser: Chromium, url: str) -> str:
    """Opens ``url`` in a new tab, waits for its load event, returns the tab's session."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"
    ]
    for domain in ("Runtime", "Log", "Page"):
        browser.send(f"{domain}.enable", session=session)
    browser.send("Page.navigate", {"url": url}, session=session)
    browser.wait(
        lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session
    )
    return session


def evaluate(browser: Chromium, session: str, expression: str):
    result = browser.send(
        "Runtime.evaluate",
        {"expression": expression, "returnByValue": True, "awaitPromise": True},
        session=session,
    )
    if "exceptionDetails" in result:
        raise AssertionError(result["exceptionDetails"])
    return result["result"]["value"]


def console_errors(browser: Chromium, session: str) -> list[str]:
    errors = []
    for event in browser.events:
        if event.get("sessionId") != session:
            continue
        params = event.get("params", {})
        method = event.get("method")
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(json.dumps(params.get("args")))
        elif method == "Runtime.exceptionThrown":
            errors.append(json.dumps(params.get("exceptionDetails")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(params["entry"].get("text", ""))
    return errors


# Each image drawn onto a canvas: blank means every pixel has the same colour.
IMAGES_JS = """
(async () => Promise.all([...document.images].map(async (img) => {
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  for (let i = 0; i < pixels.length && colours.size < 3; i += 4 * 7) {
    colours.add(pixels.slice(i, i + 4).join(','));
  }
  const box = img.getBoundingClientRect();
  return {alt: img.alt, width: img.naturalWidth, height: img.naturalHeight,
          shownWidth: box.width, colours: colours.size};
})))()
"""

FINDING_JS = """
(() => {
  const finding = document.querySelector('#findings .finding.error[data-check="diverging"]');
  if (!finding) return null;
  const box = finding.getBoundingClientRect();
  const summary = [...document.querySelectorAll('h3')].find(h => h.textContent === 'Summary');
  return {text: finding.innerText, background: getComputedStyle(finding).backgroundColor,
          top: box.top, height: box.height,
          beforeSummary: summary.getBoundingClientRect().top > box.top};
})()
"""


def test_report_renders_in_chromium(bad_report, bad_run, browser):
    started = time.perf_counter()
    session = open_page(browser, bad_report.resolve().as_uri())

    images = evaluate(browser, session, IMAGES_JS)
    assert len(images) == 5
    for image in images:
        assert image["width"] > 100 and image["height"] > 100, image
        assert image["shownWidth"] > 100, image
        assert image["colours"] > 1, f"blank image: {image['alt']}"

    finding = evaluate(browser, session, FINDING_JS)
    assert finding is not None, "no divergence finding on the page"
    divergences = int(bad_run.stats["diverging"].sum())
    assert f"{divergences} of 400 transitions diverged" in finding["text"]
    assert finding["height"] > 0 and finding["beforeSummary"]
    assert finding["background"] == "rgb(255, 235, 233)"  # the error colour

    assert console_errors(browser, session) == []
    assert time.perf_counter() - started < 30


def screenshot(browser: Chromium, session: str, path, width: int = 1100, height: int = 1400):
    """Writes a PNG of the top of the page (used for the docs' picture)."""
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    data = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
    path.write_bytes(base64.b64decode(data))
