"""Generate StepGame examples (a re-implementation of the official construction).

A story is a chain of k+1 agents on a grid, each linked to the previous one by one of the
eight directions (or, with ``overlap_prob``, the same position), each link written with a
random template. The question asks the relation of one random chain agent to another. Noise
follows the official generator's counts: a disconnected chain of 2..(k+1)//3+1 agents,
1..(k+1)//3+1 irrelevant agents hung off the chain (or off each other), and for k > 3 a
supporting path of axis-aligned steps between two chain agents that are not queried.
Sentences are shuffled. Every template states the relation it is used for, so the checker
solves every example.
"""

from __future__ import annotations

import random
import string
from collections import deque

from raypost.configs import check_range
from raypost.errors import ConfigError
from raypost.stepgame.labels import DIRECTIONS, OFFSETS, label_of_offset
from raypost.stepgame.templates import QUESTION, render

MAX_K = 10  # 26 single-letter agents: a k=10 story with the most noise uses 25


def generate_example(k: int, rng: random.Random, noise: bool = False, overlap_prob: float = 0.0) -> dict:
    """One example: story, question, label, plus k, hops, noisy and noise_nodes."""
    names = list(string.ascii_uppercase)
    rng.shuffle(names)
    chain, spare = names[: k + 1], names[k + 1:]
    pos = {chain[0]: (0, 0)}
    edges = []  # (a, label, b): a is LABEL of b
    for prev, new in zip(chain, chain[1:]):
        label = "overlap" if rng.random() < overlap_prob else rng.choice(DIRECTIONS)
        pos[new] = _step(pos[prev], label)
        edges.append((new, label, prev))
    i, j = rng.sample(range(k + 1), 2)
    ref, target = chain[i], chain[j]
    counts = [0, 0, 0]  # supporting, disconnected, irrelevant agents (as in statistic.txt)
    if noise:
        rest = [a for a in chain if a not in (ref, target)]
        counts[0] = _supporting(rest, pos, spare, edges, rng) if k > 3 else 0
        counts[1] = rng.randint(2, max(2, (k + 1) // 3 + 1))
        group = [spare.pop() for _ in range(counts[1])]
        edges += [(b, rng.choice(DIRECTIONS), a) for a, b in zip(group, group[1:])]
        counts[2] = rng.randint(1, (k + 1) // 3 + 1)
        attached = list(chain)
        for _ in range(counts[2]):
            new = spare.pop()
            edges.append((new, rng.choice(DIRECTIONS), rng.choice(attached)))
            attached.append(new)
    story = [render(a, label, b, rng) for a, label, b in edges]
    rng.shuffle(story)
    return {
        "story": story, "question": QUESTION.format(target, ref),
        "label": label_of_offset(pos[target][0] - pos[ref][0], pos[target][1] - pos[ref][1]),
        "k": k, "hops": _hops(edges, target, ref), "noisy": noise, "noise_nodes": counts,
    }


def _step(p: tuple[int, int], label: str) -> tuple[int, int]:
    return p[0] + OFFSETS[label][0], p[1] + OFFSETS[label][1]


def _supporting(rest, pos, spare, edges, rng) -> int:
    """A second path of unit steps between two unqueried chain agents 2..7 steps apart.

    Returns the number of new agents (steps - 1); 0 when 100 draws find no such pair.
    """
    for _ in range(100):
        start, end = rng.sample(rest, 2)
        dx, dy = pos[end][0] - pos[start][0], pos[end][1] - pos[start][1]
        if 2 <= abs(dx) + abs(dy) <= 7:
            break
    else:
        return 0
    steps = ["right" if dx > 0 else "left"] * abs(dx) + ["above" if dy > 0 else "below"] * abs(dy)
    rng.shuffle(steps)
    nodes = [start] + [spare.pop() for _ in steps[:-1]] + [end]
    edges += [(b, label, a) for a, b, label in zip(nodes, nodes[1:], steps)]
    return len(steps) - 1


def _hops(edges, x: str, y: str) -> int:
    """Fewest story links between x and y (breadth-first over the story's graph)."""
    graph: dict[str, list[str]] = {}
    for a, _, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, []).append(a)
    dist, todo = {y: 0}, deque([y])
    while todo:
        node = todo.popleft()
        for nxt in graph.get(node, ()):
            if nxt not in dist:
                dist[nxt] = dist[node] + 1
                todo.append(nxt)
    return dist.get(x, -1)


def generate(k: int, n: int, *, noise: bool = False, seed: int = 0, split: str = "train",
             overlap_prob: float = 0.0) -> list[dict]:
    """``n`` examples with chain length ``k``; the same (seed, k, split) gives the same rows."""
    check_range("k", k, 1, MAX_K)
    check_range("n", n, 1)
    check_range("overlap_prob", overlap_prob, 0.0, 1.0)
    rng = random.Random(f"stepgame:{seed}:{k}:{split}")
    return [generate_example(k, rng, noise, overlap_prob) for _ in range(n)]


def parse_ks(text: str) -> list[int]:
    """'1-10' or '1,3,5' (or a mix) -> sorted k values in 1..MAX_K."""
    ks = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            ks.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ConfigError(f"--k={text!r} is not a list of k values like 1-10 or 1,3,5") from None
    if not ks or min(ks) < 1 or max(ks) > MAX_K:
        raise ConfigError(f"--k={text!r} must name k values between 1 and {MAX_K}")
    return sorted(ks)
