"""Prompts for tiny models, shaped like a processor's output: every tensor the family's processor returns.

A ``Prompt`` is the shape of one batch (kind, rows, lengths, padding, grids, frame rate, audio
length); ``inputs(tiny, prompt)`` turns it into the dict a user gets from ``processor(...)``:
``input_ids`` and ``attention_mask`` (padded on either side), then per modality what that release's
forward reads: ``pixel_values`` + ``image_grid_thw`` (or ``target_sizes``), ``pixel_values_videos`` +
``video_grid_thw`` + the per-grid video timing (``second_per_grid_ts``, ``video_second_per_grid``),
``input_features`` + ``feature_attention_mask`` for audio, and the token-type maps the forward takes
(``mm_token_type_ids``, ``moe_mm_token_type_ids``). Which keys, tensor layouts and placeholder
layouts a model takes was found by probing its forward when it was built (``TinyModel.io``); this
module only writes them out. Placeholder counts come from the model's own feature extractors, so a
prompt always holds exactly one placeholder token per feature row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ropefix.errors import RopefixError

KINDS = ("text", "image", "video", "image+video", "audio")
VOCAB = 320  # tiny vocabulary; special tokens are remapped to its top
SPARE_IDS = VOCAB - 64  # ids from here up are reserved for special tokens
PAD_ID = 0  # what a tokenizer pads with; never a real token here
TYPE_IDS = {"image": 1, "video": 2, "audio": 3}  # the processors' mm_token_type_ids values


@dataclass(frozen=True)
class Prompt:
    """Shape of one batch of prompts; ``inputs()`` turns it into tensors."""

    kind: str = "text"  # one of KINDS
    batch: int = 1
    length: int = 6  # text tokens per row before padding
    pad: int = 0  # pad tokens added to every row but the last
    padding_side: str = "left"
    grid: tuple[int, int, int] = (1, 4, 4)  # (t, h, w) in patches; h, w multiples of merge
    seed: int = 0
    fps: float = 2.0  # video sampling rate: per-grid timing = temporal patch / fps, as processors compute it
    audio_frames: int = 48  # mel frames of the last row's clip; earlier rows get shorter clips (padded features)


@dataclass
class IO:
    """How a built model takes its inputs: found by probing its forward (see tinymodels.build)."""

    params: frozenset[str] = frozenset()  # the forward's parameter names
    pixel_format: str = "flat"  # flat (N, patch_dim) | patches (N, C, p, p) | navit (1, C, p, N*p)
    patch_dim: int = 0
    channels: int = 3
    patch: int = 14
    video_layout: str | None = None  # block | per-frame | frames-as-images; None: no video prompts
    timing_key: str | None = None  # the forward's per-grid video timing argument, if any
    timing_list: bool = False  # the release's processor hands it over as a Python list, not a tensor
    temporal_patch: int = 2  # frames per temporal patch (the processors' temporal_patch_size)
    mel_bins: int = 128
    generator: bool = False  # an image generator: every prompt carries the grids of the images to generate
    # how many placeholders an item gets: "formula" (grid cells / merge², as processors compute) or "features"
    # (the rows the model's own encoder returns: hunyuan's row breaks, ernie's temporal merge); audio: features
    count_rule: dict[str, str] = field(default_factory=dict)
    counts: dict[tuple[str, tuple[int, ...], str], int] = field(default_factory=dict)  # cache


def _gen(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed)


def _text(g: Any, n: int) -> list[int]:
    import torch

    return torch.randint(1, SPARE_IDS, (n,), generator=g).tolist()


@dataclass
class _Row:
    ids: list[int] = field(default_factory=list)
    types: list[int] = field(default_factory=list)  # mm_token_type_ids: placeholders only
    moe_types: list[int] = field(default_factory=list)  # moe_mm_token_type_ids: placeholders and their wrappers

    def add(self, ids: list[int], kind: str = "", wrapper: bool = False) -> None:
        t = TYPE_IDS.get(kind, 0)
        self.ids += ids
        self.types += [0 if wrapper else t] * len(ids)
        self.moe_types += [t] * len(ids)


def _wrapped(row: _Row, tiny: Any, kind: str, n: int) -> None:
    s = tiny.specials
    row.add([s[f"{kind}_start"]], kind, wrapper=True)
    row.add([s[kind]] * n, kind)
    row.add([s[f"{kind}_end"]], kind, wrapper=True)


def _video_tokens(row: _Row, tiny: Any, g: Any, grid: tuple[int, int, int], layout: str) -> None:
    t = grid[0]
    total = count(tiny, "video", grid)
    per_frame = total // t
    s = tiny.specials
    if layout == "block":
        _wrapped(row, tiny, "video", total)
    elif layout == "per-frame":  # a timestamp ("<0.5 seconds>") in text before each frame's block
        for _ in range(t):
            row.add(_text(g, 2))
            _wrapped(row, tiny, "video", per_frame)
    elif layout == "frames-as-images":  # each frame an image block with its timestamp, inside the video wrappers
        row.add([s["video_start"]], "video", wrapper=True)
        for _ in range(t):
            row.add([s["image_start"]], "video", wrapper=True)
            row.add([s["image"]] * per_frame, "video")
            row.add([s["image_end"]], "video", wrapper=True)
            row.add(_text(g, 1))
        row.add([s["video_end"]], "video", wrapper=True)
    else:
        raise ValueError(f"unknown video layout {layout!r}")


def count(tiny: Any, kind: str, grid: tuple[int, ...]) -> int:
    """Placeholder tokens for one image, video or audio clip of ``grid``: the rows the model's encoder yields."""
    rule = "features" if kind == "audio" else tiny.io.count_rule.get(kind, "formula")
    key = (kind, tuple(grid), rule)
    if key not in tiny.io.counts:
        if rule == "formula":
            t, h, w = grid
            tiny.io.counts[key] = t * h * w // tiny.merge**2
        else:
            tiny.io.counts[key] = tiny.count_features(kind, tuple(grid))
        if tiny.io.counts[key] <= 0:  # a grid below the encoder's merge step: no prompt is made of it
            raise ValueError(f"a {kind} of grid {grid} gives no placeholders (grid below the merge step)")
    return tiny.io.counts[key]


def _pixels(tiny: Any, g: Any, grids: list[tuple[int, int, int]]) -> Any:
    import torch

    io = tiny.io
    n = sum(t * h * w for t, h, w in grids)
    if io.pixel_format == "flat":
        return torch.randn(n, io.patch_dim, generator=g)
    if io.pixel_format == "patches":
        return torch.randn(n, io.channels, io.patch, io.patch, generator=g)
    if io.pixel_format == "navit":
        return torch.randn(1, io.channels, io.patch, n * io.patch, generator=g)
    raise ValueError(f"unknown pixel format {io.pixel_format!r}")


def _grid_tensor(tiny: Any, grids: list[tuple[int, int, int]]) -> Any:
    import torch

    if tiny.io.pixel_format == "navit":  # (h, w) per image or video frame
        return torch.tensor([[h, w] for t, h, w in grids for _ in range(t)], dtype=torch.long)
    return torch.tensor([list(gr) for gr in grids], dtype=torch.long)


def _grid_keys(tiny: Any) -> dict[str, str]:
    params = tiny.io.params
    image = "target_sizes" if "target_sizes" in params and "image_grid_thw" not in params else "image_grid_thw"
    video = "target_sizes_videos" if "target_sizes_videos" in params else "video_grid_thw"
    return {"image": image, "video": video}


def audio_lengths(p: Prompt) -> list[int]:
    """Mel frames per row: the last row has ``p.audio_frames``, each earlier one 8 fewer (at least 16)."""
    return [max(16, p.audio_frames - 8 * (p.batch - 1 - i)) for i in range(p.batch)]


def inputs(tiny: Any, p: Prompt) -> dict[str, Any]:
    """Tensors for one batch of prompts, as the family's processor returns them (see the module doc)."""
    import torch

    if p.kind not in KINDS:
        raise ValueError(f"unknown prompt kind {p.kind!r}; kinds are {', '.join(KINDS)}")
    if p.kind not in tiny.kinds:
        why = "; ".join(n for n in tiny.notes if n.startswith(p.kind.split("+")[-1])) or "not probed"
        raise RopefixError(f"{tiny.family}: {p.kind} prompts are not supported by this build ({why}).")
    g = _gen(p.seed)
    parts = p.kind.split("+")
    t, h, w = p.grid
    rows: list[_Row] = []
    images: list[tuple[int, int, int]] = []
    videos: list[tuple[int, int, int]] = []
    clips = audio_lengths(p) if "audio" in parts else []
    # image generators (glm_image) take every image grid of a row, sources then the targets to generate,
    # with a per-row count; the prompt ends with the image-start marker generation continues from
    generator = tiny.io.generator
    grids: list[tuple[int, int, int]] = []
    for i in range(p.batch):
        row = _Row()
        text = _text(g, p.length)
        cut = max(1, p.length // 2)
        row.add(text[:cut])
        row_images = [(1, h, w)] if "image" in parts else []
        if "image" in parts:
            images.append((1, h, w))
            _wrapped(row, tiny, "image", count(tiny, "image", (1, h, w)))
        if "video" in parts:  # a model merging frames in time gets a multiple of its merge, as processors pad
            vt = t * tiny.frames
            videos.append((vt, h, w))
            _video_tokens(row, tiny, g, (vt, h, w), tiny.io.video_layout or "block")
        if "audio" in parts:
            _wrapped(row, tiny, "audio", count(tiny, "audio", (clips[i],)))
        row.add(text[cut:])
        if generator:
            grids += row_images + ([(1, h, w)] if row_images else [(1, 2 * h, 2 * w), (1, h, w)])
            row.add([tiny.specials["image_start"]])
        rows.append(row)
    # every row but the last is padded by p.pad; the last gets p.pad more real tokens instead
    rows[-1].add(_text(g, p.pad))
    out = _pad(rows, p)
    keys = _grid_keys(tiny)
    if images:
        out["pixel_values"] = _pixels(tiny, g, images)
        out[keys["image"]] = _grid_tensor(tiny, images)
    if generator:
        out[keys["image"]] = _grid_tensor(tiny, grids)
        if "images_per_sample" in tiny.io.params:
            out["images_per_sample"] = torch.tensor([len(grids) // p.batch] * p.batch)
    if videos:
        out["pixel_values_videos"] = _pixels(tiny, g, videos)
        out[keys["video"]] = _grid_tensor(tiny, videos)
        if tiny.io.timing_key:  # seconds per temporal grid, one float per video (processor: temporal_patch / fps)
            timing = [tiny.io.temporal_patch / p.fps] * len(videos)
            out[tiny.io.timing_key] = timing if tiny.io.timing_list else torch.tensor(timing)
    if clips:
        width = max(clips)
        feats = torch.zeros(len(clips), tiny.io.mel_bins, width)
        mask = torch.zeros(len(clips), width, dtype=torch.long)
        for i, n in enumerate(clips):  # the feature extractor pads every clip to the longest with zeros
            feats[i, :, :n] = torch.randn(tiny.io.mel_bins, n, generator=g)
            mask[i, :n] = 1
        out["input_features"] = feats
        out["feature_attention_mask"] = mask
    if "mm_token_type_ids" not in tiny.io.params:
        out.pop("mm_token_type_ids")
    if "moe_mm_token_type_ids" not in tiny.io.params:
        out.pop("moe_mm_token_type_ids")
    return out


def _pad(rows: list[_Row], p: Prompt) -> dict[str, Any]:
    import torch

    width = max(len(r.ids) for r in rows)
    shape = (len(rows), width)
    ids = torch.full(shape, PAD_ID, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    types = torch.zeros(shape, dtype=torch.long)
    moe = torch.zeros(shape, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.ids)
        begin = width - n if p.padding_side == "left" else 0
        ids[i, begin : begin + n] = torch.tensor(r.ids)
        mask[i, begin : begin + n] = 1
        types[i, begin : begin + n] = torch.tensor(r.types)
        moe[i, begin : begin + n] = torch.tensor(r.moe_types)
    return {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": types, "moe_mm_token_type_ids": moe}


def batch_to(inputs: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """What ``BatchFeature.to(...)`` does to a processor output, on a plain dict (a new dict; values not copied).

    Floating tensors get ``.to(*args, **kwargs)`` (device and/or dtype); other tensors (ids, masks,
    grids) move only when a device is given, never cast; lists and tuples are walked; anything else
    is kept. A device given as the first argument (a string, ``torch.device`` or int) or ``device=``.
    """
    import torch

    device = kwargs.get("device")
    non_blocking = kwargs.get("non_blocking", False)
    if device is None and args:
        first = args[0]
        if isinstance(first, torch.dtype):
            pass
        elif isinstance(first, (str, int, torch.device)):
            device = first
        else:
            raise ValueError(f"Attempting to cast a batch to type {first!s}. This is not supported.")

    def move(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and torch.is_floating_point(v):
            return v.to(*args, **kwargs)
        if isinstance(v, torch.Tensor) and device is not None:
            return v.to(device=device, non_blocking=non_blocking)
        if isinstance(v, (list, tuple)):
            return type(v)(move(x) for x in v)
        return v

    return {k: move(v) for k, v in inputs.items()}
