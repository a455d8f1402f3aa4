"""The conditional denoiser: zero-initialised conv_in widening, conditioning dropout, a few training steps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from mvcaug.models.denoiser import build_scratch_unet, expand_conv_in
from mvcaug.io.models import load_denoiser, save_denoiser
from mvcaug.core.errors import MissingInputError
from mvcaug.method.finetune import (
    ClassConditions, ConditionSampler, build_denoiser, class_conditions, dropout_masks, summarise_losses, train_denoiser,
)
from mvcaug.core.params import FinetuneParams, MixParams

TINY = FinetuneParams(block_out_channels=(8, 16), attention_head_dim=4)
CPU = torch.device("cpu")


def tiny_pretrained_like_unet() -> UNet2DConditionModel:
    """A 4-channel text-to-image U-Net, as a pretrained Stable Diffusion one before widening."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=12, attention_head_dim=4, norm_num_groups=8,
    ).eval()


@torch.no_grad()
def test_expand_conv_in_keeps_the_pretrained_output():
    original = tiny_pretrained_like_unet()
    # make the original's conv_in bias non-zero so a dropped bias would show
    original.conv_in.bias.add_(0.1)
    widened = expand_conv_in(copy.deepcopy(original), 4).eval()
    assert widened.conv_in.in_channels == 8
    assert widened.config.in_channels == 8
    assert torch.equal(widened.conv_in.weight[:, :4], original.conv_in.weight)
    assert torch.count_nonzero(widened.conv_in.weight[:, 4:]) == 0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 5, 12, generator=g)
    t = torch.tensor([10, 500])
    expected = original(x, t, encoder_hidden_states=text).sample
    for cond in (torch.zeros(2, 4, 8, 8), torch.randn(2, 4, 8, 8, generator=g), 50 * torch.ones(2, 4, 8, 8)):
        got = widened(torch.cat([x, cond], 1), t, encoder_hidden_states=text).sample
        assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    # the widened U-Net still learns from the condition: its new weights receive gradients
    with torch.enable_grad():
        widened.train()
        out = widened(torch.cat([x, torch.randn(2, 4, 8, 8, generator=g)], 1), t, encoder_hidden_states=text)
        out.sample.square().mean().backward()
    assert widened.conv_in.weight.grad[:, 4:].abs().sum() > 0


def test_scratch_unet_shape():
    unet = build_scratch_unet(latent_channels=3, sample_size=8, cross_attention_dim=16, params=TINY)
    assert unet.config.in_channels == 6 and unet.config.out_channels == 3
    with torch.no_grad():
        out = unet(torch.randn(2, 6, 8, 8), torch.tensor([1, 2]), encoder_hidden_states=torch.randn(2, 4, 16))
    assert out.sample.shape == (2, 3, 8, 8)


@pytest.mark.parametrize(("text", "image", "both"), [(0.1, 0.05, 0.05), (0.3, 0.2, 0.1), (0.0, 0.0, 0.0)])
def test_dropout_mask_frequencies(text, image, both):
    params = FinetuneParams(text_dropout=text, image_dropout=image, both_dropout=both)
    n = 20000
    keep_text, keep_image = dropout_masks(n, params, torch.Generator().manual_seed(0), CPU)
    assert keep_text.dtype == torch.bool and keep_text.shape == (n,)
    freq = lambda mask: mask.float().mean().item()  # noqa: E731
    tol = 0.01  # > 4 standard deviations at n = 20000
    assert abs(freq(~keep_text & ~keep_image) - both) < tol
    assert abs(freq(~keep_text & keep_image) - text) < tol
    assert abs(freq(keep_text & ~keep_image) - image) < tol
    assert abs(freq(keep_text & keep_image) - (1 - text - image - both)) < tol
    assert abs(freq(~keep_text) - (text + both)) < tol
    assert abs(freq(~keep_image) - (image + both)) < tol


def conditions(provenance) -> tuple[torch.Tensor, dict[str, ClassConditions], np.ndarray]:
    """Two classes of 8x8 one-channel images with a clear shape each, and 3 captions per class."""
    g = torch.Generator().manual_seed(0)
    images = -torch.ones(12, 1, 8, 8)
    images[:6, :, 2:6, :] = 1.0  # class a: a horizontal bar
    images[6:, :, :, 2:6] = 1.0  # class b: a vertical bar
    images += 0.1 * torch.randn(images.shape, generator=g)
    emb = provenance(6, 4, 16) / (6 * 4 * 16)
    classes = {
        "a": ClassConditions(np.arange(6), emb[:3], emb[:3]),
        "b": ClassConditions(np.arange(6, 12), emb[3:], emb[3:]),
    }
    return images.clamp(-1, 1), classes, emb


def test_condition_sampler_pairs_and_texts_come_from_one_class(provenance):
    _, classes, emb = conditions(provenance)
    sampler = ConditionSampler(classes, MixParams(coarse_steps=1, fine_steps=3), "fresh", seed=0)
    targets, conds, texts = sampler.batch(64)
    assert texts.shape == (64, 4, 16)
    mixes = 0
    for target, cond, text in zip(targets, conds, texts):
        label = "a" if target < 6 else "b"
        assert (cond < 6) == (label == "a")
        assert target != cond  # two distinct images when the class has two or more
        owners = set(np.unique(np.round(text * 6 * 4 * 16).astype(int) // (4 * 16)))
        assert owners <= ({0, 1, 2} if label == "a" else {3, 4, 5})
        mixes += len(owners) >= 2
    assert mixes > len(texts) // 2  # fresh MVC mixes, not plain captions (a full-height coarse
    # edit followed by fine edits from the same source can rebuild one plain caption, rarely)
    table = ConditionSampler(classes, MixParams(), "table", seed=0)
    _, _, texts = table.batch(8)
    assert all(any(np.array_equal(t, e) for e in emb) for t in texts)


def train_tiny(provenance, seed: int = 0, steps: int = 30) -> list[float]:
    images, classes, emb = conditions(provenance)
    params = FinetuneParams(block_out_channels=(8, 16), attention_head_dim=4, steps=steps, batch_size=8,
                            learning_rate=2e-3, lr_warmup_steps=2, seed=seed)
    torch.manual_seed(seed)
    denoiser = build_denoiser(params, channels=1, resolution=8, text_dim=16, device=CPU)
    sampler = ConditionSampler(classes, MixParams(coarse_steps=1, fine_steps=2), "fresh", seed)
    steps_seen = []
    losses = train_denoiser(denoiser, images, sampler, np.zeros((4, 16), np.float32), params,
                            on_step=lambda step, loss: steps_seen.append((step, loss)))
    assert steps_seen == list(enumerate(losses))
    assert not denoiser.unet.training
    return losses


def test_a_few_training_steps_lower_the_loss(provenance):
    losses = train_tiny(provenance)
    assert len(losses) == 30 and all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.8 * first, (first, last)


def test_training_is_reproducible_for_a_seed(provenance):
    assert train_tiny(provenance, steps=4) == train_tiny(provenance, steps=4)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    denoiser = build_denoiser(TINY, channels=1, resolution=8, text_dim=16, device=CPU)
    save_denoiser(denoiser, tmp_path / "model")
    loaded = load_denoiser(tmp_path / "model", CPU)
    assert loaded.codec.latent_channels == 1 and loaded.codec.downscale == 1
    assert loaded.noise_scheduler.config.num_train_timesteps == TINY.num_train_timesteps
    for (name, a), (_, b) in zip(denoiser.unet.state_dict().items(), loaded.unet.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_saved_model_does_not_record_the_folder_it_was_loaded_from(tmp_path):
    """A U-Net loaded with from_pretrained carries `_name_or_path` (where it came from: an absolute path in one
    checkout); saved again from two places, the model folders must be byte-identical, or DVC and the shard digests
    call the model changed in every other clone."""
    torch.manual_seed(0)
    save_denoiser(build_denoiser(TINY, channels=1, resolution=8, text_dim=16, device=CPU), tmp_path / "first")
    configs = []
    for where in ("a", "b"):
        loaded = load_denoiser(tmp_path / "first", CPU)
        assert str(loaded.unet.config["_name_or_path"]) == str(tmp_path / "first" / "unet")  # what from_pretrained records
        save_denoiser(loaded, tmp_path / where / "model")
        configs.append((tmp_path / where / "model" / "unet" / "config.json").read_bytes())
    assert configs[0] == configs[1] and b"_name_or_path" not in configs[0]
    again = load_denoiser(tmp_path / "a" / "model", CPU).unet.state_dict()
    assert all(torch.equal(again[name], value) for name, value in loaded.unet.state_dict().items())


def test_scratch_initialisation_follows_finetune_seed():
    torch.manual_seed(1)
    first = build_denoiser(TINY, channels=1, resolution=8, text_dim=16, device=CPU)
    torch.manual_seed(2)
    second = build_denoiser(TINY, channels=1, resolution=8, text_dim=16, device=CPU)
    for (name, a), (_, b) in zip(first.unet.state_dict().items(), second.unet.state_dict().items()):
        assert torch.equal(a, b), name


def test_class_conditions_group_captions_and_mixes_by_label_not_by_row_order(digits_prepared, provenance):
    """The digits' training split with its captions written in reverse order and the mixes interleaved: each
    class gets its own images, captions and mixes, and each image its own caption."""
    _, manifest = digits_prepared
    train = [row for row in manifest.to_pylist() if row["split"] == "train"]
    image_ids, image_labels = [row["id"] for row in train], [row["label"] for row in train]
    captions = train[::-1]  # the caption table need not follow the image order
    caption_emb = provenance(len(captions), 2, 3).astype(np.float64)
    mixed_labels = [label for _ in range(2) for label in sorted(set(image_labels))]  # two mixes per class
    mixed_emb = provenance(len(mixed_labels), 2, 3)
    classes = class_conditions(image_labels, image_ids, [row["label"] for row in captions],
                               [row["id"] for row in captions], caption_emb, mixed_labels, mixed_emb)
    assert list(classes) == sorted(set(image_labels))
    for label, conditions in classes.items():
        assert [image_labels[i] for i in conditions.image_indices] == [label] * 6
        assert conditions.caption_embeddings.dtype == conditions.mixed_embeddings.dtype == np.float32
        assert len(conditions.mixed_embeddings) == 2
        own_rows = [next(k for k, row in enumerate(captions) if row["id"] == image_ids[i])
                    for i in conditions.image_indices]
        for i, row in zip(conditions.caption_of_image, own_rows):  # each image's text is its own caption's
            assert np.array_equal(conditions.caption_embeddings[i], caption_emb[row].astype(np.float32))
        wanted = [k for k, name in enumerate(mixed_labels) if name == label]
        assert np.array_equal(conditions.mixed_embeddings, mixed_emb[wanted])
    with pytest.raises(MissingInputError, match=f"no caption embedding for training image '{captions[0]['id']}'"):
        class_conditions(image_labels, image_ids, [row["label"] for row in captions[1:]],
                         [row["id"] for row in captions[1:]], caption_emb[1:], mixed_labels, mixed_emb)


def test_summarise_losses_compares_the_first_and_last_tenth():
    losses = [1.0, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.125, 0.1, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03,
              0.02]
    assert summarise_losses(losses) == {"loss_first": 0.9, "loss_last": 0.025, "steps": 20}  # tenths of 2 steps
    assert summarise_losses([0.123456, 0.5]) == {"loss_first": 0.12346, "loss_last": 0.5, "steps": 2}  # 1 step each
    with pytest.raises(ValueError, match="at least one step"):
        summarise_losses([])
