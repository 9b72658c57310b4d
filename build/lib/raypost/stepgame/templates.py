"""Sentence templates: ``{A}`` stands in relation LABEL to ``{B}``, read literally.

The families are the ones of the official StepGame generator (``Code/template.py`` in
ZhengxiangShi/StepGame, MIT licence), with every sentence filed under the relation its words
state. Ten official templates state a different relation from the one they were generated
for; they appear here under the relation they actually state, and the corrected wording joins
the intended family (e.g. "{B} is there and {A} is at the 8 position of a clock face" for
lower-left). Parsing and generation share this one table, so the parser reads every sentence
the generator writes, and reads the official sentences literally.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

from raypost.stepgame.labels import INVERSE

TEMPLATES: dict[str, tuple[str, ...]] = {
    "left": (
        "{A} is to the left of {B}.", "{A} is at {B}’s 9 o'clock.", "{A} is positioned left to {B}.",
        "{A} is on the left side to {B}.", "{A} and {B} are parallel, and {A} on the left of {B}.",
        "{A} is to the left of {B} horizontally.",
        "The object labeled {A} is positioned to the left of the object labeled {B}.",
        "{B} is over there and {A} is on the left.", "{A} is placed in the left direction of {B}.",
        "{A} is on the left and {B} is on the right.", "{A} is sitting at the 9:00 position of {B}.",
        "{A} is sitting in the left direction of {B}.", "{B} is over there and {A} is on the left of it.",
        "{A} is at the 9 o'clock position relative to {B}.",
        "{A} and {B} are parallel, and {A} is to the left of {B}.",
        "{A} and {B} are horizontal and {A} is to the left of {B}.",
        "{A} and {B} are in a horizontal line with {A} on the left.",
        "{A} is to the left of {B} with a small gap between them.",
        "{A} is on the same horizontal plane directly left to {B}.",
        "{A} is to the left of {B} and is on the same horizontal plane.",
        "{B} and {A} are side by side with {B} to the right and {A} to the left.",
        "{A} and {B} are both there with the object {A} is to the left of object {B}.",
        "{A} and {B} are next to each other with {B} on the right and {A} on the left.",
        "{A} presents left to {B}.",
    ),
    "right": (
        "{A} is to the right of {B}.", "{A} is at {B}'s 3 o'clock.", "{A} is positioned right to {B}.",
        "{A} is on the right side to {B}.", "{A} and {B} are parallel, and {A} on the right of {B}.",
        "{A} is to the right of {B} horizontally.",
        "The object labeled {A} is positioned to the right of the object labeled {B}.",
        "{B} is over there and {A} is on the right.", "{A} is placed in the right direction of {B}.",
        "{A} is on the right and {B} is on the left.", "{A} is sitting at the 3:00 position to {B}.",
        "{A} is sitting in the right direction of {B}.", "{B} is over there and {A} is on the right of it.",
        "{A} is at the 3 o'clock position relative to {B}.",
        "{A} and {B} are parallel, and {A} is to the right of {B}.",
        "{A} and {B} are horizontal and {A} is to the right of {B}.",
        "{B} and {A} are in a horizontal line with {A} on the right.",
        "{A} is to the right of {B} with a small gap between them.",
        "{A} is on the same horizontal plane directly right to {B}.",
        "{A} is to the right of {B} and is on the same horizontal plane.",
        "{B} and {A} are side by side with {B} to the left and {A} to the right.",
        "{A} and {B} are both there with the object {A} is to the right of object {B}.",
        "{B} and {A} are next to each other with {B} on the left and {A} on the right.",
        "{A} presents right to {B}.",
    ),
    "above": (
        "{A} is over {B}.", "{A} is above {B}.", "{A} is directly above {B}.", "{A} is on top of {B}.",
        "{A} is at {B}'s 12 o'clock.", "{A} is positioned above {B}.", "{A} is on the top side to {B}.",
        "{A} and {B} are parallel, and {A} is over {B}.", "{A} is to the top of {B} vertically.",
        "{A} is over there with {B} below.", "The object {A} is positioned directly above the object {B}.",
        "{B} is over there and {A} is directly above it.", "{A} is placed on the top of {B}.",
        "{A} is on the top and {B} is at the bottom.", "{A} is sitting at the 12:00 position to {B}.",
        "{A} is sitting at the top position to {B}.", "{B} is over there and {A} is on the top of it.",
        "{A} is at the 12 o'clock position relative to {B}.",
        "{A} and {B} are parallel, and {A} is on top of {B}.", "{A} and {B} are vertical and {A} is above {B}.",
        "{A} and {B} are in a vertical line with {A} on top.", "{A} is above {B} with a small gap between them.",
        "{A} is on the same vertical plane directly above {B}.",
        "{A} is on the top of {B} and is on the same vertical plane.",
        "{A} and {B} are side by side with {A} on the top and {B} at the bottom.",
        "{A} and {B} are both there with the object {A} above the object {B}.",
        "{A} and {B} are next to each other with {A} on the top and {B} at the bottom.",
        "{A} presents over {B}.",
    ),
    "below": (
        "{A} is under {B}.", "{A} is below {B}.", "{A} is directly below {B}.", "{A} is at the bottom of {B}.",
        "{A} is at {B}'s 6 o'clock.", "{A} is positioned below {B}.", "{A} is at the lower side of {B}.",
        "{A} and {B} are parallel, and {A} is under {B}.", "{A} is at the bottom of {B} vertically.",
        "{A} is over there with {B} above.", "The object {A} is positioned directly below the object {B}.",
        "{B} is over there and {A} is directly below it.", "{A} is placed at the bottom of {B}.",
        "{A} is at the bottom and {B} is on the top.", "{A} is sitting at the 6:00 position to {B}.",
        "{A} is sitting at the lower position to {B}.", "{B} is over there and {A} is at the bottom of it.",
        "{A} is at the 6 o'clock position relative to {B}.",
        "{B} and {A} are parallel, and {A} is below {B}.", "{A} and {B} are vertical and {A} is below {B}.",
        "{B} and {A} are in a vertical line with {A} below {B}.",
        "{A} is below {B} with a small gap between them.",
        "{A} is on the same vertical plane directly below {B}.",
        "{A} is at the bottom of {B} and is on the same vertical plane.",
        "{B} and {A} are side by side with {A} at the bottom and {B} on the top.",
        "{B} and {A} are both there with the object {A} below the object {B}.",
        "{B} and {A} are next to each other with {A} at the bottom {B} on the top.",
        "{A} presents below {B}.",
    ),
    "lower-left": (
        "{A} is on the lower left of {B}.", "{A} is to the bottom left of {B}.",
        "The object {A} is lower and slightly to the left of the object {B}.",
        "{A} is on the left side of and below {B}.", "{A} is positioned in the lower left corner of {B}.",
        "{A} is lower left to {B}.", "{A} is to the bottom-left of {B}.", "{A} is below {B} at 7 o'clock.",
        "{A} is positioned down and to the left of {B}.",
        "The object {A} is positioned below and to the left of the object {B}.",
        "{A} is diagonally left and below {B}.", "{A} is placed at the lower left of {B}.",
        "{A} is sitting at the lower left position to {B}.",
        "{B} is there and {A} is at the 8 position of a clock face.",
        "{A} is to the left of {B} and below {B} at approximately a 45 degree angle.",
        "{A} is south west of {B}.", "{A} is below and to the left of {B}.",
        "The objects {A} and {B} are over there. The object {A} is lower and slightly to the left of the object {B}.",
        "{A} is directly south west of {B}.", "{A} is positioned below {B} and to the left.",
        "{A} is at a 45 degree angle to {B}, in the lower lefthand corner.",
        "{A} is diagonally below {B} to the left at a 45 degree angle.",
        "Object {A} is below object {B} and to the left of it, too.",
        "{A} is diagonally to the bottom left of {B}.", "{A} presents lower left to {B}.",
        "If {B} is the center of a clock face, {A} is located between 7 and 8.",
        "{A} is below {B} and to the left of {B}.",
    ),
    "upper-right": (
        "{A} is on the upper right of {B}.", "{A} is to the top right of {B}.",
        "The object {A} is upper and slightly to the right of the object {B}.",
        "{A} is on the right side and top of {B}.", "{A} is positioned in the front right corner of {B}.",
        "{A} is upper right to {B}.", "{A} is to the top-right of {B}.", "{A} is above {B} at 2 o'clock.",
        "{A} is positioned up and to the right of {B}.",
        "The object {A} is positioned above and to the right of the object {B}.",
        "{A} is diagonally right and above {B}.", "{A} is placed at the upper right of {B}.",
        "{A} is sitting at the upper right position to {B}.",
        "{B} is there and {A} is at the 2 position of a clock face.",
        "{A} is to the right and above {B} at an angle of about 45 degrees.",
        "{A} is north east of {B}.", "{A} is above and to the right of {B}.",
        "The objects {A} and {B} are over there. The object {A} is above and slightly to the right of the object {B}.",
        "{A} is directly north east of {B}.", "{A} is positioned above {B} and to the right.",
        "{A} is at a 45 degree angle to {B}, in the upper righthand corner.",
        "{A} is diagonally above {B} to the right at a 45 degree.",
        "Object {A} is above object {B} and to the right of it, too.",
        "{A} is diagonally to the upper right of {B}.", "{A} presents upper right to {B}.",
        "If {B} is the center of a clock face, {A} is located between 2 and 3.",
        "{A} is above {B} and to the right of {B}.",
    ),
    "lower-right": (
        "{A} is on the lower right of {B}.", "{A} is to the bottom right of {B}.",
        "The object {A} is lower and slightly to the right of the object {B}.",
        "{A} is on the right side and below {B}.", "{A} is positioned in the lower right corner of {B}.",
        "{A} is lower right of {B}.",
        "{A} is to the bottom-right of {B}.", "{A} is below {B} at 4 o'clock.",
        "{A} is positioned below and to the right of {B}.",
        "The object {A} is positioned below and to the right of the object {B}.",
        "{A} is diagonally right and below {B}.", "{A} is placed at the lower right of {B}.",
        "{A} is sitting at the lower right position to {B}.",
        "{B} is there and {A} is at the 5 position of a clock face.",
        "{A} is to the right and below {B} at an angle of about 45 degrees.",
        "{A} is south east of {B}.", "{A} is below and to the right of {B}.",
        "The object {A} and {B} are there. The object {A} is below and slightly to the right of the object {B}.",
        "{A} is directly south east of {B}.", "{A} is positioned below {B} and to the right.",
        "{A} is at a 45 degree angle to {B}, in the lower righthand corner.",
        "{A} is diagonally below {B} to the right at a 45 degree angle.",
        "Object {A} is below object {B} and to the right of it, too.",
        "{A} is diagonally to the bottom right of {B}.", "{A} presents lower right to {B}.",
        "If {A} is the center of a clock face, {B} is located between 10 and 11.",
        "{A} is below {B} and to the right of {B}.",
    ),
    "upper-left": (
        "{A} is to the upper left of {B}.",
        "The object {A} is upper and slightly to the left of the object {B}.",
        "{A} is on the left side and above {B}.",
        "{A} is slightly off center to the top left and {B} is slightly off center to the bottom right.",
        "{A} is positioned in the top left corner of {B}.", "{A} is upper left of {B}.",
        "{A} is to the top-left of {B}.", "{A} is above {B} at 10 o'clock.",
        "{A} is positioned above and to the left of {B}.",
        "The object {A} is positioned above and to the left of object {B}.",
        "{A} is diagonally left and above {B}.", "{A} is placed at the upper left of {B}.",
        "{A} is sitting at the upper left position to {B}.",
        "{B} is there and {A} is at the 10 position of a clock face.",
        "{A} is to the left and above {B} at an angle of about 45 degrees.",
        "{A} is north west of {B}.", "{A} is above and to the left of {B}.",
        "The object {B} and {A} are there. The object {A} is above and slightly to the left of the object {B}.",
        "{A} is directly north west of {B}.", "{A} is positioned above {B} and to the left.",
        "{A} is at a 45 degree angle to {B}, in the upper lefthand corner.",
        "{A} is diagonally above {B} to the left at a 45 degree angle.",
        "Object {A} is above object {B} and to the left of it, too.",
        "{A} is diagonally to the upper left of {B}.", "{A} presents upper left to {B}.",
        "If {A} is the center of a clock face, {B} is located between 4 and 5.",
        "{A} is above {B} and to the left of {B}.",
    ),
    # Not in the official release (its chains only use the eight directions): optional links.
    "overlap": (
        "{A} and {B} are at the same position.", "{A} is at the same place as {B}.",
        "{A} and {B} overlap.", "{A} overlaps {B}.", "{A} is on the same spot as {B}.",
    ),
}

AGENT = re.compile(r"\b[A-Z]\b")  # agents are single capital letters; no template word is one
QUESTION = "What is the relation of the agent {} to the agent {}?"
_QUESTION_RE = re.compile(r"What is the relation of the agent ([A-Z]) to the agent ([A-Z])\?")


def skeleton(text: str) -> tuple[str, list[str]]:
    """A sentence with its agent names replaced by '@', and the names in order."""
    return AGENT.sub("@", text), AGENT.findall(text)


def _index() -> dict[str, tuple[str, tuple[str, ...]]]:
    """skeleton -> (label, placeholder per name slot); no wording may appear twice."""
    index = {}
    for label, family in TEMPLATES.items():
        for template in family:
            slots = tuple(re.findall(r"\{([AB])\}", template))
            key = re.sub(r"\{[AB]\}", "@", template)
            if key in index:
                raise AssertionError(f"template {template!r} repeats another one's wording")
            index[key] = (label, slots)
    return index


INDEX = _index()


@lru_cache(maxsize=1 << 16)  # the noise files repeat the clean files' sentences
def parse_sentence(text: str) -> tuple[str, str, str] | None:
    """``(a, label, b)`` meaning 'a is LABEL of b', or None for a sentence no template reads.

    The names in repeated slots must agree; a and b may be the same agent (the checker
    reports that as a self reference).
    """
    key, names = skeleton(text.strip())
    hit = INDEX.get(key)
    if hit is None:
        return None
    label, slots = hit
    bound: dict[str, str] = {}
    for slot, name in zip(slots, names):
        if bound.setdefault(slot, name) != name:
            return None
    return bound["A"], label, bound["B"]


def parse_question(text: str) -> tuple[str, str] | None:
    """``(x, y)`` for 'What is the relation of the agent X to the agent Y?', else None."""
    m = _QUESTION_RE.fullmatch(text.strip())
    return (m.group(1), m.group(2)) if m else None


def render(a: str, label: str, b: str, rng: random.Random) -> str:
    """A sentence stating 'a is LABEL of b', from either direction's family (half each)."""
    if rng.random() < 0.5:
        return rng.choice(TEMPLATES[label]).format(A=a, B=b)
    return rng.choice(TEMPLATES[INVERSE[label]]).format(A=b, B=a)
