"""The node pack in a real ComfyUI 0.3.75 server: /object_info, every shipped API workflow run to
completion on the embedded apollo-tiny (files checked with PyAV), and bad inputs that must fail with a
readable error in the history while the server keeps serving the next prompt."""
from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import av
import numpy as np
import pytest
import websocket

import comfy_harness
from comfy_harness import ComfyServer

pytestmark = [pytest.mark.comfy, pytest.mark.slow]

TASKS = ("T2AV", "TI2AV", "TI2V", "T2V", "T2A", "V2A", "A2V")
NODE_IDS = {"ApolloModelLoader", "ApolloCodecLoader", "ApolloTextEncoderLoader", "ApolloTextEncode",
            "ApolloEmptyAVLatent", "ApolloSplitAVLatent", "ApolloJoinAVLatent", "ApolloSampler", "ApolloDecodeAV",
            "ApolloDecodeVideo", "ApolloDecodeAudio", "ApolloSaveAV", "ApolloPreviewAV"}
FRAMES, FPS, SECONDS, SIDE = 16, 8, 2.0, 256  # the workflows' 64 px, 2 s at 8 fps; shown at 256
RATE = comfy_harness.embedded_sample_rate()  # 16 kHz: the workflows run on the embedded apollo-tiny
MEDIA = comfy_harness.REPO_ROOT / "workflows" / "media"


def output_file(server: ComfyServer, item: dict) -> Path:
    return server.base_dir / item["type"] / item["subfolder"] / item["filename"]


def probe(path: Path) -> dict:
    """Codecs, frame count, rates and stream durations of a media file."""
    with av.open(str(path)) as container:
        info: dict = {"metadata": dict(container.metadata)}
        if container.streams.video:
            v = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(v)]
            info.update(video=v.codec_context.name, frames=len(frames), fps=float(v.average_rate),
                        size=(v.codec_context.width, v.codec_context.height), pixels=np.stack(frames),
                        video_seconds=float(v.duration * v.time_base))
        if container.streams.audio:
            container.seek(0)
            a = container.streams.audio[0]
            wave = np.concatenate([f.to_ndarray().mean(0) for f in container.decode(a)])
            info.update(audio=a.codec_context.name, sample_rate=a.codec_context.sample_rate, wave=wave,
                        audio_seconds=float(a.duration * a.time_base))
    return info


def envelope(wave: np.ndarray, window: int) -> np.ndarray:
    usable = len(wave) // window * window
    return np.abs(wave[:usable]).reshape(-1, window).max(1)


def test_object_info_lists_the_pack(apollo_server: ComfyServer, apollo_bundle) -> None:
    info = apollo_server.object_info()
    assert NODE_IDS <= set(info)
    loader = info["ApolloModelLoader"]["input"]["required"]["checkpoint"]
    assert loader[1]["options"][:1] == ["apollo-tiny (embedded)"] and apollo_bundle.model in loader[1]["options"]
    assert apollo_bundle.video_codec not in loader[1]["options"]
    sampler = info["ApolloSampler"]["input"]
    assert sampler["required"]["task"][1]["options"] == list(TASKS)
    assert {k: v[0] for k, v in sampler["optional"].items()} == {"image": "IMAGE", "video": "VIDEO,IMAGE",
                                                                 "audio": "AUDIO", "video_sync_cfg": "FLOAT",
                                                                 "audio_sync_cfg": "FLOAT"}
    assert info["ApolloSaveAV"]["output_node"] and info["ApolloPreviewAV"]["output_node"]
    assert info["ApolloDecodeAV"]["output"] == ["IMAGE", "AUDIO", "VIDEO", "FLOAT"]
    assert info["ApolloEmptyAVLatent"]["output"] == ["LATENT"]
    assert "/extensions/apollo-av/apollo_av.js" in apollo_server.get_json("/extensions")
    assert sorted(apollo_server.get_json("/api/workflow_templates")["apollo-av"]) == sorted(TASKS)
    for task in TASKS:  # every template only uses nodes this server has
        template = apollo_server.get_json(f"/api/workflow_templates/apollo-av/{task}.json")
        assert {node["type"] for node in template["nodes"]} <= set(info)
    assert (apollo_server.input_dir / "apollo_example.wav").is_file()  # installed by the pack at import


@pytest.mark.parametrize("task", TASKS)
def test_shipped_workflow_runs_and_writes_the_right_file(apollo_server: ComfyServer, apollo_workflow,
                                                         task: str) -> None:
    prompt = apollo_workflow(task)
    template = json.loads((comfy_harness.REPO_ROOT / "workflows" / f"{task}.json").read_text(encoding="utf-8"))
    started = time.perf_counter()
    entry, messages = apollo_server.run_with_events(prompt, timeout=180) if task != "T2AV" else (None, None)
    if task == "T2AV":  # queued like the frontend does: the UI workflow rides along and lands in the mp4
        entry = apollo_server.wait(apollo_server.queue(prompt, extra_data={"extra_pnginfo": {"workflow": template}}),
                                   timeout=180)
    print(f"{task}: {time.perf_counter() - started:.1f}s")
    assert entry["status"]["status_str"] == "success", comfy_harness.history_error(entry)
    if messages is not None:
        progress = [(m.data["value"], m.data["max"]) for m in messages if m.type == "progress" and m.data["node"] == "7"]
        assert progress == [(1, 2), (2, 2)]
        previews = [m for m in messages if m.type == "preview"]
        assert len(previews) == 2 and previews[0].mime == "image/jpeg"
    outputs = entry["outputs"]
    if task == "T2A":  # core SaveAudio (FLAC)
        info = probe(output_file(apollo_server, outputs["9"]["audio"][0]))
        assert info["audio"] == "flac" and info["sample_rate"] == RATE and "video" not in info
        assert info["audio_seconds"] == pytest.approx(SECONDS, abs=1e-3)
        return
    if task == "T2V":  # core CreateVideo -> SaveVideo
        info = probe(output_file(apollo_server, outputs["11"]["images"][0]))
        assert info["video"] == "h264" and "audio" not in info and info["size"] == (64, 64)
    else:  # Apollo Save AV
        info = probe(output_file(apollo_server, outputs["9"]["apollo_av"][0]))
        assert info["video"] == "h264" and info["size"] == (SIDE, SIDE)
        assert json.loads(info["metadata"]["prompt"])["7"]["inputs"]["task"] == task
        has_audio = task != "TI2V"
        assert ("audio" in info) == has_audio
        if has_audio:
            assert info["audio"] == "aac" and info["sample_rate"] == RATE
            assert info["audio_seconds"] == pytest.approx(SECONDS, abs=1e-3)
    assert info["frames"] == FRAMES and info["fps"] == FPS
    assert info["video_seconds"] == pytest.approx(SECONDS, abs=1e-3)
    if task == "T2AV":
        assert json.loads(info["metadata"]["workflow"]) == template
    if task == "V2A":  # the given video comes back as it went in (4x nearest-neighbour, two H.264 passes)
        source = probe(MEDIA / "apollo_example.mp4")["pixels"].astype(np.float32)
        shown = info["pixels"][:, 2::4, 2::4].astype(np.float32)
        assert np.abs(shown - source).mean() < 8
    if task == "A2V":  # the given audio comes back: the knocks at 0.25, 1.0 and 1.75 s
        loud = np.flatnonzero(envelope(info["wave"], RATE // 20) > 0.1) / 20
        assert {round(t * 4) / 4 for t in loud} == {0.25, 1.0, 1.75}


def _expect_error(server: ComfyServer, prompt: dict, node: str, node_type: str, *fragments: str) -> None:
    entry = server.run(prompt, check=False, timeout=120)
    assert entry["status"]["status_str"] == "error"
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_error" and data["node_id"] == node and data["node_type"] == node_type
    assert data["exception_type"] == "ValueError", data["exception_message"]
    for fragment in fragments:
        assert fragment in data["exception_message"], data["exception_message"]


def test_bad_inputs_fail_readably_and_the_server_carries_on(apollo_server: ComfyServer, apollo_workflow,
                                                            apollo_bundle) -> None:
    wrong = apollo_server.models_dir / "apollo" / "wrong_model.safetensors"
    shutil.copyfile(apollo_bundle.folder / "audio_codec.safetensors", wrong)
    prompt = apollo_workflow("T2AV")
    prompt["1"]["inputs"]["checkpoint"] = wrong.name
    _expect_error(apollo_server, prompt, "1", "ApolloModelLoader", "checkpoint 'wrong_model.safetensors': ",
                  "not an APOLLO-AV model checkpoint", "Pick an APOLLO-AV model file")

    prompt = apollo_workflow("T2AV")
    prompt["6"]["inputs"]["width"] = 63
    _expect_error(apollo_server, prompt, "6", "ApolloEmptyAVLatent",
                  "width=63 is not a multiple of 16 (codec 8x, patch); nearest valid: 48 or 64")

    prompt = apollo_workflow("TI2V")
    del prompt["10"], prompt["7"]["inputs"]["image"]
    _expect_error(apollo_server, prompt, "7", "ApolloSampler", "image: task TI2V needs a reference image")

    prompt = apollo_workflow("A2V")
    prompt["10"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
    del prompt["7"]["inputs"]["audio"]
    prompt["7"]["inputs"]["image"] = ["10", 0]
    _expect_error(apollo_server, prompt, "7", "ApolloSampler", "audio: task A2V needs the input audio")

    prompt = apollo_workflow("T2AV")
    prompt["7"]["inputs"]["seed"] = 7  # not a cached result: the whole sampler runs again
    entry = apollo_server.run(prompt, timeout=120)
    assert entry["outputs"]["9"]["apollo_av"][0]["filename"].endswith(".mp4")


def test_interrupt_mid_sampling_then_the_next_prompt_runs(apollo_server: ComfyServer, apollo_workflow) -> None:
    prompt = apollo_workflow("T2AV", steps=10000)
    prompt["7"]["inputs"]["seed"] = 11
    client = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{apollo_server.port}/ws?clientId={client}", timeout=120)
    try:
        prompt_id = apollo_server.queue(prompt, client_id=client)
        steps_seen = 0
        while True:
            opcode, payload = ws.recv_data()
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            message = json.loads(payload)
            data = message.get("data") or {}
            if message["type"] == "progress" and data.get("node") == "7":
                steps_seen = data["value"]
                if steps_seen == 2:
                    apollo_server.interrupt(prompt_id)
            if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                break
    finally:
        ws.close()
    entry = apollo_server.wait(prompt_id, timeout=30)
    assert entry["status"]["status_str"] == "error"
    assert comfy_harness.history_error(entry) == "interrupted at node 7 (ApolloSampler)"
    assert 2 <= steps_seen < 10
    prompt["7"]["inputs"]["steps"] = 2
    assert apollo_server.run(prompt, timeout=120)["status"]["status_str"] == "success"
