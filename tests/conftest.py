"""Shared ComfyUI fixtures: one ComfyUI tree, one server and one in-process import per session.

The session server loads this repository (as `apollo-av`) next to a tiny probe pack written
below. The probe is a test fixture that exercises the ComfyUI features the Apollo nodes rely on:
a V3 node registered through NODE_CLASS_MAPPINGS, progress with JPEG previews, interrupts, a
runtime error, WEB_DIRECTORY JavaScript, `workflows/` templates, and the harness's network guard.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

# --import-mode=importlib puts no test folder on sys.path; test files import comfy_harness.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_harness  # noqa: E402

PROBE_PACK_NAME = "apollo-harness-probe"
PROBE_NODE_ID = "ApolloHarnessProbe"
PROBE_ENTRYPOINT_ONLY_ID = "ApolloHarnessProbeEntrypointOnly"
PROBE_BLOCKED_HOST = "apollo-harness-probe.invalid"

_PROBE_INIT = f'''"""Harness probe pack (test fixture written by tests/conftest.py)."""
import socket
import time

import torch
from PIL import Image

import comfy.model_management
import comfy.utils
from comfy_api.latest import ComfyExtension, io, ui

try:  # the harness's audit hook must refuse this lookup before any DNS traffic
    socket.getaddrinfo("{PROBE_BLOCKED_HOST}", 80)
    NETWORK_REFUSED = False
except PermissionError:
    NETWORK_REFUSED = True
except OSError:
    NETWORK_REFUSED = False


class ApolloHarnessProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="{PROBE_NODE_ID}", display_name="Apollo Harness Probe", category="_harness_probe",
            inputs=[io.Int.Input("steps", default=3, min=1, max=100000),
                    io.Float.Input("delay", default=0.0, min=0.0, max=1.0, step=0.01),
                    io.Boolean.Input("fail", default=False)],
            outputs=[io.Image.Output()],
            hidden=[io.Hidden.unique_id],
            is_output_node=True)

    @classmethod
    def execute(cls, steps, delay, fail):
        pbar = comfy.utils.ProgressBar(steps, node_id=cls.hidden.unique_id)
        preview = Image.new("RGB", (96, 64), (255, 0, 0))
        for step in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(delay)
            pbar.update_absolute(step + 1, steps, ("JPEG", preview, 32))
        if fail:
            raise ValueError("fail: the probe was asked to fail; set fail to False")
        image = torch.zeros(1, 32, 48, 3)
        image[..., 0] = 1.0
        return io.NodeOutput(image, ui=ui.PreviewText(f"steps={{steps}} network_refused={{NETWORK_REFUSED}}"))


class ApolloHarnessProbeEntrypointOnly(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="{PROBE_ENTRYPOINT_ONLY_ID}", category="_harness_probe",
                         outputs=[io.Int.Output()])

    @classmethod
    def execute(cls):
        return io.NodeOutput(1)


class _ProbeExtension(ComfyExtension):
    async def get_node_list(self):
        return [ApolloHarnessProbe, ApolloHarnessProbeEntrypointOnly]


async def comfy_entrypoint():
    return _ProbeExtension()


NODE_CLASS_MAPPINGS = {{ApolloHarnessProbe.define_schema().node_id: ApolloHarnessProbe}}
NODE_DISPLAY_NAME_MAPPINGS = {{"{PROBE_NODE_ID}": "Apollo Harness Probe"}}
WEB_DIRECTORY = "./web"
'''

_PROBE_JS = f'''import {{ app }} from "../../scripts/app.js";

app.registerExtension({{
  name: "apollo.harnessProbe",
  async beforeRegisterNodeDef(nodeType, nodeData) {{
    if (nodeData.name === "{PROBE_NODE_ID}") window.__apolloProbeNodeDef = nodeData.display_name;
  }},
  async setup() {{
    window.__apolloProbeSetup = true;
  }},
}});
'''

PROBE_WORKFLOW = {
    "last_node_id": 1, "last_link_id": 0,
    "nodes": [{"id": 1, "type": PROBE_NODE_ID, "pos": [100, 100], "size": [320, 130], "flags": {},
               "order": 0, "mode": 0, "inputs": [],
               "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": None}],
               "properties": {}, "widgets_values": [4, 0.0, False]}],
    "links": [], "groups": [], "config": {}, "extra": {}, "version": 0.4,
}


def write_probe_pack(folder: Path) -> Path:
    (folder / "web").mkdir(parents=True, exist_ok=True)
    (folder / "workflows").mkdir(exist_ok=True)
    (folder / "__init__.py").write_text(_PROBE_INIT, encoding="utf-8")
    (folder / "web" / "probe.js").write_text(_PROBE_JS, encoding="utf-8")
    (folder / "workflows" / "probe_workflow.json").write_text(json.dumps(PROBE_WORKFLOW), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def comfy_probe() -> SimpleNamespace:
    """Names the probe pack uses, for assertions."""
    return SimpleNamespace(pack=PROBE_PACK_NAME, node_id=PROBE_NODE_ID, blocked_host=PROBE_BLOCKED_HOST,
                           entrypoint_only_id=PROBE_ENTRYPOINT_ONLY_ID, workflow=PROBE_WORKFLOW)


@pytest.fixture(scope="session")
def comfy_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return comfy_harness.prepare_tree(tmp_path_factory.mktemp("comfy-tree"))


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory: pytest.TempPathFactory, comfy_tree: Path
                 ) -> Iterator[comfy_harness.ComfyServer]:
    probe = write_probe_pack(tmp_path_factory.mktemp("probe-pack"))
    nodes = {comfy_harness.PACK_FOLDER_NAME: comfy_harness.REPO_ROOT, PROBE_PACK_NAME: probe}
    with comfy_harness.ComfyServer(tmp_path_factory.mktemp("comfy-base"), tree=comfy_tree,
                                   custom_nodes=nodes) as server:
        yield server


@pytest.fixture(scope="session")
def comfy_in_process(tmp_path_factory: pytest.TempPathFactory):
    return comfy_harness.import_comfy_in_process(tmp_path_factory.mktemp("comfy-in-process"))


# -- APOLLO node pack: a tiny random model bundle in the servers' models/apollo --------------
APOLLO_BUNDLE_NAME = "apollo-debug"


def write_debug_bundle(folder: Path) -> Path:
    """A random debug-preset model + tiny codecs in the bundle layout load_bundle reads. The weights
    are jittered away from adaLN-Zero's zeros so the output depends on the prompt and the inputs."""
    import torch

    from apollo_core.checkpoint import save_model
    from apollo_core.codecs import TinyAudioVAE, TinyVideoVAE, save_codec
    from apollo_core.config import get_preset
    from apollo_core.model.dit import ApolloDiT

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = ApolloDiT(get_preset("debug"))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    save_model(folder / "model.safetensors", model,
               extra={"text_encoder": "minilm", "defaults": {"seconds": 2.0, "width": 32, "height": 32}})
    save_codec(folder / "video_codec.safetensors",
               TinyVideoVAE(latent_channels=4, temporal_compression=2, spatial_compression=4, fps=8.0))
    save_codec(folder / "audio_codec.safetensors", TinyAudioVAE(latent_channels=4, sample_rate=8000, hop=250))
    return folder


def install_bundle(bundle: Path, models_dir: Path) -> Path:
    """Link the bundle into `<models>/apollo/apollo-debug` (ComfyUI lists it as apollo-debug/...)."""
    link = models_dir / "apollo" / APOLLO_BUNDLE_NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(bundle, target_is_directory=True)
    return link


@pytest.fixture(scope="session")
def apollo_bundle(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The debug bundle and the names ComfyUI lists for it in the loaders' combos."""
    folder = write_debug_bundle(tmp_path_factory.mktemp("apollo-bundle") / APOLLO_BUNDLE_NAME)
    return SimpleNamespace(folder=folder, model=f"{APOLLO_BUNDLE_NAME}/model.safetensors",
                           video_codec=f"{APOLLO_BUNDLE_NAME}/video_codec.safetensors",
                           audio_codec=f"{APOLLO_BUNDLE_NAME}/audio_codec.safetensors")


@pytest.fixture(scope="session")
def apollo_server(comfy_server: comfy_harness.ComfyServer, apollo_bundle: SimpleNamespace
                  ) -> comfy_harness.ComfyServer:
    """The session server with the debug bundle in its models/apollo folder."""
    install_bundle(apollo_bundle.folder, comfy_server.models_dir)
    return comfy_server


@pytest.fixture(scope="session")
def apollo_pack(comfy_in_process, apollo_bundle: SimpleNamespace):
    """This repository imported in-process as ComfyUI would, with the debug bundle installed."""
    import folder_paths

    install_bundle(apollo_bundle.folder, Path(folder_paths.models_dir))
    return comfy_harness.import_pack_in_process()


def apollo_api_workflow(task: str, *, steps: int = 2) -> dict:
    """workflows/api/<task>.json as shipped (on the embedded apollo-tiny), with few steps."""
    prompt = json.loads((comfy_harness.REPO_ROOT / "workflows" / "api" / f"{task}.json").read_text(encoding="utf-8"))
    for node in prompt.values():
        if node["class_type"] == "ApolloSampler":
            node["inputs"]["steps"] = steps
    return prompt


@pytest.fixture(scope="session")
def apollo_workflow():
    """`apollo_workflow(task, steps=2)` -> the shipped API workflow with few steps."""
    return lambda task, steps=2: apollo_api_workflow(task, steps=steps)
