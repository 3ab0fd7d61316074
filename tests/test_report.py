"""`gradreg report`: one self-contained HTML page, checked as text and rendered in headless Chromium."""

import json
import os
import re
import shutil
import subprocess

import pytest

pytest.importorskip("matplotlib", reason="matplotlib is the optional 'plots' extra; the dev extra installs it")

# CI sets GRADREG_REQUIRE_CHROMIUM=1 after installing Debian's chromium, so there the browser
# check cannot be skipped by accident; on a developer machine without it, it is skipped with a reason.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("GRADREG_REQUIRE_CHROMIUM"),
    reason="headless Chromium is not installed (apt-get install chromium; .ci/run does)",
)

# Appended by the test only: records errors and, once loaded, what the page shows.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.outerHTML || '').slice(0, 60))), true);
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const out = {
    tables: [...document.querySelectorAll('table')].map(t => t.className),
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
    cells: [...document.querySelectorAll('td, th')].map(c => c.textContent),
    images: imgs.map(i => ({ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, shown: i.getBoundingClientRect().width})),
    errors: window.__errors,
  };
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.fixture
def report(cli, tmp_path):
    model = tmp_path / "crops.safetensors"
    assert cli("train", "crops", "--target", "mangoes,oranges", "--val-fraction", "0.2", "-q", "-o", model).code == 0
    out = tmp_path / "report.html"
    r = cli("report", model, "crops", "-o", out)
    assert r.code == 0 and r.out == f"wrote {out}\n", r.err
    return out


def test_report_is_self_contained(report):
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)  # nothing fetched from elsewhere
    assert "<script" not in page
    assert page.count('src="data:image/png;base64,') == 3
    for text in ("Metrics", "Coefficients (original units)", "Statistics", "mangoes", "oranges", "rainfall", "std err"):
        assert text in page


def test_report_without_data_and_to_stdout(cli, tmp_path):
    model = tmp_path / "e.safetensors"
    assert cli("train", "crops", "--target", "mangoes", "--solver", "exact", "-q", "-o", model).code == 0
    r = cli("report", model, "-o", "-")
    assert r.code == 0 and r.out.startswith("<!DOCTYPE html>")
    assert "<img" not in r.out  # exact solver, no data: no loss curve and nothing to plot
    r = cli("report", model, "crops", "-o", tmp_path / "r.html", "--json")
    assert json.loads(r.out) == {"report": str(tmp_path / "r.html"), "bytes": os.path.getsize(tmp_path / "r.html")}


def test_report_of_data_without_targets_fails_cleanly(cli, tmp_path):
    model = tmp_path / "e.safetensors"
    assert cli("train", "crops", "--target", "mangoes", "--solver", "exact", "-q", "-o", model).code == 0
    data = tmp_path / "x.csv"
    data.write_text("temperature,rainfall,humidity\n1,2,3\n")
    out = tmp_path / "r.html"
    r = cli("report", model, data, "-o", out)
    assert r.code == 2 and "mangoes" in r.err and r.err.count("\n") == 1
    assert not out.exists()


@needs_chromium
def test_report_renders_in_headless_chromium(report, tmp_path):
    assert CHROMIUM, "GRADREG_REQUIRE_CHROMIUM is set but no chromium is on PATH"
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any network fetch would fail and show up as an error
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probed.as_uri(),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert m, "the page did not finish loading: " + r.stdout[-500:]
    import html

    seen = json.loads(html.unescape(m.group(1)))
    assert seen["errors"] == []
    assert seen["tables"][:2] == ["gradreg-metrics", "gradreg-coef"] and seen["tables"].count("gradreg-summary") == 2
    assert seen["headings"] == ["Metrics", "Coefficients (original units)", "Statistics", "Plots"]
    assert {"rainfall", "intercept", "data: crops", "val"} <= set(seen["cells"])
    assert len(seen["images"]) == 3
    assert all(i["ok"] and i["w"] >= 600 and i["shown"] > 300 for i in seen["images"]), seen["images"]
    shot = tmp_path / "shot.png"
    r = subprocess.run(
        [*cmd[:-2], f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    from .test_plots import assert_png_drawn

    assert_png_drawn(shot, min_size=(1200, 2400))
