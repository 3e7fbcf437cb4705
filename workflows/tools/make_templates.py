"""Render the workflow templates from the API prompts in workflow_specs.py through the real frontend
(ComfyUI + headless Chromium, as in tests/test_comfy_browser.py): UI-format workflows/<task>.json,
a .jpg thumbnail of the graph, and the API twin workflows/api/<task>.json the frontend queues for it.

The frontend does the API -> UI conversion itself (app.loadApiJson, then graph.serialize), so the
templates hold exactly the widgets and sockets that frontend version creates.
Run: .venv/bin/python workflows/tools/make_templates.py   (needs /usr/bin/chromium)
"""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(Path(__file__).resolve().parent)]
from comfy_harness import ComfyServer, prepare_tree  # noqa: E402
from workflow_specs import LAYOUT, TASKS, workflow  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
THUMBNAIL_WIDTH = 640
CLIP = {"x": 48, "y": 80, "width": 1552, "height": 820}  # the canvas without the side bar and tab strip
RENDER = """async ({prompt, layout, name}) => {
    await window.app.loadApiJson(prompt, name);
    const graph = window.app.graph;
    const nodes = graph.nodes ?? graph._nodes;
    const columns = {};
    for (const node of nodes) {
        const [column, row] = layout[String(node.id)];
        (columns[column] ??= []).push([row, node]);
        const control = node.widgets?.find((w) => w.name === "control_after_generate");
        if (control) control.value = "fixed";
    }
    const place = () => {
        let x = 40;
        for (const column of Object.keys(columns).map(Number).sort((a, b) => a - b)) {
            let y = 60, width = 0;
            for (const [, node] of columns[column].sort((a, b) => a[0] - b[0])) {
                node.pos = [x, y];
                y += node.size[1] + 70;
                width = Math.max(width, node.size[0]);
            }
            x += width + 50;
        }
    };
    place();
    await new Promise((resolve) => setTimeout(resolve, 2000));  // loader previews grow their nodes
    place();
    // frame every node (title bar included) in the visible canvas
    const box = [Infinity, Infinity, -Infinity, -Infinity];
    for (const node of nodes) {
        box[0] = Math.min(box[0], node.pos[0]);
        box[1] = Math.min(box[1], node.pos[1] - 40);
        box[2] = Math.max(box[2], node.pos[0] + node.size[0]);
        box[3] = Math.max(box[3], node.pos[1] + node.size[1]);
    }
    const canvas = window.app.canvas, ds = canvas.ds;
    const [width, height] = [canvas.canvas.clientWidth - 120, canvas.canvas.clientHeight - 240];
    ds.scale = Math.min(width / (box[2] - box[0]), height / (box[3] - box[1]), 1.0);
    ds.offset = [60 / ds.scale - box[0] + (width / ds.scale - (box[2] - box[0])) / 2,
                 150 / ds.scale - box[1] + (height / ds.scale - (box[3] - box[1])) / 2];
    graph.setDirtyCanvas(true, true);
    canvas.draw(true, true);
    await new Promise((resolve) => setTimeout(resolve, 300));
    // stringified here: keeps undefined fields out, as the frontend's own save does
    return JSON.stringify({ui: graph.serialize(), api: (await window.app.graphToPrompt()).output});
}"""


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def server_inputs_only(prompt: dict, info: dict) -> dict:
    """Keep only the inputs the server's node definitions declare."""
    out = {}
    for node_id, node in prompt.items():
        spec = info[node["class_type"]]["input"]
        known = {**spec.get("required", {}), **spec.get("optional", {})}
        out[node_id] = {**node, "inputs": {k: v for k, v in node["inputs"].items() if k in known}}
    return out


def write_thumbnail(png: bytes, path: Path) -> None:
    with Image.open(io.BytesIO(png)) as image:
        image = image.convert("RGB")
        height = round(image.height * THUMBNAIL_WIDTH / image.width)
        tmp = path.with_name(f".{path.name}.tmp")
        image.resize((THUMBNAIL_WIDTH, height), Image.LANCZOS).save(tmp, "JPEG", quality=85)
        os.replace(tmp, path)


def main() -> None:
    prompts = {task: workflow(task) for task in TASKS}
    with tempfile.TemporaryDirectory() as tmp, \
            ComfyServer(Path(tmp) / "base", tree=prepare_tree(Path(tmp))) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        info = server.object_info()
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(server.url + "/")
        page.wait_for_function("() => window.__apolloAV?.ready && !!window.app?.graph")
        page.evaluate("() => window.app.extensionManager.setting.set('Comfy.Minimap.Visible', false)")
        for task, prompt in prompts.items():
            rendered = json.loads(page.evaluate(RENDER, {"prompt": prompt, "layout": LAYOUT, "name": task}))
            ui = rendered["ui"]
            write_json(ROOT / "workflows" / f"{task}.json", ui)
            # the API twin is what this frontend queues for the template, without the UI-only values
            # some core widgets add (SaveAudio's audioUI, LoadVideo's preview)
            write_json(ROOT / "workflows" / "api" / f"{task}.json", server_inputs_only(rendered["api"], info))
            write_thumbnail(page.screenshot(clip=CLIP), ROOT / "workflows" / f"{task}.jpg")
            print(f"{task}: {len(ui['nodes'])} nodes, {len(ui['links'])} links")
        browser.close()


if __name__ == "__main__":
    main()
