"""Which photo pairs SfM matches: all of them when that is cheap, else the ones that overlap.

Matching every pair costs n(n-1)/2 matchings: 630 for 36 photos, 4,950 for 100 and 44,850
for 300. A product shoot is one or more rings (a turntable, or a walk around the table), so
most pairs look at opposite sides and share nothing. For larger sets the pairs are:

- **sequential**: each photo with its next ``overlap`` photos in capture order, plus links at
  distances 2^k (rings of a turntable shoot), plus loop closure (the ring's end with its start);
- **retrieval**: each photo with the ``k`` photos that look most like it, by a global
  descriptor (VLAD over a small vocabulary learnt from the set's own SIFT descriptors). This
  finds the neighbours in the ring above and below, and photos out of capture order, which the
  sequential pairs miss when names do not follow the shoot.

No weights are downloaded: the vocabulary is learnt on the photos themselves, which takes
well under a second for hundreds of photos.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

#: Visual words of the retrieval vocabulary.
VOCABULARY_WORDS = 64
#: Descriptors per photo (its largest features) that learn the vocabulary and describe it.
DESCRIPTORS_PER_PHOTO = 1000
#: Descriptors sampled in all to learn the vocabulary.
VOCABULARY_SAMPLE = 60_000


def exhaustive_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """All unordered pairs."""
    return list(itertools.combinations(names, 2))


def _sequential_index_pairs(n: int, overlap: int) -> set[tuple[int, int]]:
    pairs: set[tuple[int, int]] = set()
    for i in range(n):
        for k in range(1, overlap + 1):
            if i + k < n:
                pairs.add((i, i + k))
        k = overlap * 2
        while i + k < n:
            pairs.add((i, i + k))
            k *= 2
    for i in range(min(overlap, n)):
        for j in range(max(0, n - overlap), n):
            if i < j:
                pairs.add((i, j))
    return pairs


def sequential_pairs(names: Sequence[str], overlap: int) -> list[tuple[str, str]]:
    """Pairs for an ordered capture: neighbours, quadratic long-range links and loop closure.

    ``names`` are in capture order. Each image is matched with its ``overlap`` successors,
    with successors at distances 2^k (links across rings of a turntable shoot), and the end of
    the sequence is matched with its start (the turntable closes its loop).
    """
    return [(names[i], names[j]) for i, j in sorted(_sequential_index_pairs(len(names), overlap))]


def capped_pairs(pairs: list[tuple[str, str]], cap: int, seed: int) -> list[tuple[str, str]]:
    """At most ``cap`` pairs, keeping a deterministic uniform subset."""
    if len(pairs) <= cap:
        return pairs
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(pairs), cap, replace=False))
    return [pairs[i] for i in keep]


def _as_float(descriptors: np.ndarray) -> np.ndarray:
    d = descriptors.astype(np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)


def global_descriptors(
    descriptors: Sequence[np.ndarray], words: int = VOCABULARY_WORDS, seed: int = 0
) -> np.ndarray:
    """One unit-length VLAD vector per photo from its SIFT descriptors (largest features first).

    The vocabulary is learnt by k-means on a sample of all photos' descriptors. Each photo's
    residuals to their nearest word are summed per word, normalised per word and power-law
    normalised (Arandjelovic and Zisserman, "All about VLAD", 2013).
    """
    per_photo = [_as_float(d[:DESCRIPTORS_PER_PHOTO]) for d in descriptors]
    rng = np.random.default_rng(seed)
    pool = np.concatenate([d for d in per_photo if len(d)] or [np.zeros((0, 128), np.float32)])
    if len(pool) < words:
        return np.zeros((len(per_photo), words * 128), np.float32)
    if len(pool) > VOCABULARY_SAMPLE:
        pool = pool[rng.choice(len(pool), VOCABULARY_SAMPLE, replace=False)]
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1e-4)
    _, _, centres = cv2.kmeans(pool, words, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    out = np.zeros((len(per_photo), words, 128), np.float32)
    c_sq = (centres**2).sum(axis=1)
    for i, d in enumerate(per_photo):
        if not len(d):
            continue
        nearest = np.argmin(c_sq[None, :] - 2.0 * d @ centres.T, axis=1)
        np.add.at(out[i], nearest, d - centres[nearest])
    norms = np.linalg.norm(out, axis=2, keepdims=True)
    out /= np.maximum(norms, 1e-6)
    flat = out.reshape(len(per_photo), -1)
    flat = np.sign(flat) * np.sqrt(np.abs(flat))
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)
    return flat


def retrieval_pairs(
    names: Sequence[str],
    descriptors: Mapping[str, np.ndarray],
    k: int,
    overlap: int = 0,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """Each photo with its ``k`` most similar photos, plus the sequential pairs of ``overlap``.

    Parameters
    ----------
    names
        Photos in capture order.
    descriptors
        SIFT descriptors of each photo (N x 128, largest features first).
    k
        Most similar photos paired with each photo.
    overlap
        Capture-order neighbours paired as well (:func:`sequential_pairs`; 0: none).
    seed
        Seed of the vocabulary's k-means.
    """
    n = len(names)
    g = global_descriptors([descriptors[name] for name in names], seed=seed)
    sim = g @ g.T
    np.fill_diagonal(sim, -np.inf)
    pairs = _sequential_index_pairs(n, overlap) if overlap > 0 else set()
    kk = min(k, n - 1)
    if kk > 0:
        nearest = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
        for i in range(n):
            for j in nearest[i]:
                pairs.add((min(i, int(j)), max(i, int(j))))
    return [(names[i], names[j]) for i, j in sorted(pairs)]
