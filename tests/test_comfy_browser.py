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


# -- the APOLLO-AV pack in the frontend ----------------------------------------------------
APOLLO_TASKS = ("T2AV", "TI2AV", "TI2V", "T2V", "T2A", "V2A", "A2V")
APOLLO_NODES = ("ApolloModelLoader", "ApolloCodecLoader", "ApolloTextEncoderLoader", "ApolloTextEncode",
                "ApolloEmptyAVLatent", "ApolloSplitAVLatent", "ApolloJoinAVLatent", "ApolloSampler",
                "ApolloDecodeAV", "ApolloDecodeVideo", "ApolloDecodeAudio", "ApolloSaveAV", "ApolloPreviewAV")
APOLLO_READY = """() => window.__apolloAV?.ready === true && !!window.app?.graph
    && 'ApolloSampler' in (window.LiteGraph?.registered_node_types ?? {})"""
APOLLO_REGISTERED = """(ids) => ({
    extensions: window.app.extensions.map((e) => e.name).filter((n) => n.startsWith('apollo')),
    missing: ids.filter((id) => !(id in window.LiteGraph.registered_node_types)),
})"""
# Every template through the frontend: load it, export the API prompt, and note what the sampler shows.
APOLLO_TEMPLATES = """async (tasks) => {
    const out = {};
    for (const task of tasks) {
        const response = await fetch(`/api/workflow_templates/apollo-av/${task}.json`);
        await window.app.loadGraphData(await response.json());
        const sampler = window.app.graph.getNodeById(7);
        const shown = () => ({inputs: sampler.inputs.filter((i) => !i.widget).map((i) => i.name),
                              hidden: sampler.widgets.filter((w) => w.hidden).map((w) => w.name),
                              height: sampler.computeSize()[1]});
        out[task] = {prompt: (await window.app.graphToPrompt()).output, sampler: shown()};
        if (task === 'T2AV') {  // switching the task shows and hides sockets and widgets
            const widget = sampler.widgets.find((w) => w.name === 'task');
            widget.value = 'A2V';
            widget.callback(widget.value);
            out.switched = shown();
        }
    }
    return out;
}"""
APOLLO_QUEUE = """async ({model, video_codec, audio_codec}) => {
    const response = await fetch('/api/workflow_templates/apollo-av/T2AV.json');
    await window.app.loadGraphData(await response.json());
    const set = (id, name, value) => {
        window.app.graph.getNodeById(id).widgets.find((w) => w.name === name).value = value;
    };
    set(1, 'checkpoint', model);
    set(2, 'video_codec', video_codec);
    set(2, 'audio_codec', audio_codec);
    set(7, 'steps', 2);
    set(7, 'seed', 20251126);
    await window.app.queuePrompt(0, 1);
}"""
PLAYER_READY = """() => { const v = document.querySelector('video[data-apollo-player]');
    return !!v && v.readyState >= 2 && Math.abs(v.duration - 2) < 0.05; }"""
PLAYER_USE = """async () => {
    const v = document.querySelector('video[data-apollo-player]');
    const seeked = new Promise((resolve) => v.addEventListener('seeked', resolve, {once: true}));
    v.currentTime = 1.25;
    await seeked;
    const scrubbed = v.currentTime;
    await v.play();
    await new Promise((resolve) => setTimeout(resolve, 600));
    const playing = !v.paused;
    v.pause();
    return {scrubbed, playing, muted: v.muted, controls: v.controls, audio: v.webkitAudioDecodedByteCount,
            src: v.src, filename: v.dataset.filename, width: v.videoWidth};
}"""


def test_apollo_pack_registers_loads_templates_queues_and_plays(apollo_server: ComfyServer, apollo_bundle,
                                                                 tmp_path: Path) -> None:
    import json

    import av

    from comfy_harness import REPO_ROOT

    outside: list[str] = []
    page_errors: list[str] = []

    def only_the_test_server(route: Route) -> None:
        if route.request.url.startswith(apollo_server.url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(120_000)
            page.route("**/*", only_the_test_server)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(apollo_server.url + "/")
            page.wait_for_function(APOLLO_READY)
            registered = page.evaluate(APOLLO_REGISTERED, list(APOLLO_NODES))
            page.get_by_role("button", name="Node Library (n)").click()
            page.locator("input.search-box-input").first.fill("Apollo")
            page.get_by_text("Apollo AV Sampler", exact=True).wait_for()
            library = [name for name in ("apollo", "Apollo AV Sampler", "Apollo Save AV (mp4)", "Apollo Empty AV Latent")
                       if page.get_by_text(name, exact=True).first.is_visible()]
            page.screenshot(path=str(tmp_path / "apollo-library.png"))
            page.get_by_role("button", name="Node Library (n)").click()
            templates = page.evaluate(APOLLO_TEMPLATES, list(APOLLO_TASKS))
            page.evaluate(APOLLO_QUEUE, {"model": apollo_bundle.model, "video_codec": apollo_bundle.video_codec,
                                         "audio_codec": apollo_bundle.audio_codec})
            page.wait_for_function(PLAYER_READY)
            page.evaluate("() => window.app.canvas.centerOnNode(window.app.graph.getNodeById(9))")
            page.locator("video[data-apollo-player]").click()  # a user gesture, so play() may start with sound
            player = page.evaluate(PLAYER_USE)
            page.screenshot(path=str(tmp_path / "apollo-player.png"))
        finally:
            browser.close()

    assert "apollo.av" in registered["extensions"] and registered["missing"] == []
    assert library == ["apollo", "Apollo AV Sampler", "Apollo Save AV (mp4)", "Apollo Empty AV Latent"]
    info = apollo_server.object_info()

    def declared(prompt: dict) -> dict:  # drops UI-only values core widgets add (audioUI, video-preview)
        spec = {k: {**info[v["class_type"]]["input"].get("required", {}),
                    **info[v["class_type"]]["input"].get("optional", {})} for k, v in prompt.items()}
        return {k: (v["class_type"], {n: x for n, x in v["inputs"].items() if n in spec[k]}) for k, v in prompt.items()}

    for task in APOLLO_TASKS:  # each UI template exports exactly its API twin
        twin = json.loads((REPO_ROOT / "workflows" / "api" / f"{task}.json").read_text(encoding="utf-8"))
        assert declared(templates[task]["prompt"]) == declared(twin), task
    sockets = {task: templates[task]["sampler"] for task in APOLLO_TASKS}
    assert sockets["T2A"]["height"] < sockets["T2AV"]["height"]  # a hidden widget gives its row back
    heights = {task: sockets[task].pop("height") for task in APOLLO_TASKS}
    assert templates["switched"].pop("height") == heights["A2V"]
    assert sockets["T2AV"] == {"inputs": ["model", "codecs", "positive", "negative", "latent"], "hidden": []}
    assert sockets["TI2V"]["inputs"][-1] == "image"
    assert sockets["TI2V"]["hidden"] == ["audio_cfg", "video_sync_cfg", "audio_sync_cfg"]
    assert sockets["V2A"]["inputs"][-1] == "video" and sockets["V2A"]["hidden"] == ["video_cfg", "video_sync_cfg"]
    assert sockets["T2A"]["hidden"] == ["video_cfg", "video_sync_cfg", "audio_sync_cfg"]
    assert sockets["A2V"]["inputs"][-1] == "audio"
    assert templates["switched"] == {"inputs": ["model", "codecs", "positive", "negative", "latent", "audio"],
                                     "hidden": ["audio_cfg", "audio_sync_cfg"]}
    assert player["controls"] and not player["muted"] and player["playing"] and player["width"] == 256
    assert player["scrubbed"] == pytest.approx(1.25, abs=0.15)
    assert player["audio"] > 0  # the sound track was decoded while playing
    saved = next(apollo_server.output_dir.rglob(player["filename"]))
    with av.open(str(saved)) as container:
        workflow = json.loads(container.metadata["workflow"])  # the frontend's workflow, embedded
    assert {node["type"] for node in workflow["nodes"]} >= {"ApolloSampler", "ApolloSaveAV"}
    assert outside == [], f"the page tried to leave the test server: {outside}"
    assert page_errors == [], page_errors
