from __future__ import annotations

import pytest
import torch

from bitseek.models import Embedder, HashModel, TrainableModel, output_kind


class E(Embedder, TrainableModel):
    dim = 4

    def training_step(self, batch, phase="train"):
        return {"loss": torch.zeros(())}

    def embed(self, batch):
        return torch.zeros(len(batch["x"]), 4)


def test_output_kind_tells_codes_from_features():
    assert output_kind(E()) == "features"

    class H(HashModel):
        bits = 8

        def training_step(self, batch, phase="train"):
            return {"loss": torch.zeros(())}

        def encode(self, batch):
            return torch.ones(1, 8)

    assert output_kind(H()) == "codes"

    class Shallow:  # closed-form baselines are not nn.Modules
        def encode(self, batch):
            return batch

    assert output_kind(Shallow()) == "codes"
    with pytest.raises(TypeError, match="neither encode"):
        output_kind(object())


def test_embedder_is_abstract_until_embed_exists():
    class NoEmbed(Embedder):
        def training_step(self, batch, phase="train"):
            return {"loss": torch.zeros(())}

    with pytest.raises(TypeError):
        NoEmbed()
    assert E().epoch_phases(0) == ["train"]


def test_an_inference_only_embedder_needs_no_training_step():
    """Released weights (CVNet) are embedders without a training recipe of their own."""

    class Frozen(Embedder):
        dim = 2

        def embed(self, batch):
            return torch.ones(1, 2)

    model = Frozen()
    assert output_kind(model) == "features"
    assert not isinstance(model, TrainableModel)
