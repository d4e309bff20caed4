"""Exact and near-duplicate detection.

Exact duplicates: identical canonical records (system prompt and label included).
Near duplicates: MinHash signatures of word shingles, indexed with datasketch's MinHashLSH
and confirmed by the estimated Jaccard similarity. Only user and assistant text is hashed:
a system prompt shared by every record would otherwise make all records look alike.

Signatures are computed for all records at once with numpy (one hash per distinct word,
shingle hashes and datasketch's affine32 permutations applied to whole arrays) and handed
to datasketch as LeanMinHash objects; hashing shingle by shingle in Python would take
minutes on 100k records.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from tunesmith.data.records import Conversation, Preference, Record, Text

NUM_PERM = 128
SHINGLE_WORDS = 3
_SCHEME = "affine32"
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00ab\u00bb"})
# LSH tuned for recall: every candidate is confirmed by its estimated Jaccard, so a false
# candidate costs a comparison while a missed one is a duplicate nobody sees. With 128
# permutations this misses ~0.1% of pairs at similarity 0.9 (datasketch's default: ~7%).
LSH_WEIGHTS = (0.1, 0.9)
# Scripts written without spaces (Chinese, Japanese, Thai): a whole sentence would be one "word", so two
# sentences differing in one character would share no shingle. Each of their characters is a word instead.
_UNSPACED = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_UNSPACED_WORD = re.compile(f"[{_UNSPACED}]|[^{_UNSPACED}]+")
_HAS_UNSPACED = re.compile(f"[{_UNSPACED}]")
_CHUNK_SHINGLES = 1 << 16  # rows per permutation block: 64k × 128 × 4 bytes = 32 MiB


def dedup_text(record: Record) -> str:
    """The text compared for near-duplicates: user and assistant turns, never the system prompt."""
    if isinstance(record, Conversation):
        return "\n".join(m.content for m in record.messages if m.role != "system")
    if isinstance(record, Preference):
        return "\n".join([*(m.content for m in record.prompt if m.role != "system"), record.chosen, record.rejected])
    if isinstance(record, Text):
        return record.text
    raise TypeError(type(record))


def exact_key(record: Record) -> bytes:
    return hashlib.blake2b(
        json.dumps(record.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8"), digest_size=16
    ).digest()


def find_exact_duplicates(records: Sequence[Record]) -> dict[int, int]:
    """{index: index of the first identical record} for every record that repeats an earlier one."""
    first: dict[bytes, int] = {}
    dups: dict[int, int] = {}
    for i, r in enumerate(records):
        j = first.setdefault(exact_key(r), i)
        if j != i:
            dups[i] = j
    return dups


def _mix64(h: np.ndarray) -> np.ndarray:
    # murmur3's 64-bit finalizer: spreads shingle hashes before the affine permutations
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


class MinHasher:
    """Signatures (n × num_perm uint32) for many texts, compatible with datasketch's affine32 scheme."""

    def __init__(self, num_perm: int = NUM_PERM, shingle_words: int = SHINGLE_WORDS, seed: int = 1):
        self.num_perm = num_perm
        self.k = shingle_words
        self.seed = seed
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME).permutations
        self._a = np.asarray(a, dtype=np.uint32)
        self._b = np.asarray(b, dtype=np.uint32)
        self._word_hash: dict[str, int] = {}

    def _word_ids(self, texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Word hashes of all texts, concatenated (short texts padded to one shingle), and per-text lengths."""
        words: list[str] = []
        lengths: list[int] = []
        pad = [""] * self.k
        for t in texts:
            # translate + split runs in C; a regex tokenizer is 2-3x slower on 100k records
            w = t.lower().translate(_PUNCT).split()
            if not t.isascii() and _HAS_UNSPACED.search(t):
                w = [part for word in w for part in _UNSPACED_WORD.findall(word)]
            if len(w) < self.k:
                w += pad[: self.k - len(w)]
            words.extend(w)
            lengths.append(len(w))
        vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
        table = np.empty(len(vocab), dtype=np.uint64)
        for w, i in vocab.items():
            h = self._word_hash.get(w)
            if h is None:
                h = self._word_hash[w] = int.from_bytes(hashlib.blake2b(w.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
            table[i] = h
        ids = np.fromiter(map(vocab.__getitem__, words), dtype=np.int64, count=len(words))
        return table[ids], np.asarray(lengths, dtype=np.int64)

    def signatures(self, texts: Iterable[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        words, lengths = self._word_ids(texts)
        n = len(lengths)
        if n == 0:
            return np.empty((0, self.num_perm), dtype=np.uint32)
        k = self.k
        # shingle hash at every word position; positions crossing a record boundary are dropped below
        sh = np.zeros(len(words), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(k):
                part = words[j:]
                sh[: len(part)] = sh[: len(part)] * np.uint64(0x100000001B3) + part
            sh = (_mix64(sh) >> np.uint64(32)).astype(np.uint32)
        counts = lengths - k + 1
        rec_start = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        seg_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
        idx = np.arange(counts.sum()) - np.repeat(seg_start, counts) + np.repeat(rec_start, counts)
        sh = sh[idx]
        out = np.empty((self.num_perm, n), dtype=np.uint32)
        a, b = self._a[:, None], self._b[:, None]
        r = 0
        with np.errstate(over="ignore"):
            while r < n:
                # a block of whole records holding about _CHUNK_SHINGLES shingles; permutations on
                # the first axis so the per-record minimum runs over contiguous memory (10x faster)
                end = max(int(np.searchsorted(seg_start, seg_start[r] + _CHUNK_SHINGLES, side="left")), r + 1)
                lo = seg_start[r]
                hi = seg_start[end] if end < n else len(sh)
                block = a * sh[None, lo:hi]
                block += b
                out[:, r:end] = np.minimum.reduceat(block, seg_start[r:end] - lo, axis=1)
                if progress:
                    progress(end - r)
                r = end
        return np.ascontiguousarray(out.T)

    def lean(self, row: np.ndarray) -> LeanMinHash:
        return LeanMinHash(seed=self.seed, hashvalues=row, scheme=_SCHEME)


@dataclass
class NearDuplicate:
    index: int  # the flagged record
    duplicate_of: int  # the earlier record that was kept
    similarity: float  # estimated Jaccard similarity of their shingle sets


def find_near_duplicates(
    texts: Sequence[str],
    threshold: float = 0.8,
    skip: Iterable[int] = (),
    hasher: MinHasher | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[NearDuplicate]:
    """Records whose text is at least `threshold` similar to an earlier kept record.

    Records are visited in order; a record with no close earlier kept record is kept and
    indexed, so each flagged record points at the kept record it repeats. Indices in
    `skip` (exact duplicates) are neither flagged again nor indexed.
    """
    hasher = hasher or MinHasher()
    sigs = hasher.signatures(texts)
    lsh = MinHashLSH(threshold=threshold, num_perm=hasher.num_perm, weights=LSH_WEIGHTS)
    skipped = set(skip)
    found: list[NearDuplicate] = []
    for i in range(len(texts)):
        if progress:
            progress(1)
        if i in skipped:
            continue
        m = hasher.lean(sigs[i])
        best = _best_match(sigs, i, lsh.query(m), threshold)
        if best is None:
            lsh.insert(i, m, check_duplication=False)
        else:
            found.append(NearDuplicate(i, best[0], best[1]))
    return found


def _best_match(sigs: np.ndarray, i: int, candidates: list, threshold: float) -> tuple[int, float] | None:
    if not candidates:
        return None
    cands = np.asarray(sorted(candidates), dtype=np.int64)
    sims = (sigs[cands] == sigs[i]).mean(axis=1)
    j = int(np.argmax(sims))  # first maximum: the earliest record among equals
    return (int(cands[j]), float(sims[j])) if sims[j] >= threshold else None


def cross_duplicates(
    reference: Sequence[Record], others: Sequence[Record], threshold: float = 0.8, hasher: MinHasher | None = None
) -> list[tuple[int, int, float]]:
    """(index in others, index in reference, similarity) for every record of `others` that is an exact
    (similarity 1.0) or near duplicate of a `reference` record: the train/test leak check."""
    hasher = hasher or MinHasher()
    ref_keys = {}
    for i, r in enumerate(reference):
        ref_keys.setdefault(exact_key(r), i)
    sigs = hasher.signatures([dedup_text(r) for r in [*reference, *others]])
    lsh = MinHashLSH(threshold=threshold, num_perm=hasher.num_perm, weights=LSH_WEIGHTS)
    for i in range(len(reference)):
        lsh.insert(i, hasher.lean(sigs[i]), check_duplication=False)
    leaks: list[tuple[int, int, float]] = []
    for k, r in enumerate(others):
        j = ref_keys.get(exact_key(r))
        if j is not None:
            leaks.append((k, j, 1.0))
            continue
        i = len(reference) + k
        best = _best_match(sigs, i, lsh.query(hasher.lean(sigs[i])), threshold)
        if best is not None:
            leaks.append((k, best[0], best[1]))
    return leaks
