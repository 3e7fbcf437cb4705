"""The ComfyUI frontend (comfyui-frontend-package 1.32.9) in headless Debian Chromium via playwright.

Needs `apt-get install -y chromium`; playwright drives it through executable_path, so no
playwright browser download is involved. Every request that does not go to the test server is
aborted and recorded: the page must work offline.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Route, sync_playwright

from comfy_harness import ComfyServer

pytestmark = [pytest.mark.browser, pytest.mark.comfy, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
APP_READY = """() => window.__apolloProbeSetup === true && !!window.app && !!window.app.graph
    && 'SaveVideo' in ((window.LiteGraph && window.LiteGraph.registered_node_types) || {})"""
LOAD_AND_EXPORT = """async (workflow) => {
    await window.app.loadGraphData(workflow);
    const nodes = window.app.graph.nodes ?? window.app.graph._nodes;
    const exported = await window.app.graphToPrompt();
    return {types: nodes.map((n) => n.type), output: exported.output};
}"""


def test_frontend_loads_offline_with_core_and_pack_nodes(comfy_server: ComfyServer, comfy_probe,
                                                          tmp_path: Path) -> None:
    assert shutil.which(CHROMIUM), "Debian chromium is missing: apt-get install -y chromium"
    outside: list[str] = []
    page_errors: list[str] = []

    def only_the_test_server(route: Route) -> None:
        if route.request.url.startswith(comfy_server.url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(90_000)  # the 2-core CI box parses the 48 MB frontend slowly
            page.route("**/*", only_the_test_server)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(comfy_server.url + "/")
            page.wait_for_function(APP_READY)
            registered = page.evaluate(
                "(names) => names.filter((n) => n in window.LiteGraph.registered_node_types)",
                ["SaveVideo", "CreateVideo", "LoadAudio", comfy_probe.node_id])
            probe_display_name = page.evaluate("() => window.__apolloProbeNodeDef")
            loaded = page.evaluate(LOAD_AND_EXPORT, comfy_probe.workflow)
            page.screenshot(path=str(tmp_path / "comfyui.png"))
        finally:
            browser.close()

    assert registered == ["SaveVideo", "CreateVideo", "LoadAudio", comfy_probe.node_id]
    assert probe_display_name == "Apollo Harness Probe"  # beforeRegisterNodeDef of the pack's JS ran
    assert loaded["types"] == [comfy_probe.node_id]
    exported = loaded["output"]["1"]
    assert exported["class_type"] == comfy_probe.node_id
    assert exported["inputs"] == {"steps": 4, "delay": 0, "fail": False}
    assert (tmp_path / "comfyui.png").stat().st_size > 10_000
    assert outside == [], f"the page tried to leave the test server: {outside}"
    assert page_errors == [], page_errors
    # The API prompt the frontend produced runs on the server as is.
    entry = comfy_server.run({"1": exported})
    assert entry["outputs"]["1"]["text"] == ["steps=4 network_refused=True"]
