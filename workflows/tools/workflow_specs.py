"""The seven task workflows in ComfyUI's API format: the source for workflows/api/<task>.json, from
which make_templates.py renders the UI-format templates (workflows/<task>.json) and thumbnails.

Every workflow loads the embedded apollo-tiny by its listed name, so it runs straight after install.
"""
from __future__ import annotations

from typing import Any

from apollo_core.checkpoint import read_config
from apollo_core.pipeline import MODEL_FILE, default_checkpoint

EMBEDDED = "apollo-tiny (embedded)"
TASKS = ("T2AV", "TI2AV", "TI2V", "T2V", "T2A", "V2A", "A2V")
# In the synthetic world apollo-tiny was trained on (paraphrases of its captions: the MiniLM caption
# encoder maps them close); the example media are that scene (make_media.py). The negatives stay
# empty: apollo-tiny learned its unconditional branch from dropped (empty) captions.
VIDEO_PROMPT = "a large red circle bounces on a dark blue background"
AUDIO_PROMPT = "a low knock each time it hits the floor"
NEGATIVE_VIDEO = ""
NEGATIVE_AUDIO = ""
EXAMPLE_IMAGE, EXAMPLE_VIDEO, EXAMPLE_AUDIO = "apollo_example.png", "apollo_example.mp4", "apollo_example.wav"

# Where each node sits in the UI template: (column, row) on a 400 x 220 px grid.
LAYOUT = {"1": (0, 0), "2": (0, 1), "3": (0, 2), "4": (1, 0), "5": (1, 1.6), "6": (1, 2.6), "10": (1, 3.4),
          "7": (2, 0), "8": (3, 0), "9": (4, 0), "11": (5, 0)}


def _node(class_type: str, title: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


def _audio_sync_default() -> float:
    """The embedded apollo-tiny's recommended audio sync guidance, from its bundle's metadata."""
    return read_config(default_checkpoint() / MODEL_FILE)[1]["defaults"]["audio_sync_cfg"]


def workflow(task: str) -> dict[str, dict[str, Any]]:
    """API prompt for `task`: loaders, prompts, empty latent, sampler, then the task's decode and save."""
    prompt = {
        "1": _node("ApolloModelLoader", "Apollo Load Model", checkpoint=EMBEDDED, weight_dtype="auto",
                   attention="auto"),
        "2": _node("ApolloCodecLoader", "Apollo Load Codecs (VAE)", video_codec=EMBEDDED, audio_codec=EMBEDDED),
        "3": _node("ApolloTextEncoderLoader", "Apollo Load Text Encoder", model=["1", 0],
                   encoder="auto (from checkpoint)"),
        "4": _node("ApolloTextEncode", "Positive prompt", text_encoder=["3", 0],
                   video_prompt="" if task == "T2A" else VIDEO_PROMPT,
                   audio_prompt="" if task in ("T2V", "TI2V") else AUDIO_PROMPT, speech=""),
        "5": _node("ApolloTextEncode", "Negative prompt", text_encoder=["3", 0], video_prompt=NEGATIVE_VIDEO,
                   audio_prompt=NEGATIVE_AUDIO, speech=""),
        "6": _node("ApolloEmptyAVLatent", "Apollo Empty AV Latent", model=["1", 0], width=64, height=64,
                   seconds=2.0, batch_size=1),
    }
    sampler = dict(model=["1", 0], codecs=["2", 0], positive=["4", 0], negative=["5", 0], latent=["6", 0],
                   task=task, seed=42, steps=12, video_cfg=3.0, audio_cfg=3.0, shift=1.0, sampler="euler_ancestral",
                   video_sync_cfg=0.0, audio_sync_cfg=_audio_sync_default())
    if task in ("TI2AV", "TI2V"):
        prompt["10"] = _node("LoadImage", "First frame", image=EXAMPLE_IMAGE)
        sampler["image"] = ["10", 0]
    if task == "V2A":
        prompt["10"] = _node("LoadVideo", "Input video", file=EXAMPLE_VIDEO)
        sampler["video"] = ["10", 0]
    if task == "A2V":
        prompt["10"] = _node("LoadAudio", "Input audio", audio=EXAMPLE_AUDIO)
        sampler["audio"] = ["10", 0]
    prompt["7"] = _node("ApolloSampler", f"Apollo AV Sampler ({task})", **sampler)
    prefix = f"apollo/{task}"
    if task in ("T2AV", "TI2AV", "V2A", "A2V"):
        prompt["8"] = _node("ApolloDecodeAV", "Apollo Decode AV", codecs=["2", 0], latent=["7", 0], chunk_frames=16)
        prompt["9"] = _node("ApolloSaveAV", "Apollo Save AV (mp4)", video=["8", 2], filename_prefix=prefix, crf=18,
                            display_size=256)
    elif task == "TI2V":
        prompt["8"] = _node("ApolloDecodeVideo", "Apollo Decode Video", codecs=["2", 0], latent=["7", 0],
                            chunk_frames=16)
        prompt["9"] = _node("ApolloSaveAV", "Apollo Save AV (mp4)", video=["8", 1], filename_prefix=prefix, crf=18,
                            display_size=256)
    elif task == "T2V":  # chains into the core video nodes
        prompt["8"] = _node("ApolloDecodeVideo", "Apollo Decode Video", codecs=["2", 0], latent=["7", 0],
                            chunk_frames=16)
        prompt["9"] = _node("CreateVideo", "Create Video", images=["8", 0], fps=["8", 2])
        prompt["11"] = _node("SaveVideo", "Save Video", video=["9", 0], filename_prefix=prefix, format="auto",
                             codec="auto")
    else:  # T2A: core audio nodes
        prompt["8"] = _node("ApolloDecodeAudio", "Apollo Decode Audio", codecs=["2", 0], latent=["7", 0])
        prompt["9"] = _node("SaveAudio", "Save Audio", audio=["8", 0], filename_prefix=prefix)
    return prompt
