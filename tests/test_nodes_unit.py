"""The node pack in-process: ComfyUI 0.3.75's modules imported on the CPU, this repository loaded as
a custom-node package, each node's `execute` called directly on a tiny random debug bundle.

The strongest check: for every task, the node chain (encode -> empty latent -> sampler -> decode)
gives the same frames and waveform as apollo_core.pipeline.generate with the same seed. generate is
taken from the pack's own copy of apollo_core (ComfyUI imports it as `<pack>.apollo_core`), so both
sides share the loaded weights and caption encoder.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import pytest
import torch

pytestmark = [pytest.mark.comfy]

NODE_IDS = {"ApolloModelLoader", "ApolloCodecLoader", "ApolloTextEncoderLoader", "ApolloTextEncode",
            "ApolloEmptyAVLatent", "ApolloSplitAVLatent", "ApolloJoinAVLatent", "ApolloSampler", "ApolloDecodeAV",
            "ApolloDecodeVideo", "ApolloDecodeAudio", "ApolloSaveAV", "ApolloPreviewAV"}
PROMPT = {"video_prompt": "a red ball bouncing", "audio_prompt": "a knock", "speech": "hello"}
NEGATIVE = {"video_prompt": "blurry", "audio_prompt": "hiss", "speech": ""}
TASKS = ("T2AV", "TI2AV", "TI2V", "T2V", "T2A", "V2A", "A2V")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The debug model's matrices are tiny: intra-op threads only add barrier waits, which on a shared
    2-core machine cost more than the maths (15x measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(pack, node_id: str, hidden: dict | None = None, **inputs):
    """Execute a node the way ComfyUI does: on a clone carrying the hidden inputs."""
    return pack.NODE_CLASS_MAPPINGS[node_id].PREPARE_CLASS_CLONE(hidden or {}).execute(**inputs)


@pytest.fixture(scope="module")
def kit(apollo_pack, apollo_bundle) -> SimpleNamespace:
    p = apollo_pack
    model = run(p, "ApolloModelLoader", checkpoint=apollo_bundle.model, weight_dtype="auto", attention="auto")[0]
    codecs = run(p, "ApolloCodecLoader", video_codec=apollo_bundle.video_codec,
                 audio_codec=apollo_bundle.audio_codec)[0]
    text_encoder = run(p, "ApolloTextEncoderLoader", model=model, encoder="auto (from checkpoint)")[0]
    return SimpleNamespace(pack=p, model=model, codecs=codecs, text_encoder=text_encoder,
                           positive=run(p, "ApolloTextEncode", text_encoder=text_encoder, **PROMPT)[0],
                           negative=run(p, "ApolloTextEncode", text_encoder=text_encoder, **NEGATIVE)[0])


def latent(kit, width: int = 32, height: int = 32, seconds: float = 2.0, batch_size: int = 1) -> dict:
    return run(kit.pack, "ApolloEmptyAVLatent", model=kit.model, width=width, height=height, seconds=seconds,
               batch_size=batch_size)[0]


def sample(kit, task: str, seed: int = 3, steps: int = 2, hidden: dict | None = None, lat: dict | None = None,
           **media) -> dict:
    return run(kit.pack, "ApolloSampler", hidden or {"UNIQUE_ID": "7"}, model=kit.model, codecs=kit.codecs,
               positive=kit.positive, negative=kit.negative, latent=lat or latent(kit), task=task, seed=seed,
               steps=steps, video_cfg=3.0, audio_cfg=2.0, shift=1.0, sampler="euler", video_sync_cfg=0.5,
               audio_sync_cfg=1.5, **media)[0]


def inputs_for(task) -> tuple[dict, dict]:
    """(node inputs, Request fields) carrying the same image / video / audio."""
    gen = torch.Generator().manual_seed(11)
    frames = torch.rand(16, 32, 32, 3, generator=gen)
    wave = torch.rand(1, 16000, generator=gen) * 2 - 1
    if task.needs_image:
        return {"image": frames[:1]}, {"image": frames[0]}
    if task.needs_video:
        return {"video": frames}, {"video": frames}
    if task.needs_audio:
        return {"audio": {"waveform": wave[None], "sample_rate": 8000}}, {"audio": wave}
    return {}, {}


def test_pack_registers_every_node_as_v3_with_apollo_ids(apollo_pack, comfy_in_process) -> None:
    assert set(apollo_pack.NODE_CLASS_MAPPINGS) == NODE_IDS
    for node_id, cls in apollo_pack.NODE_CLASS_MAPPINGS.items():
        schema = cls.define_schema()
        assert issubclass(cls, comfy_in_process.io.ComfyNode) and schema.node_id == node_id
        assert schema.category.startswith("apollo/") and schema.description
        assert apollo_pack.NODE_DISPLAY_NAME_MAPPINGS[node_id] == schema.display_name
        assert cls.GET_NODE_INFO_V1()["name"] == node_id  # what /object_info serves


def test_model_loader_lists_bundles_and_caches_patchers(kit, apollo_bundle, comfy_in_process) -> None:
    paths = kit.pack.nodes.paths
    assert paths.model_choices()[0] == "apollo-tiny (embedded)"
    assert apollo_bundle.model in paths.model_choices()
    assert apollo_bundle.video_codec not in paths.model_choices()  # codec files go to the codec loader
    assert {apollo_bundle.video_codec, apollo_bundle.audio_codec} <= set(paths.codec_choices())
    model = kit.model
    assert isinstance(model.patcher, comfy_in_process.model_patcher.ModelPatcher)
    assert model.config.name == "debug" and model.text_encoder == "minilm"
    assert model.defaults == {"seconds": 2.0, "width": 32, "height": 32}
    again = run(kit.pack, "ApolloModelLoader", checkpoint=apollo_bundle.model, weight_dtype="auto", attention="auto")[0]
    assert again is model
    fp8 = run(kit.pack, "ApolloModelLoader", checkpoint=apollo_bundle.model, weight_dtype="fp8_e4m3fn",
              attention="sdpa")[0]
    assert fp8.patcher.model.video_embed.weight.dtype == torch.float8_e4m3fn
    assert model.patcher.model.video_embed.weight.dtype == torch.float32


def test_loaders_reject_wrong_files_with_the_input_name(kit, apollo_bundle) -> None:
    p = kit.pack
    with pytest.raises(ValueError, match=r"checkpoint '.*video_codec.safetensors'.*not an APOLLO-AV model checkpoint"):
        run(p, "ApolloModelLoader", checkpoint=apollo_bundle.video_codec, weight_dtype="auto", attention="auto")
    with pytest.raises(ValueError, match=r"checkpoint: checkpoint 'nope.safetensors' was not found in models/apollo"):
        run(p, "ApolloModelLoader", checkpoint="nope.safetensors", weight_dtype="auto", attention="auto")
    with pytest.raises(ValueError, match=r"attention backend 'sage' is not available"):
        run(p, "ApolloModelLoader", checkpoint=apollo_bundle.model, weight_dtype="auto", attention="sage")
    with pytest.raises(ValueError, match=r"video_codec '.*audio_codec.safetensors' holds a TinyAudioVAE, not a video"):
        run(p, "ApolloCodecLoader", video_codec=apollo_bundle.audio_codec, audio_codec=apollo_bundle.audio_codec)
    with pytest.raises(ValueError, match=r"encoder: caption encoder 'qwen' is not available.*models/text_encoders"):
        kit.pack.nodes.loaders.load_apollo_text_encoder(kit.model, "qwen")
    embedded = p.nodes.paths.default_checkpoint() / "model.safetensors"
    if embedded.is_file():  # once the lead ships apollo-tiny, the embedded choice loads
        assert run(p, "ApolloModelLoader", checkpoint="apollo-tiny (embedded)", weight_dtype="auto",
                   attention="auto")[0].config.name == "apollo-tiny"
    else:
        with pytest.raises(ValueError, match=r"checkpoint: the embedded apollo-tiny is not installed"):
            run(p, "ApolloModelLoader", checkpoint="apollo-tiny (embedded)", weight_dtype="auto", attention="auto")


def test_text_encode_makes_core_conditioning(kit) -> None:
    [[tokens, extra]] = kit.positive
    cond = extra["apollo"]
    assert tokens.shape[0] == 1 and tokens.shape[2] == 384 and tokens.device.type == "cpu"
    assert torch.equal(tokens, cond.video_tokens) and cond.speech.shape[1] == len("hello") + 2
    assert not torch.equal(cond.audio_tokens[:, :2], kit.negative[0][1]["apollo"].audio_tokens[:, :2])
    foreign = [[torch.zeros(1, 77, 768), {"pooled_output": torch.zeros(1, 768)}]]
    with pytest.raises(ValueError, match=r"positive: this CONDITIONING was not made by Apollo Text Encode"):
        run(kit.pack, "ApolloSampler", {}, model=kit.model, codecs=kit.codecs, positive=foreign,
            negative=kit.negative, latent=latent(kit), task="T2AV", seed=0, steps=1, video_cfg=1.0, audio_cfg=1.0,
            shift=1.0, sampler="euler")


def test_empty_latent_validates_sizes_and_splits_and_joins(kit) -> None:
    lat = latent(kit)
    assert getattr(lat["samples"], "is_nested", False)  # ComfyUI 0.3.75 has comfy.nested_tensor
    video, audio = lat["samples"].unbind()
    assert video.shape == (1, 4, 8, 8, 8) and audio.shape == (1, 4, 64)
    meta = lat["apollo"]
    assert (meta["fps"], meta["sample_rate"], meta["frames"], meta["samples"]) == (8.0, 8000, 16, 16000)
    assert meta["video_latent_rate"] == 4.0 and meta["audio_latent_rate"] == 32.0
    with pytest.raises(ValueError, match=r"width=30 is not a multiple of 8 .*nearest valid: 24 or 32"):
        latent(kit, width=30)
    with pytest.raises(ValueError, match=r"seconds=1.1 is not a multiple of 0.25 s .*nearest valid: 1 or 1.25"):
        latent(kit, seconds=1.1)
    v, a = run(kit.pack, "ApolloSplitAVLatent", latent=lat).args
    assert torch.equal(v["samples"], video) and torch.equal(a["samples"], audio)
    joined = run(kit.pack, "ApolloJoinAVLatent", video=v, audio=a)[0]
    assert [t.shape for t in joined["samples"].unbind()] == [video.shape, audio.shape]
    with pytest.raises(ValueError, match=r"video: expected a 5-d video latent"):
        run(kit.pack, "ApolloJoinAVLatent", video=a, audio=v)
    with pytest.raises(ValueError, match=r"latent: this is only the video part"):
        sample(kit, "T2V", lat=v)
    with pytest.raises(ValueError, match=r"latent: not an APOLLO AV latent"):
        sample(kit, "T2V", lat={"samples": torch.zeros(1, 4, 8, 8)})


@pytest.mark.parametrize("task", TASKS)
def test_node_chain_equals_pipeline_generate(kit, task: str) -> None:
    core = kit.pack.apollo_core
    job = core.tasks.Task[task]
    node_media, request_media = inputs_for(job)
    out = sample(kit, task, **node_media)
    assert out["apollo"]["content"] == [m for m in ("video", "audio") if getattr(job.spec, f"has_{m}")]
    bundle = core.pipeline.Bundle(kit.model.patcher.model, kit.codecs.video, kit.codecs.audio,
                                  kit.text_encoder.encoder)
    request = core.pipeline.Request(task=job, negative_video="blurry", negative_audio="hiss", seconds=2.0, width=32,
                                    height=32, steps=2, video_cfg=3.0, audio_cfg=2.0, video_sync_cfg=0.5,
                                    audio_sync_cfg=1.5, seed=3, **PROMPT, **request_media)
    clip = core.pipeline.generate(bundle, request)
    if job.spec.has_video:
        frames = run(kit.pack, "ApolloDecodeVideo", codecs=kit.codecs, latent=out, chunk_frames=16)[0]
        assert frames.shape == clip.frames.shape == (16, 32, 32, 3)
        torch.testing.assert_close(frames, clip.frames, atol=1e-5, rtol=0)
    if job.spec.has_audio:
        audio = run(kit.pack, "ApolloDecodeAudio", codecs=kit.codecs, latent=out)[0]
        assert audio["sample_rate"] == clip.sample_rate == 8000
        torch.testing.assert_close(audio["waveform"][0], clip.waveform, atol=1e-5, rtol=0)


def test_sampler_samples_with_the_checkpoints_frame_spread(kit, monkeypatch) -> None:
    core = kit.pack.apollo_core
    monkeypatch.setitem(kit.model.defaults, "spread", 2.0)
    frames = run(kit.pack, "ApolloDecodeVideo", codecs=kit.codecs, latent=sample(kit, "T2V"), chunk_frames=16)[0]
    bundle = core.pipeline.Bundle(kit.model.patcher.model, kit.codecs.video, kit.codecs.audio,
                                  kit.text_encoder.encoder, defaults={"spread": 2.0})
    request = core.pipeline.Request(task=core.tasks.Task.T2V, negative_video="blurry", negative_audio="hiss",
                                    seconds=2.0, width=32, height=32, steps=2, video_cfg=3.0, audio_cfg=2.0,
                                    video_sync_cfg=0.5, audio_sync_cfg=1.5, seed=3, **PROMPT)
    torch.testing.assert_close(frames, core.pipeline.generate(bundle, request).frames, atol=1e-5, rtol=0)
    flat = core.pipeline.generate(bundle, dataclasses.replace(request, spread=0.0)).frames
    assert not torch.allclose(frames, flat, atol=1e-3)


def test_sampler_defaults_to_the_embedded_models_sampling(kit) -> None:
    core = kit.pack.apollo_core
    _, extra = core.checkpoint.read_config(core.pipeline.default_checkpoint() / "model.safetensors")
    node = kit.pack.nodes.sampler
    assert node.AUDIO_SYNC_DEFAULT == extra["defaults"]["audio_sync_cfg"]
    assert node.STEPS_DEFAULT == extra["defaults"]["steps"] and node.SAMPLER_DEFAULT == extra["defaults"]["solver"]
    # the node has no eta widget: it samples with the pipeline's, which the bundle must not contradict
    assert extra["defaults"].get("eta", core.sampling.ANCESTRAL_ETA) == core.sampling.ANCESTRAL_ETA


def test_sampler_converts_and_checks_its_media_inputs(kit, comfy_in_process) -> None:
    with pytest.raises(ValueError, match=r"image: task TI2V needs a reference image: connect Load Image"):
        sample(kit, "TI2V")
    with pytest.raises(ValueError, match=r"audio: task A2V needs the input audio"):
        sample(kit, "A2V", image=torch.rand(1, 32, 32, 3))
    with pytest.raises(ValueError, match=r"video: 8 frames \(1 s at 8 fps\) but the latent needs 16 .*set seconds to 1 "):
        sample(kit, "V2A", video=torch.rand(8, 32, 32, 3))
    # a VIDEO at 16 fps is retimed to the model's 8 fps; an RGBA still of another size is fitted
    frames = torch.rand(32, 48, 40, 3)
    video = comfy_in_process.api.InputImpl.VideoFromComponents(
        comfy_in_process.api.Types.VideoComponents(images=frames, frame_rate=Fraction(16)))
    out = sample(kit, "V2A", video=video)
    given = out["apollo"]["given"]["video"]
    assert given.shape == (1, 16, 32, 32, 3)
    expected = kit.pack.nodes.media.fit_frames(frames[::2], 32, 32)
    torch.testing.assert_close(given[0], expected)
    assert sample(kit, "TI2V", image=torch.rand(1, 20, 50, 4))["apollo"]["content"] == ["video"]
    stereo = {"waveform": torch.rand(1, 2, 88200) * 2 - 1, "sample_rate": 44100}
    assert sample(kit, "A2V", audio=stereo)["apollo"]["given"]["audio"].shape == (1, 1, 16000)
    batch = sample(kit, "T2AV", lat=latent(kit, batch_size=2))
    assert [t.shape[0] for t in batch["samples"].unbind()] == [2, 2]


def test_sampler_reports_progress_with_previews_and_honours_interrupts(kit, comfy_in_process) -> None:
    utils, mm = comfy_in_process.utils, comfy_in_process.model_management
    calls = []
    previous = utils.PROGRESS_BAR_HOOK
    utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append(
        (value, total, node_id, preview[0], preview[1].size)))
    try:
        sample(kit, "T2AV", steps=3, hidden={"UNIQUE_ID": "12"})
        sample(kit, "T2A", steps=1, hidden={"UNIQUE_ID": "13"})
    finally:
        utils.set_progress_bar_global_hook(previous)
    assert calls == [(1, 3, "12", "JPEG", (256, 256)), (2, 3, "12", "JPEG", (256, 256)),
                     (3, 3, "12", "JPEG", (256, 256)), (1, 1, "13", "JPEG", (512, 128))]
    mm.interrupt_current_processing()
    with pytest.raises(mm.InterruptProcessingException):
        sample(kit, "T2AV", steps=50)
    assert not mm.processing_interrupted()


def test_decoders_give_core_types_and_refuse_missing_streams(kit) -> None:
    p = kit.pack
    t2a = sample(kit, "T2A")
    with pytest.raises(ValueError, match=r"latent: task T2A produced no video; decode it with Apollo Decode Audio"):
        run(p, "ApolloDecodeAV", codecs=kit.codecs, latent=t2a, chunk_frames=16)
    t2v = sample(kit, "T2V")
    with pytest.raises(ValueError, match=r"latent: task T2V produced no audio; decode it with Apollo Decode Video"):
        run(p, "ApolloDecodeAudio", codecs=kit.codecs, latent=t2v)
    out = sample(kit, "T2AV", lat=latent(kit, seconds=1.5, batch_size=2))
    images, audio, video, fps = run(p, "ApolloDecodeAV", codecs=kit.codecs, latent=out, chunk_frames=0).args
    assert images.shape == (24, 32, 32, 3) and 0 <= images.min() and images.max() <= 1
    assert audio["waveform"].shape == (2, 1, 12000) and audio["waveform"].dtype == torch.float32
    assert fps == 8.0 and video.get_frame_rate() == 8 and video.get_dimensions() == (32, 32)
    parts = video.get_components()
    assert parts.images.shape[0] == 24 and parts.audio["waveform"].shape == (1, 1, 24000)
    chunked = run(p, "ApolloDecodeAV", codecs=kit.codecs, latent=out, chunk_frames=1)[0]
    torch.testing.assert_close(chunked, images, atol=1e-5, rtol=0)


def test_save_av_writes_h264_aac_with_the_workflow(kit, comfy_in_process) -> None:
    import folder_paths

    p = kit.pack
    api = comfy_in_process.api
    frames = torch.rand(12, 31, 33, 3)  # odd sides: padded for libx264
    audio = {"waveform": torch.rand(1, 2, 20000) * 2 - 1, "sample_rate": 11000}  # not an AAC rate
    video = api.InputImpl.VideoFromComponents(api.Types.VideoComponents(images=frames, frame_rate=Fraction(6),
                                                                        audio=audio))
    workflow = {"nodes": [], "links": [], "note": "unit"}
    result = run(p, "ApolloSaveAV", {"PROMPT": {"1": {"class_type": "ApolloSaveAV"}},
                                     "EXTRA_PNGINFO": {"workflow": workflow}},
                 video=video, filename_prefix="unit/save", crf=20, display_size=0)
    saved = result.ui["apollo_av"][0]
    assert saved["type"] == "output" and saved["subfolder"] == "unit"
    path = Path(folder_paths.get_output_directory()) / saved["subfolder"] / saved["filename"]
    with av.open(str(path)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert (v.codec_context.width, v.codec_context.height) == (34, 32) and v.average_rate == 6
        assert a.codec_context.sample_rate == 48000 and a.codec_context.channels == 2
        assert json.loads(container.metadata["workflow"]) == workflow
        assert json.loads(container.metadata["prompt"])["1"]["class_type"] == "ApolloSaveAV"
        assert sum(1 for _ in container.decode(v)) == 12
        assert float(a.duration * a.time_base) == pytest.approx(2.0, abs=1e-3)
    preview = run(p, "ApolloPreviewAV", video=video, filename_prefix="ApolloAV_preview", crf=30,
                  display_size=64).ui["apollo_av"][0]
    assert preview["type"] == "temp"
    with av.open(str(Path(folder_paths.get_temp_directory()) / preview["subfolder"] / preview["filename"])) as c:
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (64, 60)
    with pytest.raises(ValueError, match=r"filename_prefix: '../escape' points outside the output folder"):
        run(p, "ApolloSaveAV", video=video, filename_prefix="../escape", crf=20, display_size=0)
    with pytest.raises(ValueError, match=r"video: expected a VIDEO"):
        run(p, "ApolloSaveAV", video=frames, filename_prefix="unit/bad", crf=20, display_size=0)


def test_example_inputs_are_installed_without_overwriting(apollo_pack, tmp_path: Path, monkeypatch) -> None:
    import folder_paths

    examples = apollo_pack.nodes.examples
    names = sorted(path.name for path in examples.MEDIA.glob(examples.PATTERN))
    assert names == ["apollo_example.mp4", "apollo_example.png", "apollo_example.wav"]
    assert all((Path(folder_paths.get_input_directory()) / name).is_file() for name in names)
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path))
    (tmp_path / "apollo_example.png").write_bytes(b"mine")
    assert examples.install_example_inputs() == ["apollo_example.mp4", "apollo_example.wav"]
    assert (tmp_path / "apollo_example.png").read_bytes() == b"mine"
    shutil.rmtree(tmp_path)
    tmp_path.write_text("a file where the folder should be")
    assert examples.install_example_inputs() == []  # logged, never raised
