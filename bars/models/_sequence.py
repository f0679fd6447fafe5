"""Which target fields a sequence model attends from and which behaviour sequences it attends over (private: not a
model module). The feature spec is the only channel from data to models, so the pairs are read from it.

A *pair* is ``(targets, sequences)``: tuples of equal length, e.g. ``(("item_id", "cate_id"), ("item_history",
"cate_history"))`` as FuxiCTR's ``din_target_field`` / ``din_sequence_field``; the embeddings of a tuple's fields
are concatenated (target [B, n * dim], history [B, L, n * dim]) and the mask is the first sequence's ``index > 0``.
With both config keys null the pairs come from the spec: one pair of every sequence field that shares the table of
a categorical field (``Feature.share_embedding``) with that field, in spec order (movielens_seq: (movie, genre) over
(hist_movies, hist_genres); AmazonElectronics_x1: BARS's (item_id, cate_id) over (item_history, cate_history)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models.registry import ModelConfigError

Pair = tuple[tuple[str, ...], tuple[str, ...]]


def check_pair_keys(target_fields, sequence_fields) -> None:
    """Config-time check (``__post_init__``): both null, or both given with matching shapes."""
    if (target_fields is None) != (sequence_fields is None):
        raise ValueError("target_fields and sequence_fields are both null (pairs read from the spec) or both given, "
                         f"got target_fields={target_fields!r}, sequence_fields={sequence_fields!r}")
    if target_fields is None:
        return
    if not target_fields or len(target_fields) != len(sequence_fields):
        raise ValueError(f"target_fields {target_fields!r} and sequence_fields {sequence_fields!r} must list the same "
                         "number (>= 1) of field tuples")
    for t, s in zip(target_fields, sequence_fields, strict=True):
        if not t or len(t) != len(s):
            raise ValueError(f"target fields {list(t)} and sequence fields {list(s)} must have the same length (>= 1)")
    flat = [n for s in sequence_fields for n in s]
    dup = sorted({n for n in flat if flat.count(n) > 1})
    if dup:
        raise ValueError(f"sequence_fields names {dup} more than once")


def sequence_pairs(spec: FeatureSpec, target_fields, sequence_fields, model: str) -> list[Pair]:
    """The validated pairs of ``model`` on ``spec`` (see the module docstring); ``ModelConfigError`` naming the
    field, the key and the spec's fields otherwise."""
    fields = spec.names
    if target_fields is None:
        seqs = [f for f in spec.by_type("sequence")
                if f.share_embedding and spec[f.share_embedding].type == "categorical"]
        if not seqs:
            raise ModelConfigError(
                f"model {model!r}: spec {spec.dataset!r} has no sequence field sharing the table of a categorical "
                f"field (share_embedding), so target/sequence pairs cannot be inferred; set model.params.target_fields "
                f"and model.params.sequence_fields (fields: {fields})")
        pairs: list[Pair] = [(tuple(f.share_embedding for f in seqs), tuple(f.name for f in seqs))]
    else:
        pairs = [(tuple(t), tuple(s)) for t, s in zip(target_fields, sequence_fields, strict=True)]
    for targets, seqs in pairs:
        for key, names, kind in (("target_fields", targets, "categorical"), ("sequence_fields", seqs, "sequence")):
            for n in names:
                if n not in fields:
                    raise ModelConfigError(f"model {model!r}: {key} names {n!r}, which is not a field of spec "
                                           f"{spec.dataset!r} (fields: {fields})")
                if spec[n].type != kind:
                    raise ModelConfigError(f"model {model!r}: {key} names {n!r}, a {spec[n].type} field; expected a "
                                           f"{kind} field")
        lens = {spec[n].max_len for n in seqs}
        if len(lens) > 1:
            raise ModelConfigError(f"model {model!r}: sequence fields {list(seqs)} are attended together but have "
                                   f"different max_len {[spec[n].max_len for n in seqs]}")
    return pairs


def pair_embeddings(embedding: nn.Module, batch: dict[str, Tensor], pair: Pair) -> tuple[Tensor, Tensor]:
    """A pair's target embedding [B, n * dim] and history embeddings [B, L, n * dim] (a tuple's fields
    concatenated) from ``embedding`` (a FeatureEmbedding whose ``lookup(name, index)`` gives one field's vectors)."""
    targets, seqs = pair
    t = torch.cat([embedding.lookup(n, batch[n]) for n in targets], dim=-1)
    h = torch.cat([embedding.lookup(n, batch[n]) for n in seqs], dim=-1)
    return t, h
