"""Word lists for attribute insertion (XMAI): attribute words by kind, the prompts that embed a
bare attribute word, and the object nouns an attribute can be inserted before."""
from __future__ import annotations

__all__ = ["DEFAULT_ATTRIBUTES", "DEFAULT_NOUNS", "DEFAULT_TEMPLATES"]

#: the default attribute vocabulary, by kind
DEFAULT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white", "black", "gray",
               "brown", "pink", "golden", "silver", "dark", "pale"),
    "size": ("tiny", "small", "little", "large", "big", "huge", "giant", "tall", "short", "long", "wide", "thin"),
    "material": ("wooden", "metal", "plastic", "glass", "stone", "paper", "leather", "rubber", "ceramic",
                 "cotton", "concrete", "steel"),
    "texture": ("smooth", "rough", "striped", "spotted", "shiny", "matte", "fluffy", "furry", "glossy",
                "dotted", "soft", "hard"),
    "state": ("old", "new", "broken", "empty", "full", "wet", "dry", "dirty", "clean", "open", "closed",
              "bright", "round", "flat", "hollow", "solid"),
}

#: prompts used to embed an attribute word for zero-shot attribute scoring
DEFAULT_TEMPLATES: tuple[str, ...] = ("a {} object.", "something {}.")

#: common object nouns (COCO-like) plus geometric shape nouns; plurals are matched too
DEFAULT_NOUNS: tuple[str, ...] = tuple(dict.fromkeys((
    "person", "man", "woman", "girl", "boy", "child", "kid", "baby", "people", "player", "dog", "cat",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "bird", "animal", "car", "bus",
    "truck", "bike", "bicycle", "motorcycle", "train", "plane", "airplane", "boat", "chair", "table",
    "bed", "couch", "sofa", "bench", "desk", "ball", "kite", "umbrella", "bag", "backpack", "suitcase",
    "hat", "shirt", "jacket", "dress", "shoe", "cup", "mug", "bottle", "glass", "plate", "bowl", "book",
    "phone", "laptop", "computer", "keyboard", "television", "tv", "clock", "vase", "lamp", "tree",
    "flower", "plant", "house", "building", "door", "window", "wall", "fence", "sign", "pizza", "cake",
    "sandwich", "apple", "banana", "orange", "box", "toy", "skateboard", "surfboard", "board", "frisbee",
    "racket", "bat", "road", "street", "field", "beach", "shape", "object", "thing", "item",
    "circle", "square", "triangle", "star", "cross", "ring", "rectangle", "polygon", "dot", "line",
)))
