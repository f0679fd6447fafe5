"""The behaviour-sequence models (DIN, ...): target/sequence pairs read from the spec or the config (clear errors
naming the field), the history reaching the logit, padding side irrelevant, masked positions ignored."""

from __future__ import annotations

import pytest
import torch

from bars.data.spec import Feature, FeatureSpec
from bars.models import ModelConfigError, build
from bars.models._sequence import sequence_pairs
from bars.models.layers import init_bars_

SEQ_MODELS = ["din", "bst"]
SEQ_MODELS.append("awmoe")  # AW-MoE (tests/test_models_awmoe.py)
SEQ_MODELS += ["qin"]
SEQ_MODELS += ["dmr"]
SEQ_MODELS += ["dien"]
# switches that make a model ignore positions (BST's position embedding ties it to the padding side)
NO_POSITION = {"bst": {"use_position_emb": False}}
NO_POSITION["dmr"] = {"use_pos_emb": False, "enable_u2i_rel": False}
SEQ_MODELS += ["dmin"]
# DMIN: its position embeddings, and FuxiCTR's soft refiner mask (hidden keys still weigh in)
NO_POSITION["dmin"] = {"use_pos_emb": False, "refiner_mask": "hard"}


def spec_of(padding: str = "post") -> FeatureSpec:
    return FeatureSpec(dataset="seq", label="click", features=(
        Feature("user", "categorical", vocab_size=9),
        Feature("item", "categorical", vocab_size=12),
        Feature("cate", "categorical", vocab_size=6),
        Feature("price", "numeric"),
        Feature("item_hist", "sequence", vocab_size=12, max_len=5, share_embedding="item", padding=padding),
        Feature("cate_hist", "sequence", vocab_size=6, max_len=5, share_embedding="cate", padding=padding),
        Feature("tags", "sequence", vocab_size=7, max_len=3),
    ))


def batch_of(padding: str = "post", n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = [0, 1, 3, 5, 2, 4][:n]
    items = torch.zeros(n, 5, dtype=torch.int32)
    cates = torch.zeros(n, 5, dtype=torch.int32)
    for i, k in enumerate(lengths):
        pos = slice(0, k) if padding == "post" else slice(5 - k, 5)
        items[i, pos] = torch.randint(2, 12, (k,), generator=g, dtype=torch.int32)
        cates[i, pos] = torch.randint(2, 6, (k,), generator=g, dtype=torch.int32)
    return {"user": torch.randint(1, 9, (n,), generator=g, dtype=torch.int32),
            "item": torch.randint(2, 12, (n,), generator=g, dtype=torch.int32),
            "cate": torch.randint(2, 6, (n,), generator=g, dtype=torch.int32),
            "price": torch.randn(n, generator=g),
            "item_hist": items, "cate_hist": cates,
            "tags": torch.randint(0, 7, (n, 3), generator=g, dtype=torch.int32)}


def to_pre(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same rows with the histories pre-padded (values moved to the end, order kept)."""
    out = dict(batch)
    for name in ("item_hist", "cate_hist"):
        rows = []
        for r in batch[name]:
            v = r[r > 0]
            rows.append(torch.cat([torch.zeros(5 - len(v), dtype=r.dtype), v]))
        out[name] = torch.stack(rows)
    return out


def make(name: str, padding: str = "post", **params) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build(name, spec_of(padding), {"embedding_dim": 4, **params})
    init_bars_(model, embedding_std=0.3)  # large embeddings so the history visibly moves the logit
    return model.eval()


def test_pairs_from_the_spec():
    assert sequence_pairs(spec_of(), None, None, "m") == [(("item", "cate"), ("item_hist", "cate_hist"))]


def test_pairs_errors_name_the_field():
    s = spec_of()
    with pytest.raises(ModelConfigError, match="target_fields names 'movie', which is not a field of spec 'seq'"):
        sequence_pairs(s, [["movie"]], [["item_hist"]], "din")
    with pytest.raises(ModelConfigError, match="sequence_fields names 'item', a categorical field"):
        sequence_pairs(s, [["item"]], [["item"]], "din")
    with pytest.raises(ModelConfigError, match="different max_len"):
        sequence_pairs(s, [["item", "cate"]], [["item_hist", "tags"]], "din")
    flat = FeatureSpec(dataset="flat", label="y", features=(Feature("a", "categorical", vocab_size=3),))
    with pytest.raises(ModelConfigError, match="cannot be inferred.*model.params.target_fields"):
        sequence_pairs(flat, None, None, "din")


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_config_errors(name):
    with pytest.raises(ModelConfigError, match="both null"):
        build(name, spec_of(), {"embedding_dim": 4, "target_fields": [["item"]]})
    with pytest.raises(ModelConfigError, match="same length"):
        build(name, spec_of(), {"embedding_dim": 4, "target_fields": [["item", "cate"]],
                                "sequence_fields": [["item_hist"]]})
    with pytest.raises(ModelConfigError, match="not a field of spec"):
        build(name, spec_of(), {"embedding_dim": 4, "target_fields": [["item"]], "sequence_fields": [["clicks"]]})


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_history_reaches_the_logit_and_padding_side_does_not(name):
    post, pre = make(name, "post", **NO_POSITION.get(name, {})), make(name, "pre", **NO_POSITION.get(name, {}))
    pre.load_state_dict(post.state_dict())
    b = batch_of("post")
    with torch.no_grad():
        y = post(b)
        assert y.shape == (6,)
        assert torch.allclose(y, pre(to_pre(b)), atol=1e-5)
        changed = dict(b, item_hist=torch.where(b["item_hist"] > 0, 2 + (b["item_hist"] - 1) % 10, 0))
        assert not torch.allclose(y[1:], post(changed)[1:])  # every row with a history moves
        assert torch.allclose(y[0], post(changed)[0])  # the empty history does not


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_values_beyond_the_mask_are_ignored(name):
    """A history's padding positions carry index 0; the model must give the same logit for a row whatever the
    longer histories of other rows are (no leakage across rows) and with explicit pairs equal to the inferred."""
    model = make(name)
    explicit = make(name, target_fields=[["item", "cate"]], sequence_fields=[["item_hist", "cate_hist"]])
    explicit.load_state_dict(model.state_dict())
    b = batch_of()
    with torch.no_grad():
        y = model(b)
        assert torch.equal(y, explicit(b))
        one = {k: v[2:3] for k, v in b.items()}
        assert torch.allclose(model(one), y[2:3], atol=1e-6)


def test_feature_embedding_unpooled_fields_keep_their_tables():
    from bars.models.layers import FeatureEmbedding

    s = spec_of()
    full = FeatureEmbedding(s, 4)
    part = FeatureEmbedding(s, 4, unpooled=["item_hist", "cate_hist"])
    part.load_state_dict(full.state_dict())
    assert part.field_names == ("user", "item", "cate", "price", "tags") and part.output_dim == 20
    b = batch_of()
    keep = [s.names.index(n) for n in part.field_names]
    assert torch.equal(part(b), full(b)[:, keep])
    assert torch.equal(part.lookup("item_hist", b["item_hist"]), full.lookup("item_hist", b["item_hist"]))
    with pytest.raises(ValueError, match="unpooled fields \\['item'\\] are not sequence fields"):
        FeatureEmbedding(s, 4, unpooled=["item"])
