"""tools/screenshots.py's browser part, on a local page that draws itself late as MLflow's UI does.

Needs Debian's chromium (``apt-get install -y chromium``); skipped without it. The MLflow pictures
themselves are made by running the tool (docs/mlflow.md, "In the UI").
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys

import pytest

from signpose.tracking.server import wait_until_listening
from tools.screenshots import WIDTH, Chromium, text_shown

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")

PAGE = """<!doctype html><html><body><div id="app">loading</div><script>
// Draws its content only after a while, and fills a list as the user types, like a single-page app.
setTimeout(() => {
  document.getElementById('app').innerHTML =
    '<h1>Training runs</h1><input placeholder="Search metrics"><ul id="rows"></ul>';
  const rows = ['val/loss', 'val/mse', 'train/loss'];
  const input = document.querySelector('input');
  const draw = () => document.getElementById('rows').innerHTML =
    rows.filter(r => r.includes(input.value)).map(r => '<li>' + r + '</li>').join('') +
    '<li>shown: ' + rows.filter(r => r.includes(input.value)).length + '</li>';
  input.addEventListener('input', draw);
  draw();
}, 800);
</script></body></html>"""


@pytest.fixture
def page_url(tmp_path):
    (tmp_path / "index.html").write_text(PAGE)
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"], cwd=tmp_path,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        port = wait_until_listening(server, timeout_s=120, log_path=tmp_path / "server.log")
        yield f"http://127.0.0.1:{port}/index.html"
    finally:
        server.kill()
        server.wait()


def test_the_browser_waits_for_the_page_types_into_it_and_writes_a_png_of_the_asked_size(page_url, tmp_path):
    browser = Chromium(CHROMIUM)
    try:
        browser.open(page_url, text_shown("Training runs", "val/mse"), height=300)
        browser.type_into("Search metrics", "val/", text_shown("shown: 2"))
        assert "train/loss" not in browser.evaluate("document.body.innerText")
        browser.screenshot(tmp_path / "page.png")
        with pytest.raises(TimeoutError, match="never there"):
            browser.wait_for(text_shown("never there"), timeout_s=0.5, what="a page")
    finally:
        browser.close()
    png = (tmp_path / "page.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (WIDTH, 300)  # the IHDR chunk: width, height
