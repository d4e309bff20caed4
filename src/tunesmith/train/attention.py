"""Document-causal attention masks for packed rows: a token sees earlier tokens of its own document only.

Two forms of the same mask, from a row's doc_ids (train/packing.py):
  dense_document_mask   [B, 1, S, S] booleans for SDPA, or additive scores for eager attention (CPU, or GPUs
                        without FlexAttention)
  document_block_mask   a FlexAttention BlockMask built from block-level document ranges, so no S×S
                        tensor is ever made and blocks across documents are skipped, not computed
transformers passes a 4-D mask or a BlockMask given as attention_mask straight to the attention
implementation, so neither form needs any patching of the model.
"""

from __future__ import annotations

import torch

BLOCK = 128  # FlexAttention's block size; packed rows are a multiple of it


def dense_document_mask(doc_ids: torch.Tensor, additive: torch.dtype | None = None) -> torch.Tensor:
    """Booleans (True = may attend) for SDPA; with `additive`, 0 / dtype-minimum scores of that dtype for eager
    attention, which adds the mask to the scores (booleans there would add 0 or 1 and mask nothing)."""
    s = doc_ids.shape[-1]
    causal = torch.ones(s, s, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    mask = (same_doc & causal)[:, None]
    if additive is None:
        return mask
    return torch.zeros(mask.shape, dtype=additive, device=mask.device).masked_fill_(~mask, torch.finfo(additive).min)


def _document_mask_mod(doc_ids: torch.Tensor):
    def mask_mod(b, h, q, kv):
        return (kv <= q) & (doc_ids[b, q] == doc_ids[b, kv])

    return mask_mod


def document_block_mask(doc_ids: torch.Tensor, block: int = BLOCK):
    """BlockMask of the document-causal mask. doc_ids must not decrease along a row (packing guarantees it)."""
    from torch.nn.attention.flex_attention import BlockMask

    b, s = doc_ids.shape
    if s % block:
        raise ValueError(f"row length {s} is not a multiple of the attention block size {block}")
    n = s // block
    blocks = doc_ids.view(b, n, block)
    first, last = blocks[..., 0], blocks[..., -1]  # smallest and largest document id in each block
    q_first, q_last = first[:, :, None], last[:, :, None]
    kv_first, kv_last = first[:, None, :], last[:, None, :]
    idx = torch.arange(n, device=doc_ids.device)
    lower = idx[None, :] <= idx[:, None]  # kv block j at or before q block i
    strictly_lower = idx[None, :] < idx[:, None]
    visible = lower & (kv_last >= q_first)  # some kv document reaches into the q block's documents
    one_doc = (q_first == q_last) & (kv_first == kv_last) & (kv_first == q_first)
    full = strictly_lower & one_doc
    partial = visible & ~full

    def as_indices(m: torch.Tensor):
        counts = m.sum(-1, dtype=torch.int32)
        order = torch.argsort((~m).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # chosen blocks first
        return counts[:, None], order[:, None]

    kv_num, kv_idx = as_indices(partial)
    full_num, full_idx = as_indices(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block,
                                    mask_mod=_document_mask_mod(doc_ids), seq_lengths=(s, s))
