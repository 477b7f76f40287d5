"""The object kinds PRIST-Synth draws: colours, geometry (body, parts, text slot) and lore.

Every builder lays its object out inside a box whose top-left corner is ``(x0, y0)`` and whose
size is ``extent * s`` pixels, ``s`` being the kind's nominal size (a bottle's height, a bus's
width...). Geometry is relative to ``s``, so the mix of mask sizes, and with it the granularity
mix, is the same at every image size. All shapes are convex polygons (see ``geometry``); a part
painted later hides what it covers of an earlier part of the same object (the bolts on a
sign's board).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pixelagent.data.synth import geometry as geo
from pixelagent.data.synth.geometry import Poly

RGB = tuple[int, int, int]

PALETTE: dict[str, RGB] = {
    "red": (205, 40, 40), "green": (40, 150, 70), "blue": (45, 85, 205), "yellow": (240, 205, 40),
    "orange": (240, 135, 30), "purple": (135, 65, 175), "white": (242, 242, 236), "black": (32, 32, 36),
}
"""Object colours, by the name the dialogues use."""

EXTRA: dict[str, RGB] = {
    "grey": (150, 150, 150), "light blue": (175, 215, 240), "amber": (255, 185, 20),
    "cream": (250, 238, 205), "silver": (200, 200, 208),
}
"""Colours of parts that no object has as a whole."""


def rgb_of(name: str) -> RGB:
    """RGB of a palette or extra colour name."""
    return PALETTE.get(name) or EXTRA[name]


def tone(colour: str, how: str) -> tuple[str, RGB]:
    """A darker (``how="dark"``) or lighter (``"light"``) shade of a palette colour, with its name."""
    r, g, b = PALETTE[colour]
    if how == "dark":
        name = "grey" if colour == "white" else ("black" if colour == "black" else f"dark {colour}")
        return name, (int(r * 0.6), int(g * 0.6), int(b * 0.6))
    name = "white" if colour == "white" else ("grey" if colour == "black" else f"light {colour}")
    return name, (r + (255 - r) * 2 // 5, g + (255 - g) * 2 // 5, b + (255 - b) * 2 // 5)


def ink_for(rgb: RGB) -> RGB:
    """Black or white text, whichever contrasts with a background of ``rgb``."""
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (20, 20, 20) if luma > 140 else (250, 250, 250)


@dataclass(frozen=True)
class PartPlan:
    """One part: its name ("label"), convex polygons (px) and colour (name and RGB).

    ``inside`` marks a part drawn within the body polygons (a label on a bottle): the body
    already outlines it, so it need not cut other objects' polygons again.
    """

    name: str
    polys: tuple[Poly, ...]
    colour: str
    rgb: RGB
    inside: bool = False


@dataclass(frozen=True)
class TextPlan:
    """Where the word goes: inside ``box`` ``(x0, y0, x1, y1)`` px, which lies within ``part``.

    ``limit`` is the largest box inside the part: a small image's word may spill out of
    ``box`` into it rather than vanish (a 4-px font is the smallest drawn).
    """

    part: str
    box: tuple[float, float, float, float]
    rgb: RGB
    limit: tuple[float, float, float, float]


@dataclass(frozen=True)
class Blueprint:
    """An object ready to paint: body polygons (not in any part), then parts in order, then text."""

    body: tuple[Poly, ...]
    rgb: RGB
    parts: tuple[PartPlan, ...]
    text: TextPlan

    @property
    def outline(self) -> tuple[Poly, ...]:
        """Convex polygons whose union is the whole object (what it hides of objects behind it)."""
        return self.body + tuple(p for part in self.parts if not part.inside for p in part.polys)


Builder = Callable[[np.random.Generator, float, float, float, str, str], Blueprint]


@dataclass(frozen=True)
class KindSpec:
    """An object kind and what the dialogues know about it.

    ``size`` is the range of the nominal size ``s`` as a fraction of the image side;
    ``extent`` the (width, height) of the object's box in units of ``s``; ``words`` maps each
    word the kind may carry to a clause saying what it tells; ``text_where`` places the word in
    a phrase ("on the {obj}'s label").
    """

    name: str
    plural: str
    size: tuple[float, float]
    extent: tuple[float, float]
    words: dict[str, str]
    text_noun: str
    text_where: str
    purpose_questions: tuple[str, ...]
    purpose_answer: str
    build: Builder


def _other(rng: np.random.Generator, choices: tuple[str, ...], avoid: str) -> str:
    """A colour name from ``choices`` other than ``avoid`` (so parts stand out from the body)."""
    names = [c for c in choices if c != avoid]
    return names[int(rng.integers(len(names)))]


def _inset(box: tuple[float, float, float, float], dx: float, dy: float) -> tuple[float, float, float, float]:
    return (box[0] + dx, box[1] + dy, box[2] - dx, box[3] - dy)


# --------------------------------------------------------------------- builders


def _bottle(rng: np.random.Generator, x0: float, y0: float, s: float, colour: str, word: str) -> Blueprint:
    """A bottle ``s`` px tall: cap, neck, shoulders, body with a label round its middle."""
    cx, half, neck = x0 + 0.18 * s, 0.18 * s, 0.065 * s
    y1, r = y0 + s, 0.05 * s
    body = geo.oriented(np.concatenate([
        [(cx - neck, y0 + 0.22 * s), (cx + neck, y0 + 0.22 * s), (cx + half, y0 + 0.34 * s)],
        geo.arc(cx + half - r, y1 - r, r, r, 0.0, math.pi / 2, 5),
        geo.arc(cx - half + r, y1 - r, r, r, math.pi / 2, math.pi, 5),
        [(cx - half, y0 + 0.34 * s)]]))
    neck_poly = geo.rect(cx - neck, y0 + 0.075 * s, cx + neck, y0 + 0.23 * s)
    cap_name = _other(rng, ("black", "white", "red", "blue", "green"), colour)
    label_name = _other(rng, ("white", "cream", "yellow", "black"), colour)
    label_box = (cx - half, y0 + 0.48 * s, cx + half, y0 + 0.78 * s)
    parts = (
        PartPlan("cap", (geo.rect(cx - 0.075 * s, y0, cx + 0.075 * s, y0 + 0.075 * s),), cap_name,
                 rgb_of(cap_name)),
        PartPlan("label", (geo.rect(*label_box),), label_name, rgb_of(label_name), inside=True),
    )
    # The word is small on its label, as on real bottles (most words are "fine" targets).
    slot = (cx - half + 0.02 * s, y0 + 0.585 * s, cx + half - 0.02 * s, y0 + 0.675 * s)
    text = TextPlan("label", slot, ink_for(rgb_of(label_name)), label_box)
    return Blueprint((body, neck_poly), PALETTE[colour], parts, text)


def _bus(rng: np.random.Generator, x0: float, y0: float, s: float, colour: str, word: str) -> Blueprint:
    """A bus ``s`` px long, front left or right: windows, a route display, a headlight, two wheels."""
    flip = bool(rng.random() < 0.5)

    def box(u0: float, v0: float, u1: float, v1: float) -> tuple[float, float, float, float]:
        # (u, v) in units of s from the bus's back-top corner; flipping mirrors u.
        a, b = (1 - u1, 1 - u0) if flip else (u0, u1)
        return (x0 + a * s, y0 + v0 * s, x0 + b * s, y0 + v1 * s)

    body = geo.rounded_rect(x0, y0, x0 + s, y0 + 0.42 * s, 0.05 * s)
    windows = tuple(geo.rect(*box(0.05 + i * 0.16, 0.07, 0.18 + i * 0.16, 0.2)) for i in range(4))
    display = box(0.72, 0.06, 0.95, 0.17)
    wheels = tuple(geo.circle(box(u, 0, u, 0)[0], y0 + 0.42 * s, 0.085 * s) for u in (0.2, 0.8))
    light = box(0.935, 0.3, 0.995, 0.36)
    parts = (
        PartPlan("windows", windows, "light blue", rgb_of("light blue"), inside=True),
        PartPlan("route display", (geo.rect(*display),), "black", PALETTE["black"], inside=True),
        PartPlan("headlight", (geo.circle((light[0] + light[2]) / 2, (light[1] + light[3]) / 2, 0.03 * s),),
                 "yellow", PALETTE["yellow"], inside=True),
        PartPlan("wheels", wheels, "black", PALETTE["black"]),
    )
    text = TextPlan("route display", _inset(display, 0.012 * s, 0.01 * s), rgb_of("amber"), display)
    return Blueprint((body,), PALETTE[colour], parts, text)


def _coin(rng: np.random.Generator, x0: float, y0: float, s: float, colour: str, word: str) -> Blueprint:
    """A coin ``s`` px across: a darker rim around a lighter face bearing its value."""
    r, cx, cy = s / 2, x0 + s / 2, y0 + s / 2
    n = geo.arc_segments(r)
    # Face, rim and outline share the same n angles, so the rim's inner chords are the face's edges.
    face = geo.regular_polygon(cx, cy, 0.8 * r, n)
    rim = tuple(geo.ring_segments(cx, cy, 0.8 * r, r, 0.0, 2 * math.pi, n))
    rim_name, rim_rgb = tone(colour, "dark")
    face_name, face_rgb = tone(colour, "light")
    parts = (PartPlan("rim", rim, rim_name, rim_rgb, inside=True),
             PartPlan("face", (face,), face_name, face_rgb, inside=True))
    inscribed = 0.8 * r / math.sqrt(2)  # half the side of the square inside the face
    text = TextPlan("face", (cx - 0.52 * r, cy - 0.34 * r, cx + 0.52 * r, cy + 0.34 * r), ink_for(face_rgb),
                    (cx - inscribed, cy - inscribed, cx + inscribed, cy + inscribed))
    return Blueprint((geo.regular_polygon(cx, cy, r, n),), PALETTE[colour], parts, text)


def _sign(rng: np.random.Generator, x0: float, y0: float, s: float, colour: str, word: str) -> Blueprint:
    """A sign ``s`` px tall: a board (an octagon for STOP) with two bolts, on a grey post."""
    cx = x0 + 0.35 * s
    if word == "STOP":
        r = 0.35 * s
        board = geo.regular_polygon(cx, y0 + r, r, 8, math.pi / 8)
        bottom = y0 + r + r * math.cos(math.pi / 8)
        area = (cx - 0.66 * r, y0 + 0.72 * r, cx + 0.66 * r, y0 + 1.28 * r)
        bolt_dx, bolt_y = 0.09, 0.085  # inside the octagon's slanted top corners
        limit = (cx - 0.6 * r, y0 + 0.4 * r, cx + 0.6 * r, y0 + 1.6 * r)  # |x| + |y| stays inside
    else:
        bottom = y0 + 0.42 * s
        board = geo.rounded_rect(x0, y0, x0 + 0.7 * s, bottom, 0.03 * s)
        area = (x0 + 0.06 * s, y0 + 0.13 * s, x0 + 0.64 * s, y0 + 0.29 * s)
        bolt_dx, bolt_y = 0.13, 0.06
        limit = _inset((x0, y0, x0 + 0.7 * s, bottom), 0.03 * s, 0.1 * s)  # below the bolts
    # Two bolts hold the board; they sit on it near its top, clear of the word.
    bolts = tuple(geo.circle(cx + dx * s, y0 + bolt_y * s, 0.022 * s) for dx in (-bolt_dx, bolt_dx))
    parts = (
        PartPlan("board", (board,), colour, PALETTE[colour]),
        PartPlan("bolts", bolts, "silver", rgb_of("silver"), inside=True),
        PartPlan("post", (geo.rect(cx - 0.035 * s, bottom, cx + 0.035 * s, y0 + s),), "grey", rgb_of("grey")),
    )
    return Blueprint((), PALETTE[colour], parts, TextPlan("board", area, ink_for(PALETTE[colour]), limit))


def _book(rng: np.random.Generator, x0: float, y0: float, s: float, colour: str, word: str) -> Blueprint:
    """A book ``s`` px tall seen from the front: a darker spine strip, a title panel, an emblem."""
    spine_name, spine_rgb = tone(colour, "dark")
    panel_name = _other(rng, ("white", "cream", "yellow", "black"), colour)
    panel = (x0 + 0.17 * s, y0 + 0.14 * s, x0 + 0.66 * s, y0 + 0.42 * s)
    emblem_name = _other(rng, ("white", "yellow", "red", "black"), colour)
    parts = (
        PartPlan("spine", (geo.rect(x0, y0, x0 + 0.1 * s, y0 + s),), spine_name, spine_rgb, inside=True),
        PartPlan("title panel", (geo.rect(*panel),), panel_name, rgb_of(panel_name), inside=True),
        PartPlan("emblem", (geo.circle(x0 + 0.41 * s, y0 + 0.8 * s, 0.05 * s),), emblem_name,
                 rgb_of(emblem_name), inside=True),
    )
    slot = (panel[0] + 0.025 * s, y0 + 0.23 * s, panel[2] - 0.025 * s, y0 + 0.33 * s)
    text = TextPlan("title panel", slot, ink_for(rgb_of(panel_name)), panel)
    return Blueprint((geo.rect(x0, y0, x0 + 0.72 * s, y0 + s),), PALETTE[colour], parts, text)


def _mug(rng: np.random.Generator, x0: float, y0: float, s: float, colour: str, word: str) -> Blueprint:
    """A mug ``s`` px tall: a body with a printed word and a handle on its left or right."""
    left = bool(rng.random() < 0.5)
    bx0 = x0 + (0.3 * s if left else 0.0)
    bx1 = bx0 + 0.8 * s
    body = geo.rounded_rect(bx0, y0, bx1, y0 + s, 0.1 * s, top=False)
    # The handle's ring starts exactly at the body's side, so the two parts never overlap.
    hx, (a0, a1) = (bx0, (math.pi / 2, 1.5 * math.pi)) if left else (bx1, (-math.pi / 2, math.pi / 2))
    handle = tuple(geo.ring_segments(hx, y0 + 0.5 * s, 0.17 * s, 0.3 * s, a0, a1, 12))
    handle_name, handle_rgb = tone(colour, "dark")
    parts = (PartPlan("body", (body,), colour, PALETTE[colour]),
             PartPlan("handle", handle, handle_name, handle_rgb))
    text = TextPlan("body", (bx0 + 0.08 * s, y0 + 0.4 * s, bx1 - 0.08 * s, y0 + 0.6 * s), ink_for(PALETTE[colour]),
                    (bx0 + 0.02 * s, y0 + 0.1 * s, bx1 - 0.02 * s, y0 + 0.85 * s))
    return Blueprint((), PALETTE[colour], parts, text)


# --------------------------------------------------------------------- the kinds

KINDS: dict[str, KindSpec] = {spec.name: spec for spec in (
    KindSpec("bottle", "bottles", (0.3, 0.5), (0.36, 1.0),
             {"COLA": "so it most likely holds a fizzy soft drink", "MILK": "so it contains milk",
              "WATER": "so it is a bottle of drinking water", "JUICE": "so there is fruit juice inside",
              "SODA": "so it holds a sweet soda", "OIL": "so it is cooking oil rather than a drink"},
             "word", "on the {obj}'s label",
             ("I'm thirsty. Is there anything to drink in this picture?",
              "Which things in the image could contain a drink?"),
             "Bottles usually hold drinks, and I can see {list}.", _bottle),
    KindSpec("bus", "buses", (0.38, 0.55), (1.0, 0.52),
             {w: f"so it runs on route {w}" for w in ("3", "7", "12", "31", "42", "58", "99", "205")},
             "route number", "on the {obj}'s route display",
             ("Is there any public transport in this scene?",
              "How could someone get across town from here?"),
             "A bus carries passengers along a fixed route; there is {list}.", _bus),
    KindSpec("coin", "coins", (0.12, 0.2), (1.0, 1.0),
             {w: f"so the coin is worth {w}" for w in ("1", "2", "5", "10", "20", "50")},
             "number", "on the {obj}'s face",
             ("Is there any money lying around in the image?",
              "Can you spot anything I could pay with?"),
             "Coins are small change, and I can see {list}.", _coin),
    KindSpec("sign", "signs", (0.32, 0.5), (0.7, 1.0),
             {"STOP": "which tells drivers to come to a halt", "OPEN": "so the shop is open for business",
              "EXIT": "so it marks the way out", "SALE": "so prices are reduced",
              "SLOW": "so drivers should slow down", "PARK": "so cars may park here",
              "CAFE": "so coffee is served nearby"},
             "word", "on the {obj}'s board",
             ("Is anything here giving instructions to passers-by?",
              "What in the picture is meant to be read from a distance?"),
             "Signs display short messages for people nearby; I can see {list}.", _sign),
    KindSpec("book", "books", (0.25, 0.4), (0.72, 1.0),
             {"BIRDS": "so the book is probably about birds", "MAPS": "so it is likely an atlas of maps",
              "POEMS": "so it is a collection of poetry", "JAZZ": "so it is about jazz music",
              "CHESS": "so it teaches chess", "SPACE": "so it is about outer space"},
             "title", "on the {obj}'s cover",
             ("Is there something to read in this picture?",
              "Which object would you pick up to learn something?"),
             "A book's cover usually tells you what it is about; I can see {list}.", _book),
    KindSpec("mug", "mugs", (0.16, 0.26), (1.1, 1.0),
             {"TEA": "so it is meant for tea", "JAVA": "so its owner likes coffee",
              "COCOA": "so it is meant for hot chocolate", "HOME": "so it is probably a homely souvenir",
              "BOSS": "so it likely belongs to the boss", "LOVE": "so it was probably a gift"},
             "word", "printed on the {obj}",
             ("Where could I pour a hot drink?",
              "Is there anything to drink a hot beverage from?"),
             "A mug's handle keeps your fingers away from the heat; I can see {list}.", _mug),
)}
"""Every kind PRIST-Synth draws, by name."""
