"""A real browser looks at what users look at: every page of the built docs site, the demo's
report.html and its two task reports, in headless Chromium (slow tier). Each page loads without a
console error, every image decodes, and every link, stylesheet and script on this server resolves."""

import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the page under test in an iframe of the same origin; once it has loaded, what it holds is written
# into this page's DOM, which --dump-dom prints
PROBE = """<!doctype html><html><body><script>
const frame = document.createElement("iframe");
frame.src = new URLSearchParams(location.search).get("t"); frame.width = 1200; frame.height = 900;
frame.onload = () => setTimeout(() => {
  const doc = frame.contentDocument, images = [...doc.images];
  const urls = (selector, attribute) => [...doc.querySelectorAll(selector)].map(e => e[attribute]);
  const result = {
    title: doc.title,
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    links: urls("a[href]", "href"),
    assets: urls("link[rel=stylesheet]", "href").concat(urls("script[src]", "src")),
  };
  const out = document.createElement("pre"); out.id = "result"; out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
}, 1500);
document.body.appendChild(frame);
</script></body></html>
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's package)")
        pytest.skip("chromium is not installed")
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(root / "site")],
        cwd=ROOT,
        check=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    demo = [sys.executable, "-m", "critical_kernels.cli", "demo", "--out", str(root / "demo"), "--depth", "2"]
    subprocess.run(demo, check=True, timeout=900, capture_output=True)
    (root / "probe.html").write_text(PROBE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _look(chromium: str, base: str, page: str) -> tuple[dict, list[str]]:
    """What the browser found on `page`, and its console errors."""
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    command += ["--virtual-time-budget=10000", "--dump-dom", f"{base}/probe.html?t=/{page}"]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="result">(.*?)</pre>', shown.stdout)
    assert found, f"{page}: the page did not load\n{shown.stderr[-2000:]}"
    console = [line for line in shown.stderr.splitlines() if ":CONSOLE" in line]
    errors = [line for line in console if "Uncaught" in line or "rror" in line.split("]", 1)[-1]]
    return json.loads(html.unescape(found.group(1))), errors


def _pages(root: Path) -> list[str]:
    site = sorted(str(p.relative_to(root)) for p in (root / "site").rglob("index.html"))
    demo = ["demo/report.html", "demo/digits_at_g_c/report.html", "demo/xor_at_g_c/report.html"]
    return [p for p in site if not p.startswith("site/search/")] + demo


@pytest.mark.slow
def test_site_and_demo_report_render_in_a_browser(server):
    chromium = _chromium()
    root, base = server
    pages = _pages(root)
    assert len(pages) >= 10, pages
    problems = []
    for page in pages:
        result, errors = _look(chromium, base, page)
        problems += [f"{page}: console: {e}" for e in errors]
        problems += [f"{page}: image not shown: {src}" for src in result["broken"]]
        local = {u.split("#")[0] for u in result["links"] + result["assets"] if u.startswith(base)}
        for url in sorted(local):
            try:
                urllib.request.urlopen(url, timeout=10).close()
            except OSError as err:
                problems.append(f"{page}: broken link {url} ({err})")
        if page.startswith("demo/"):
            assert result["images"] >= 2, (page, result)  # the figures are embedded and decode
    assert not problems, "\n".join(problems)
