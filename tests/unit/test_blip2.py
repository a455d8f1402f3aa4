"""BLIP-2 captioner on a tiny random model saved offline, and the degenerate-caption guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from mvcaug.core.devices import auto_dtype
from mvcaug.method.blip2 import Blip2Captioner, clean_caption
from mvcaug.io.model_sources import ModelError
from mvcaug.core.params import CaptionParams
from tests.captions import caption_manifest


WORDS = "a an the of on in with cat dog mat sitting small large red blue photo image picture".split()


def tiny_processor(image_size: int, num_query_tokens: int):
    """A Blip2Processor with a word-level tokenizer built here, so nothing comes from the hub."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BlipImageProcessor, Blip2Processor, PreTrainedTokenizerFast

    # OPT's special-token ids: <s>=0, <pad>=1, </s>=2 (bos and eos), <unk>=3.
    vocab = {token: index for index, token in enumerate(["<s>", "<pad>", "</s>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    # The processor adds the special <image> token to the tokenizer.
    return Blip2Processor(image_processor, tokenizer, num_query_tokens=num_query_tokens)


@pytest.fixture(scope="module")
def tiny_blip2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a random 1-layer BLIP-2 (OPT language model) and its processor."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig
    from transformers.models.blip_2.configuration_blip_2 import Blip2QFormerConfig, Blip2VisionConfig

    image_size, num_query_tokens = 30, 4
    processor = tiny_processor(image_size, num_query_tokens)
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
            image_size=image_size, patch_size=10,
        ),
        qformer_config=Blip2QFormerConfig(
            vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
            cross_attention_frequency=1, max_position_embeddings=64,
        ),
        text_config=OPTConfig(
            vocab_size=len(processor.tokenizer), hidden_size=32, num_hidden_layers=1, ffn_dim=37,
            num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32,
            pad_token_id=1, bos_token_id=2, eos_token_id=2,
        ),
        num_query_tokens=num_query_tokens,
        image_token_index=image_token_id,
    )
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("tiny_blip2")
    model.save_pretrained(folder)  # safetensors by default
    processor.save_pretrained(folder)
    return folder


def random_images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(24, 30), (40, 40), (16, 20)]
    return [
        Image.fromarray(rng.integers(0, 256, (*sizes[k % 3], 3), dtype=np.uint8), "RGB") for k in range(count)
    ]


@pytest.fixture(scope="module")
def captioner(tiny_blip2: Path) -> Blip2Captioner:
    """The captioner on the tiny model, made to emit words: left alone, a random model ends at once
    (an empty, degenerate caption), which would leave decoding and cleaning untested."""
    captioner = Blip2Captioner(CaptionParams(model=str(tiny_blip2), batch_size=3, max_new_tokens=5, device="cpu"))
    tokenizer = captioner.processor.tokenizer
    # Blip2ForConditionalGeneration.generate decodes with its language model's generation config.
    generation = captioner.model.language_model.generation_config
    special = ("<s>", "<pad>", "</s>", "<unk>", "<image>")
    generation.suppress_tokens = [tokenizer.convert_tokens_to_ids(token) for token in special]
    generation.no_repeat_ngram_size = 1
    return captioner


def test_batch_of_three_gives_one_caption_each(captioner, tiny_blip2):
    assert captioner.id == f"blip2:{tiny_blip2}"
    # auto: bf16 where the CPU computes it natively (AMX), else float32 (tests/unit/test_devices.py)
    assert next(captioner.model.parameters()).dtype == auto_dtype(torch.device("cpu"))
    before = captioner.degenerate_count
    bodies = captioner.describe(random_images(3), ["a.png", "b.png", "c.png"])
    assert len(bodies) == 3 and all(isinstance(body, str) for body in bodies)
    for body in bodies:
        words = body.rstrip(".").lower().split()
        assert len(words) == 5 and set(words) <= set(WORDS)  # five new tokens, decoded to vocabulary words
        assert clean_caption(body) == (body, False)
    assert captioner.degenerate_count == before
    assert captioner.describe([], []) == []


def test_degenerate_generations_are_blanked_and_counted(captioner, monkeypatch):
    monkeypatch.setattr(
        captioner.processor, "batch_decode",
        lambda ids, skip_special_tokens: ["a a a a a", " a red cat cat on a mat ", ""],
    )
    before = captioner.degenerate_count
    bodies = captioner.describe(random_images(3), ["a.png", "b.png", "c.png"])
    assert bodies == ["", "A red cat on a mat.", ""]
    assert captioner.degenerate_count == before + 2


def test_greedy_captions_do_not_depend_on_the_batch(captioner):
    images = random_images(3, seed=1)
    together = captioner.describe(images, ["a", "b", "c"])
    alone = [captioner.describe([image], [name])[0] for image, name in zip(images, "abc")]
    assert together == alone


def test_caption_stage_prefixes_every_blip2_caption(captioner, tmp_path):
    rows = []
    for k, (label, split) in enumerate([("cat", "train"), ("dog", "train"), ("cat", "val"), ("dog", "train"),
                                        ("cat", "train")]):
        path = Path("images") / split / label / f"{k}.png"
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        random_images(1, seed=k)[0].save(tmp_path / path)
        rows.append({"id": f"img{k}", "path": path.as_posix(), "label": label, "split": split,
                     "source": f"{label}/{k}.png"})
    manifest = pa.Table.from_pylist(rows)

    batches: list[int] = []
    describe = captioner.describe

    def spy(images, sources):
        batches.append(len(images))
        return describe(images, sources)

    captioner.describe = spy
    try:
        params = CaptionParams(backend="blip2", model=captioner.id, batch_size=3, max_new_tokens=5, device="cpu")
        table = caption_manifest(manifest, tmp_path, captioner, params)
    finally:
        del captioner.describe
    assert batches == [3, 1]
    train = [row for row in rows if row["split"] == "train"]
    assert table["id"].to_pylist() == [row["id"] for row in train]
    assert set(table["captioner"].to_pylist()) == {captioner.id}
    for row, caption in zip(train, table["caption"].to_pylist()):
        head = f"This is an image of {row['label']}. "
        assert caption.startswith(head) and len(caption) > len(head)


@pytest.mark.parametrize("text", ["", "   ", " .,!? ", "a a a a", "a a a a a", "Cat cat CAT, cat",
                                  "dog dog the dog dog", "a photo of", "An image of.", "a picture of a",
                                  "a photo of a photo of"])
def test_clean_caption_flags_degenerate(text):
    assert clean_caption(text) == ("", True)


@pytest.mark.parametrize(("text", "body"), [
    ("a cat sitting on a mat", "A cat sitting on a mat."),
    ("  A red dog.  ", "A red dog."),
    ("cat", "Cat."),
    ("a photo of a cat", "A photo of a cat."),
    ("a cat cat cat on a mat", "A cat on a mat."),
    ("a cat on a mat on a mat on a mat", "A cat on a mat."),
    ("a dog and a cat", "A dog and a cat."),
])
def test_clean_caption_keeps_and_tidies_real_text(text, body):
    assert clean_caption(text) == (body, False)


def test_missing_model_names_it_and_the_offline_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no_such_blip2"
    with pytest.raises(ModelError) as info:
        Blip2Captioner(CaptionParams(backend="blip2", model=str(missing), device="cpu"))
    assert str(info.value).startswith(f"caption.model '{missing}' is not a folder; set it to a local folder")
    assert "HF_HUB_OFFLINE is set" in str(info.value)


def test_a_mistyped_local_path_is_named_and_never_sent_to_the_hub(monkeypatch):
    """A relative path of several parts is a local folder that is not there, as for embed.encoder and
    finetune.pretrained: one line naming caption.model, not the hub client's "Repo id must be ..."."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelError) as info:
        Blip2Captioner(CaptionParams(backend="blip2", model="models/blip2/opt-2.7b", device="cpu"))
    message = str(info.value)
    assert message.startswith("caption.model 'models/blip2/opt-2.7b' is not a folder") and "\n" not in message
    assert "Repo id" not in message and "hf download" in message and "HF_HUB_OFFLINE" not in message


def test_a_folder_without_a_model_is_one_line_naming_the_param(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        Blip2Captioner(CaptionParams(backend="blip2", model=str(tmp_path), device="cpu"))
    message = str(info.value)
    assert message.startswith(f"caption.model: cannot load '{tmp_path}'") and "\n" not in message
