"""LISA's released checkpoints, on a tiny release written in their exact layout (CPU, offline).

Oracles: the LLM against ``transformers.LlamaForCausalLM`` on the same weights, the CLIP tokens
against ``CLIPVisionModel`` + ``CLIPImageProcessor``, SAM against ``segment_anything.modeling``
modules run the way LISA's ``model_forward`` runs them, and a whole turn against that pipeline.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import lisa_tiny_release as tiny
from pixelagent import Agent
from pixelagent.errors import ConfigError, MissingDependencyError, WeightsNotFoundError
from pixelagent.registry import get_registry
from pixelagent_lisa import release_preset
from pixelagent_llava.checkpoints import CheckpointFiles
from pixelagent_llava.template import Exchange
from pixelagent_sam.sizes import PIXEL_MEAN, PIXEL_STD, SIZES

QUESTIONS = ["What is in this image?", "Please segment the cup.", "And the spoon on it?"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return tiny.write_release(tmp_path_factory.mktemp("release"), seed=1)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    return tiny.write_release(tmp_path_factory.mktemp("scripted"), seed=2, scripted=True)


@pytest.fixture(scope="module")
def agent(release):
    return Agent(release_preset(release.folder, device="cpu", llm={"settings": {"max_new_tokens": 8}}))


@pytest.fixture(scope="module")
def scripted_agent(scripted):
    return Agent(release_preset(scripted.folder, device="cpu"))


def photo(height=96, width=128, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def oracle_llama(release):
    """transformers' own LLaMA holding the release's LLaMA weights (float32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = release.state["model.embed_tokens.weight"].shape[0]
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **tiny.LLAMA)).eval()
    own = model.state_dict()
    model.load_state_dict({k: v.float() for k, v in release.state.items() if k in own}, strict=True)
    return model


# -- the layout ---------------------------------------------------------------------------------
def test_the_tiny_release_has_the_published_files_and_keys(release):
    names = sorted(p.name for p in release.folder.iterdir())
    assert names == ["added_tokens.json", "config.json", "generation_config.json", "pytorch_model-00001-of-00002.bin",
                     "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json", "special_tokens_map.json",
                     "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((release.folder / "config.json").read_text())
    assert config["architectures"] == ["LISAForCausalLM"] and config["model_type"] == "llava"
    assert config["mm_use_im_start_end"] and config["mm_vision_select_layer"] == -2 and config["out_dim"] == 256
    index = json.loads((release.folder / "pytorch_model.bin.index.json").read_text())["weight_map"]
    assert set(index.values()) == {"pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"}
    for key in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight",
                "lm_head.weight", "model.mm_projector.weight", "model.mm_projector.bias",
                "model.visual_model.image_encoder.patch_embed.proj.weight",
                "model.visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
                "model.visual_model.mask_decoder.iou_token.weight", "model.text_hidden_fcs.0.0.weight",
                "model.text_hidden_fcs.0.2.bias"):
        assert key in index, key
    assert not any("vision_tower" in key for key in index)
    assert release.state["model.layers.0.mlp.up_proj.weight"].dtype == torch.bfloat16
    assert release.state["model.visual_model.mask_decoder.iou_token.weight"].dtype == torch.float32


@pytest.mark.parametrize("layout", ["bin", "safetensors"])
def test_checkpoint_files_read_one_slice_from_the_shards_that_hold_it(tmp_path, release, layout):
    tiny.write_shards(tmp_path, release.state, layout)
    files = CheckpointFiles(tmp_path)
    fcs = files.tensors("model.text_hidden_fcs.0.")
    assert sorted(fcs) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert torch.equal(fcs["2.weight"], release.state["model.text_hidden_fcs.0.2.weight"])
    assert len(files._opened) == 1  # the projection lives in the second shard only
    assert files.tensors("model.no_such_part.") == {}


def test_a_folder_without_weights_says_what_it_looked_for(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="pytorch_model.bin.index.json"):
        CheckpointFiles(tmp_path)


# -- tokenizer and prompt -------------------------------------------------------------------------
def test_the_tokenizer_keeps_the_release_ids_and_adds_ours(agent, release):
    tokenizer = agent.parts["llm"].tokenizer
    for token, index in release.added.items():
        assert tokenizer.convert_tokens_to_ids(token) == index
    assert agent.parts["llm"].seg_id == release.seg_id == agent.parts["alignment"].seg_id
    assert min(tokenizer.convert_tokens_to_ids(["[OBJ]", "<image>"])) >= release.base_vocab + len(release.added)
    assert tokenizer.pad_token == "<unk>"


def test_the_first_prompt_is_lisas_llava_v1_prompt(agent):
    template = agent.parts["llm"].template
    tokenizer = agent.parts["llm"].tokenizer
    ids, labels = template.encode([Exchange("What is it?", "Sure, [SEG]."), Exchange("And [SEG] </s>?")])
    tokens = tokenizer.convert_ids_to_tokens(ids)
    start = tokens.index("<im_start>")
    assert tokens[0] == "<s>" and tokens[start - 1] == "▁USER:" and tokens[start:start + 3] == [
        "<im_start>", "<image>", "<im_end>"]
    assert tokenizer.decode(ids[1:start]) == ("A chat between a curious human and an artificial intelligence assistant. "
                                              "The assistant gives helpful, detailed, and polite answers to the "
                                              "human's questions. USER:")
    answer = [i for i, label in zip(ids, labels) if label != -100]
    # chunks as transformers 4.31 cut them: "Sure," [SEG] "." each encoded alone, so "." gets the dummy ▁
    assert tokenizer.convert_ids_to_tokens(answer) == ["▁Sure,", "[SEG]", "▁", ".", "</s>"]
    later = tokenizer.decode(ids[len(ids) - len(template.prompt_ids("And [SEG] </s>?", first=False)):])
    assert later == "USER: And [SEG] </s>? ASSISTANT:"
    assert ids.count(agent.parts["llm"].seg_id) == 1  # the user's "[SEG]" stayed characters


# -- oracles ----------------------------------------------------------------------------------------
def test_llm_logits_equal_transformers_llama_on_the_same_weights(agent, release):
    backbone = agent.parts["llm"]
    oracle = oracle_llama(release)
    ids = torch.tensor([[1, 300, 301, 302, release.seg_id, 400, 2]])
    with torch.no_grad():
        want = oracle(input_ids=ids).logits
        hidden = backbone.language_model(inputs_embeds=backbone._embed(ids[0])[None]).last_hidden_state
        got = backbone.llava.lm_head(hidden)[..., :want.shape[-1]]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    projector = backbone.llava.model.multi_modal_projector
    assert torch.equal(projector.weight, release.state["model.mm_projector.weight"].float())


def test_clip_tokens_equal_clip_vision_model_on_the_processors_pixels(agent, release):
    from transformers import CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image = photo(90, 150)
    size = tiny.CLIP["image_size"]
    pixels = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})(
        images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = CLIPVisionModel.from_pretrained(release.clip).eval()(pixel_values=pixels, output_hidden_states=True)
    got = agent.parts["visual_encoder"].encode(image)
    assert got.shape == (16, tiny.CLIP["hidden_size"])  # (32 / 8)² patches, CLS dropped
    torch.testing.assert_close(got, want.hidden_states[-2][0, 1:], atol=1e-5, rtol=1e-5)


def official_sam(state):
    """segment_anything.modeling's Sam, wired at SAM-tiny's sizes, holding ``state``."""
    from functools import partial

    from pixelagent_sam.importing import import_sam_modeling

    m, size = import_sam_modeling(), SIZES["tiny"]
    grid = size.image_size // size.patch_size
    sam = m.Sam(
        m.ImageEncoderViT(img_size=size.image_size, patch_size=size.patch_size, embed_dim=size.embed_dim,
                          depth=size.depth, num_heads=size.num_heads, mlp_ratio=4, out_chans=256, qkv_bias=True,
                          norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                          window_size=size.window_size, global_attn_indexes=size.global_attn_indexes),
        m.PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                        input_image_size=(size.image_size, size.image_size), mask_in_chans=16),
        m.MaskDecoder(num_multimask_outputs=3, transformer=m.TwoWayTransformer(depth=2, embedding_dim=256,
                                                                                mlp_dim=2048, num_heads=8),
                      transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD))
    sam.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return sam.eval()


def lisa_mask(sam, image, prompt):
    """LISA's mask path (``model_forward``): resize, ``Sam.preprocess``, one text-embedding token."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = sam.image_encoder.img_size / max(height, width)
    new = (int(height * scale + 0.5), int(width * scale + 0.5))
    resized = np.asarray(Image.fromarray(image).resize((new[1], new[0]), Image.Resampling.BILINEAR))
    with torch.no_grad():
        pixels = sam.preprocess(torch.from_numpy(resized.copy()).permute(2, 0, 1).float()[None])
        embedding = sam.image_encoder(pixels)
        sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
        sparse = torch.cat([sparse, prompt.reshape(1, 1, -1).float()], dim=1)
        low, _ = sam.mask_decoder(image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
                                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                  multimask_output=False)
        masks = sam.postprocess_masks(low, new, (height, width))
    return embedding, (masks[0, 0] > sam.mask_threshold).numpy()


def test_the_sam_part_equals_segment_anything_on_the_release_weights(agent, release):
    from pixelagent.parts import DecoderPrompt

    sam = official_sam(release.sub("model.visual_model."))
    image, prompt = photo(80, 120, seed=3), torch.randn(256, generator=torch.Generator().manual_seed(4))
    decoder = agent.parts["mask_decoder"]
    ours = decoder.embed_image(image)
    want_embedding, want_mask = lisa_mask(sam, image, prompt)
    torch.testing.assert_close(ours.embedding, want_embedding, atol=1e-5, rtol=1e-5)
    got = decoder.decode(ours, [DecoderPrompt("", embedding=prompt)], image.shape[:2])[0].mask
    assert got.shape == want_mask.shape and (got != want_mask).mean() < 1e-3


def test_a_whole_turn_equals_lisas_pipeline_on_the_same_weights(scripted_agent, scripted):
    """[SEG]'s state (the one that predicted it, in transformers' LLaMA) → text_hidden_fcs → SAM."""
    image = photo(seed=5)
    session = scripted_agent.session(image)
    reply = session.ask("What is the cup?")
    assert reply.raw_text == "Sure,[SEG]." and len(reply.targets) == 1
    backbone = scripted_agent.parts["llm"]
    ids, _ = backbone.template.encode([Exchange("What is the cup?")])
    answer = backbone.tokenizer("Sure,", add_special_tokens=False)["input_ids"] + [scripted.seg_id]
    visual = scripted_agent.parts["visual_encoder"].encode(image)
    with torch.no_grad():
        expanded = backbone._expand(ids + answer, [-100] * (len(ids) + len(answer)), visual).embeds
        states = oracle_llama(scripted).model(inputs_embeds=expanded[None]).last_hidden_state[0]
        fcs = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 256))
        fcs.load_state_dict({k: v for k, v in scripted.sub("model.text_hidden_fcs.0.").items()})
        prompt = fcs(states[-2])  # the position before [SEG]: the state that predicted it
    _, want = lisa_mask(official_sam(scripted.sub("model.visual_model.")), image, prompt)
    got = reply.targets[0].mask.array
    assert (got != want).mean() < 1e-3 and got.any()


def test_greedy_answers_equal_transformers_generate(agent, release):
    from pixelagent.intent import IntentState
    from pixelagent.parts import LLMRequest

    backbone, image = agent.parts["llm"], photo(seed=6)
    visual = agent.parts["visual_encoder"].encode(image)
    generation = backbone.respond(LLMRequest("What is it?", (), image, visual, IntentState(), {}))
    ids, _ = backbone.template.encode([Exchange("What is it?")])
    embeds = backbone._expand(ids, [-100] * len(ids), visual).embeds
    with torch.no_grad():
        want = oracle_llama(release).generate(inputs_embeds=embeds[None], max_new_tokens=8, do_sample=False,
                                              eos_token_id=2, pad_token_id=0)[0].tolist()
    assert generation.token_ids.tolist() == [t for t in want if t != 2]


# -- sessions, intent, tool, server ---------------------------------------------------------------
def test_three_turns_answer_with_masks_track_intent_and_encode_once(scripted_agent):
    towers = {"clip": scripted_agent.parts["visual_encoder"].clip,
              "sam": scripted_agent.parts["mask_decoder"].sam.image_encoder}
    calls = []
    hooks = [tower.register_forward_hook(lambda *_, _n=name: calls.append(_n)) for name, tower in towers.items()]
    try:
        session = scripted_agent.session(photo(seed=7))
        replies = [session.ask(question) for question in QUESTIONS]
    finally:
        for hook in hooks:
            hook.remove()
    assert [r.text for r in replies] == ["Sure,."] * 3 and all(len(r.targets) == 1 for r in replies)
    assert all(r.targets[0].mask.area > 0 for r in replies)
    assert sorted(calls) == ["clip", "sam"]  # each tower ran once for the three turns
    focuses = session.intent.focuses
    assert [f.turn for f in focuses] == [1, 2, 3] and focuses[0].relation.value == "first"


def test_the_langchain_tool_carries_the_mask(scripted_agent):
    from pixelagent.tools.langchain import PixelAgentTool

    tool = PixelAgentTool.for_image(scripted_agent, photo(seed=8))
    message = tool.invoke({"name": "segment_image", "args": {"request": "segment the cup"}, "id": "c1",
                           "type": "tool_call"})
    assert message.artifact["targets"] and "px" in message.content


def test_the_server_answers_a_turn(scripted_agent):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    import io

    import httpx
    from PIL import Image

    from pixelagent.server import ServerSettings, create_app
    from pixelagent.server.testing import ServerThread

    buffer = io.BytesIO()
    Image.fromarray(photo(seed=9)).save(buffer, format="PNG")
    with ServerThread(create_app(ServerSettings(), agent=scripted_agent)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        opened = client.post("/v1/sessions", files={"image": ("p.png", buffer.getvalue(), "image/png")})
        assert opened.status_code == 201, opened.text
        turn = client.post(f"/v1/sessions/{opened.json()['id']}/ask", json={"question": QUESTIONS[1]})
    assert turn.status_code == 200, turn.text
    assert "[SEG]" in json.dumps(turn.json())


# -- presets, hub ids, options ------------------------------------------------------------------------
def test_every_published_release_is_a_preset_aliased_by_its_hub_id():
    registry = get_registry()
    for name, hub_id in {"lisa-7b-v1": "xinlai/LISA-7B-v1", "lisa-7b-v1-explanatory": "xinlai/LISA-7B-v1-explanatory",
                         "lisa-13b-llama2-v1": "xinlai/LISA-13B-llama2-v1"}.items():
        preset = registry.preset(hub_id).preset
        assert preset.name == name and preset.llm.settings["pretrained"] == hub_id
        assert {preset.choice(kind).settings.get("release") for kind in ("visual_encoder", "alignment",
                                                                          "mask_decoder")} == {hub_id}
        registry.check(preset)


def fake_hub_cache(root, repo_id, folder):
    """The Hugging Face cache layout ``hf download`` leaves: refs/main → snapshots/<commit>/files."""
    commit = "0" * 40
    repo = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_a_hub_id_loads_from_the_cache_offline(scripted, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    fake_hub_cache(tmp_path, "xinlai/LISA-7B-v1", scripted.folder)
    agent = Agent("xinlai/LISA-7B-v1", device="cpu")
    assert agent.preset.name == "lisa-7b-v1"
    assert agent.session(photo()).ask("Segment the cup.").targets


def test_an_absent_hub_id_names_the_download_command(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as caught:
        Agent("lisa-7b-v1", device="cpu")
    message = str(caught.value)
    assert "hf download xinlai/LISA-7B-v1" in message and "\n" not in message


@pytest.mark.parametrize("quantize", ["8bit", "4bit"])
def test_quantized_loading_without_bitsandbytes_names_the_package(scripted, quantize):
    with pytest.raises(MissingDependencyError) as caught:
        Agent(release_preset(scripted.folder, device="cpu", llm={"settings": {"quantize": quantize}}))
    assert "pip install bitsandbytes" in str(caught.value) and "\n" not in str(caught.value)


def test_bitsandbytes_config_is_lisas():
    from pixelagent_llava.llava_v1 import bnb_config

    four = bnb_config("4bit", "bfloat16")
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.bfloat16 and bnb_config("8bit", "bfloat16").load_in_8bit


def test_a_sentencepiece_only_tokenizer_without_sentencepiece_says_what_to_install(scripted, tmp_path, monkeypatch):
    import pixelagent_llava.tokenizer as tokenizer_module

    folder = tmp_path / "release"
    shutil.copytree(scripted.folder, folder)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.model").write_bytes(b"\x0a\x00")  # what the release ships instead
    monkeypatch.setattr(tokenizer_module, "_importable", lambda module: False)
    with pytest.raises(MissingDependencyError, match="pip install sentencepiece protobuf"):
        Agent(release_preset(folder, device="cpu"))


def test_bfloat16_runs_a_turn(scripted):
    agent = Agent(release_preset(scripted.folder, device="cpu", dtype="bfloat16"))
    assert next(agent.parts["llm"].parameters()).dtype == torch.bfloat16
    reply = agent.session(photo(seed=10)).ask("Segment the cup.")
    assert reply.text == "Sure,." and reply.targets


def test_parts_refuse_a_checkpoint_that_is_not_a_lisa_release(tmp_path, release):
    folder = tmp_path / "llava-only"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "added_tokens.json"):
        shutil.copy(release.folder / name, folder)
    tiny.write_shards(folder, {k: v for k, v in release.state.items()
                               if not k.startswith(("model.visual_model.", "model.text_hidden_fcs."))})
    with pytest.raises(ConfigError, match="holds no SAM"):
        Agent(release_preset(folder, device="cpu"))
    llm_only = release_preset(folder, device="cpu", mask_decoder={"settings": {"release": None, "random_init": True,
                                                                              "size": "tiny"}})
    with pytest.raises(ConfigError, match="no \\[SEG\\] projection"):
        Agent(llm_only)
