"""Which of the marks on a photographed page is the digit: the detect half of the photo path's
detect-then-refine (`digitnet.data.ink.find_ink`).

A page photo holds more than the digit: printed or hand-drawn lines, rows of small print, clusters
of specks, the table or the page's edge along a side. The ink mask is labelled on a grid of at
most DETECT_SIDE px (scipy.ndimage), its blobs are grouped with their near neighbours (the pieces
of a broken stroke, the letters of a word), and each group is judged by its shape:

    edge     it lies along a side of the photo, spanning most of it (a table, the page's edge)
    line     long and thin, and not upright (a digit's long stroke, a 1, is upright)
    print    many small pieces side by side, none holding much of the ink (a row of small print,
             a cluster of specks), or pieces one above another, each far shorter than the group
             (a block of rows of print)
    wide     far wider than tall (a word, a row of marks; digits are upright or square)

The heaviest group that is none of these is the digit; when every group is one of them, the
heaviest group is taken all the same. Its box is then worked again at full resolution
(`ink.py`), where a group whose strokes come out hairlines for its size (print, marks crossing)
is judged `fine` and the next one is tried. Lines across the whole page are left out before
(`line_pixels`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from skimage.transform import hough_line, hough_line_peaks

from digitnet.data.imageops import block_reduce, bounding_box, label_components, repeat_blocks
from digitnet.data.imagestats import robust_stats

DETECT_SIDE = 512  # px; blobs are found on a grid this size (thin strokes survive max pooling)
DETECT_SNR = 4.0  # a cell whose mean stands out this much from the page's is a mark
MAX_BLOBS = 300  # the heaviest blobs taken into account (noise makes thousands of one-cell ones)
MIN_BLOB_SHARE = 0.002  # ... of the heaviest blob's ink, at least: lighter ones are noise
JOIN_REACH = 0.25  # blobs this close (of their mean size) are one mark: a stroke's pieces
EDGE_SPAN = 0.6  # a band touching a side and spanning this much of it is the table or page edge
EDGE_DEPTH = 0.25  # ... when it reaches no further in than this
LINE_ELONGATION = 10.0  # length over width beyond which a tilted group is a line...
UPRIGHT = 45.0  # ... more than this from vertical (closer, it may be a 1)
LINE_MAX_ELONGATION = 25.0  # beyond this a group is a line whatever its direction
PRINT_PIECES = 6  # a group of at least this many pieces ...
PRINT_MAX_SHARE = 0.35  # ... none holding this much of its ink ...
PRINT_MAX_PIECE = 0.35  # ... nor this long, of the group's size, is print or specks (a digit cut
#                          by squared paper's lines has longer pieces)
PRINT_ROWS = 3  # ... and so is a group of at least this many pieces ...
PRINT_ROW_HEIGHT = 0.3  # ... none taller than this share of the group (rows of print one above
#                         another; each of a digit's strokes spans more of its height)
FRAME_WEIGHT = 0.2  # a group touching the frame counts this much
MAX_WIDTH_RATIO = 1.8  # width over height beyond which a group is not a digit
LINE_SIDE = 512  # px; straight lines across the page are looked for on a copy this size
LINE_MIN_SPAN = 0.7  # a line runs across at least this share of the image (a digit does not)
LINE_MAX_TILT = 10  # degrees from horizontal or vertical
_LINE_ANGLES = np.deg2rad(np.arange(-LINE_MAX_TILT, LINE_MAX_TILT + 0.25, 0.5))
PICKED, REJECTED = "digit", ("edge", "line", "print", "wide", "fine")


class Group(NamedTuple):
    """One mark on the page, on the detection grid."""

    box: tuple[int, int, int, int]  # top, bottom, left, right (exclusive), in full-size px
    mass: float  # ink it holds
    verdict: str  # PICKED, one of REJECTED, or "" (not a digit, not rejected: lighter)
    members: np.ndarray  # its blob labels on the detection grid
    size: int  # cells: the longer side of its box on the detection grid
    weight: float  # how much it counts as the digit: see `find_digit`


class Detection(NamedTuple):
    """The digit's group, every group's verdict and the grid they were found on."""

    picked: Group | None
    groups: list[Group]
    labels: np.ndarray  # int (h, w): blob labels on the detection grid
    factor: int  # full-size px per detection-grid cell
    forced: bool = False  # every group was rejected: the heaviest was picked all the same


def detect_factor(shape: tuple[int, int]) -> int:
    return max(1, math.ceil(max(shape) / DETECT_SIDE))


def _join(boxes: np.ndarray) -> np.ndarray:
    """Group labels (0..n-1) of blobs joined when their boxes are within JOIN_REACH of the
    geometric mean of their sizes (single linkage: scipy's connected components of the graph),
    so that a large mark does not swallow a small digit beside it."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    top, bottom, left, right = boxes.T
    size = np.maximum(bottom - top, right - left).astype(np.float32)
    gap = np.maximum.reduce([top[:, None] - bottom[None, :], top[None, :] - bottom[:, None],
                             left[:, None] - right[None, :], left[None, :] - right[:, None]])
    near = gap <= JOIN_REACH * np.sqrt(size[:, None] * size[None, :])
    i, j = np.nonzero(near)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=near.shape)
    return connected_components(graph, directed=False)[1]


def line_pixels(mask: np.ndarray) -> np.ndarray:
    """The pixels of `mask` on straight lines that run across most of the image, within
    LINE_MAX_TILT of horizontal or vertical: ruled and squared paper, a form's frame, a table
    edge. Found by a Hough transform (scikit-image) on a copy at most LINE_SIDE px a side.

    Returns:
        bool (H, W).
    """
    factor = max(1, math.ceil(max(mask.shape) / LINE_SIDE))
    small = block_reduce(mask, factor, np.max, pad_mode="constant")
    lines = np.zeros(small.shape, dtype=bool)
    # vertical lines, then horizontal ones as vertical lines of the transpose
    for turned in (False, True):
        m = small.T if turned else small
        h = m.shape[0]
        if h < 16 or not m.any():
            continue
        hspace, angles, dists = hough_line(m, theta=_LINE_ANGLES)
        _, found_angles, found_dists = hough_line_peaks(
            hspace, angles, dists, min_distance=3, min_angle=len(_LINE_ANGLES),
            threshold=LINE_MIN_SPAN * h)
        if not len(found_angles):
            continue
        rows, cols = np.indices(m.shape, dtype=np.float32)
        out = lines.T if turned else lines
        for angle, dist in zip(found_angles, found_dists, strict=True):
            distance = np.abs(cols * math.cos(angle) + rows * math.sin(angle) - dist)
            width = np.count_nonzero(m & (distance <= 4)) / h  # the line's thickness, px
            out |= m & (distance <= width / 2 + 1.5)
    return repeat_blocks(lines, factor, mask.shape) & mask


def _moments(labels: np.ndarray, weights: np.ndarray, count: int) -> np.ndarray:
    """Raw moments (sum w, w r, w c, w r^2, w c^2, w r c) of each label's cells, (count, 6):
    a group's are the sums of its blobs'.

    Only the labelled cells are visited (a few percent of the grid): each label's sums add the
    same products in the same order as over the whole grid."""
    flat = labels.ravel()
    cells = np.flatnonzero(flat)
    rows, cols = (v.astype(np.float64) for v in np.divmod(cells, labels.shape[1]))
    keys, w = flat[cells], weights.ravel()[cells].astype(np.float64)
    return np.stack([np.bincount(keys, weights=w * f, minlength=count + 1)[1:]
                     for f in (np.ones_like(rows), rows, cols, rows * rows, cols * cols,
                               rows * cols)], axis=1)


def _is_line(m: np.ndarray) -> bool:
    """Whether moments (6,) are those of a line: long and thin, and not upright unless very."""
    total = max(m[0], 1e-9)
    mr, mc = m[1] / total, m[2] / total
    cov = np.array([[m[3] / total - mr * mr, m[5] / total - mr * mc],
                    [m[5] / total - mr * mc, m[4] / total - mc * mc]]) + np.eye(2) / 12.0
    evals, evecs = np.linalg.eigh(cov)
    elongation = math.sqrt(max(evals[1], 1e-9) / max(evals[0], 1e-9))
    tilt = math.degrees(math.atan2(abs(evecs[1, 1]), abs(evecs[0, 1])))  # 0: vertical
    return elongation > LINE_MAX_ELONGATION or (elongation > LINE_ELONGATION and tilt > UPRIGHT)


def _on_edge(box, grid: tuple[int, int]) -> bool:
    """Whether a box is a band along a side of the grid, spanning most of it."""
    top, bottom, left, right = box
    rows, cols = grid
    h, w = bottom - top, right - left
    return ((top == 0 or bottom == rows) and w >= EDGE_SPAN * cols and h <= EDGE_DEPTH * rows) or (
        (left == 0 or right == cols) and h >= EDGE_SPAN * rows and w <= EDGE_DEPTH * cols)


def _touches_frame(box, grid: tuple[int, int]) -> bool:
    top, bottom, left, right = box
    return top == 0 or left == 0 or bottom == grid[0] or right == grid[1]


def ink_mass(ink: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """The ink off the lines, summed over each cell of the detection grid (`find_digit`'s
    weights: a caller that looks at the marks twice computes it once)."""
    return block_reduce(ink * ~lines, detect_factor(ink.shape), np.sum, pad_mode="constant")


def find_digit(residual: np.ndarray, mask: np.ndarray, ink: np.ndarray, lines: np.ndarray,
               faint: bool = False, mass: np.ndarray | None = None) -> Detection:
    """Group the marks on the page and pick the digit's.

    The marks are the ink of `mask` (bool (H, W)) and, with `faint` (so that a faint digit
    among darker marks is seen too), the cells of the detection grid whose mean `residual`
    stands DETECT_SNR noise standard deviations above the page's; `lines` are left out. Blobs
    that are lines or lie along an edge are judged alone, before they could join other marks;
    the rest are grouped.
    A group's weight is the `ink` it holds times the square root of its size (a digit outweighs
    a speck even when its ink is fainter), cut to FRAME_WEIGHT when it touches the frame (a
    digit photographed on a page lies inside the photo).
    """
    factor = detect_factor(mask.shape)
    grid = block_reduce(mask & ~lines, factor, np.max, pad_mode="constant")
    if faint:
        mean = block_reduce(residual, factor, np.sum) / (factor * factor)
        level, noise = robust_stats(mean)
        on_lines = block_reduce(lines, factor, np.max, pad_mode="constant")
        grid |= (mean > level + DETECT_SNR * max(noise, 1e-4)) & ~on_lines
    mass = ink_mass(ink, lines) if mass is None else mass
    labels, count = label_components(grid)
    if count == 0:
        return Detection(None, [], labels, factor)
    moments = _moments(labels, mass, count)
    blob_mass = moments[:, 0]
    order = np.argsort(-blob_mass, kind="stable")[:MAX_BLOBS]
    order = order[blob_mass[order] >= MIN_BLOB_SHARE * blob_mass[order[0]]]
    slices = ndimage.find_objects(labels)
    boxes = np.array([(slices[k][0].start, slices[k][0].stop, slices[k][1].start,
                       slices[k][1].stop) for k in order]).reshape(-1, 4)
    groups = []

    def add(members: np.ndarray, box, verdict: str) -> None:
        top, bottom, left, right = (int(v) for v in box)
        full = (top * factor, min(bottom * factor, mask.shape[0]), left * factor,
                min(right * factor, mask.shape[1]))
        size = max(bottom - top, right - left)
        weight = float(moments[members, 0].sum()) * math.sqrt(size)
        if _touches_frame(box, grid.shape):
            weight *= FRAME_WEIGHT
        groups.append(Group(full, float(moments[members, 0].sum()), verdict, members + 1, size,
                            weight))

    alone = np.zeros(len(order), dtype=bool)
    for n, k in enumerate(order):
        verdict = "edge" if _on_edge(boxes[n], grid.shape) else (
            "line" if _is_line(moments[k]) else "")
        if verdict:
            alone[n] = True
            add(order[n:n + 1], boxes[n], verdict)
    rest = np.flatnonzero(~alone)
    joined = np.arange(len(rest))
    while len(rest):  # groups grow, and so does their reach: until none joins another
        b = boxes[rest]
        grouped = np.array([(b[joined == g, 0].min(), b[joined == g, 1].max(),
                             b[joined == g, 2].min(), b[joined == g, 3].max())
                            for g in range(joined.max() + 1)])
        merged = _join(grouped)
        if merged.max() == joined.max():
            break
        joined = merged[joined]
    for g in range(joined.max() + 1 if len(rest) else 0):
        picks = rest[joined == g]
        members, b = order[picks], boxes[picks]
        box = (b[:, 0].min(), b[:, 1].max(), b[:, 2].min(), b[:, 3].max())
        h, w = box[1] - box[0], box[3] - box[2]
        piece_mass = moments[members, 0]
        verdict = ""
        if _on_edge(box, grid.shape):
            verdict = "edge"
        elif (len(members) >= PRINT_PIECES and piece_mass.max() < PRINT_MAX_SHARE * piece_mass.sum()
              and (b[:, 1::2] - b[:, ::2]).max() < PRINT_MAX_PIECE * max(h, w)) or (
                len(members) >= PRINT_ROWS and (b[:, 1] - b[:, 0]).max() < PRINT_ROW_HEIGHT * h):
            verdict = "print"
        elif w > MAX_WIDTH_RATIO * max(h, 1):
            verdict = "wide"
        elif _is_line(moments[members].sum(0)):
            verdict = "line"
        add(members, box, verdict)
    groups.sort(key=lambda g: -g.weight)
    kept = [g for g in groups if not g.verdict]
    forced = not kept
    kept = kept or groups[:1]
    picked = kept[0]._replace(verdict=PICKED)
    groups = [picked if g is kept[0] else g for g in groups]
    return Detection(picked, groups, labels, factor, forced)


def stroke_share(mask: np.ndarray) -> float:
    """Typical stroke width (area over half the boundary length) over the ink's longer side."""
    box = bounding_box(mask)
    if box is None:
        return 0.0
    top, bottom, left, right = box
    m = np.pad(mask[top:bottom, left:right], 1)
    edges = np.count_nonzero(m[1:] != m[:-1]) + np.count_nonzero(m[:, 1:] != m[:, :-1])
    return 2.0 * np.count_nonzero(m) / max(edges, 1) / max(bottom - top, right - left)


def picture(detection: Detection) -> np.ndarray:
    """The decision as a uint8 picture at the detection grid: the digit's group white, rejected
    groups dark grey, lighter groups and left-out blobs mid grey (the `candidates` debug stage)."""
    shades = np.zeros(int(detection.labels.max()) + 1, dtype=np.uint8)
    shades[1:] = 60
    for g in detection.groups:
        shades[g.members] = 255 if g.verdict == PICKED else 110 if g.verdict else 160
    return shades[detection.labels]
