"""Qualitative comparison figures (PNG, non-interactive).

Importing this module switches matplotlib to the non-interactive ``Agg``
backend: figures are only ever written to files, never shown.

* :func:`comparison_figure` — one 2-D slice: optional measurement panel
  (sampling mask, sinogram, ...), every method and the ground truth, each with a
  zoom inset and PSNR/SSIM, above their absolute error maps on one colour scale.
* :func:`ct_views_figure` — a CT volume in axial / coronal / sagittal middle
  slices, each with a zoom inset, error maps and per-view metrics.
* :func:`uncertainty_figure` — posterior samples of one slice: ground truth,
  posterior mean, pixel-wise standard deviation and absolute error.
* :func:`save_preview` — a single image, used by the command line.
* :func:`loss_curve_figure` — the training loss of a trained model against the optimiser step,
  read from its checkpoint's sidecar JSON (``loss_history``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from diffrecon.errors import DataFormatError  # noqa: E402

__all__ = ["comparison_figure", "ct_views_figure", "uncertainty_figure", "save_preview", "loss_curve_figure"]

DPI = 300                    # PNG resolution (a vector PDF is written beside every PNG)
IMAGE_CMAP = "gray"
ERROR_CMAP = "inferno"
ZOOM_COLOR = "#ffd21f"
INSET_FRACTION = 0.37  # side of the zoom inset, as a fraction of the panel

# views of a (D, H, W) volume: name -> function returning its middle slice
_CT_VIEWS = {
    "axial": lambda v: v[v.shape[0] // 2],
    "coronal": lambda v: v[:, v.shape[1] // 2, :],
    "sagittal": lambda v: v[:, :, v.shape[2] // 2],
}


# --------------------------------------------------------------------------- helpers


def _real_array(a, name: str, ndim: int) -> np.ndarray:
    arr = np.asarray(a)
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} is complex; pass magnitude images")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def _check_recons(target: np.ndarray, recons: Mapping, ndim: int) -> dict[str, np.ndarray]:
    if not recons:
        raise ValueError("recons must name at least one reconstruction")
    out = {}
    for name, rec in recons.items():
        arr = _real_array(rec, f"reconstruction {name!r}", ndim)
        if arr.shape != target.shape:
            raise ValueError(
                f"reconstruction {name!r} has shape {arr.shape}, target has {target.shape}"
            )
        out[str(name)] = arr
    return out


def _window(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _error_max(errors) -> float:
    vmax = 0.0
    for err in errors:
        finite = err[np.isfinite(err)]
        if finite.size:
            vmax = max(vmax, float(finite.max()))
    return vmax if vmax > 0 else 1.0


def _zoom_box(shape: tuple[int, int], zoom) -> tuple[int, int, int]:
    """``(row0, col0, size)`` of the square zoom region; default: centred, side = min(H, W) // 4."""
    rows, cols = shape
    if zoom is None:
        size = max(min(rows, cols) // 4, 1)
        return (rows - size) // 2, (cols - size) // 2, size
    row0, col0, size = (int(v) for v in zoom)
    if size < 1 or row0 < 0 or col0 < 0 or row0 + size > rows or col0 + size > cols:
        raise ValueError(f"zoom {tuple(zoom)} does not fit an image of shape {shape}")
    return row0, col0, size


def _inset_corner(shape: tuple[int, int], box: tuple[int, int, int]) -> tuple[bool, bool]:
    """``(top, right)`` of the panel corner farthest from the zoom region."""
    rows, cols = shape
    row0, col0, size = box
    return (row0 + size / 2) > rows / 2, (col0 + size / 2) < cols / 2


def _add_zoom(ax, image, box, vmin, vmax, corner) -> None:
    row0, col0, size = box
    ax.add_patch(
        Rectangle((col0 - 0.5, row0 - 0.5), size, size, fill=False, edgecolor=ZOOM_COLOR, linewidth=1.0)
    )
    top, right = corner
    f = INSET_FRACTION
    inset = ax.inset_axes([1 - f if right else 0.0, 1 - f if top else 0.0, f, f])
    inset.imshow(
        image[row0 : row0 + size, col0 : col0 + size],
        cmap=IMAGE_CMAP,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    inset.set_xticks([])
    inset.set_yticks([])
    for spine in inset.spines.values():
        spine.set_edgecolor(ZOOM_COLOR)
        spine.set_linewidth(1.2)


def _metric_text(metrics: Mapping | None) -> str | None:
    if not metrics:
        return None
    parts = []
    if metrics.get("psnr") is not None:
        parts.append(f"PSNR {float(metrics['psnr']):.2f} dB")
    if metrics.get("ssim") is not None:
        parts.append(f"SSIM {float(metrics['ssim']):.3f}")
    return "\n".join(parts) or None


def _put_text(ax, text: str | None, right: bool = False) -> None:
    if not text:
        return
    ax.text(
        0.98 if right else 0.02,
        0.98,
        text,
        transform=ax.transAxes,
        ha="right" if right else "left",
        va="top",
        fontsize=7,
        color="white",
        bbox=dict(boxstyle="round,pad=0.2", facecolor="black", alpha=0.6, linewidth=0),
    )


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig, out_path) -> Path:
    """``out_path`` (PNG, :data:`DPI`) and the same figure as vector PDF beside it (``.pdf``)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=DPI, format="png")
        fig.savefig(pdf_path(out), format="pdf")
    finally:
        plt.close(fig)
    return out


def pdf_path(png_path) -> Path:
    """The vector PDF written beside a figure's PNG."""
    return Path(png_path).with_suffix(".pdf")


def _window_text(vmin: float, vmax: float) -> str:
    return f"display window [{vmin:.2f}, {vmax:.2f}] (target scale)"


def _aspect(shape) -> str:
    ratio = shape[0] / max(shape[1], 1)
    return "equal" if 1 / 3 <= ratio <= 3 else "auto"


# --------------------------------------------------------------------------- figures


def comparison_figure(
    target,
    recons: Mapping,
    out_path,
    measurement=None,
    measurement_label: str = "mask",
    metrics: Mapping | None = None,
    zoom=None,
    title: str | None = None,
) -> Path:
    """Side-by-side comparison of reconstructions of one 2-D image.

    Parameters
    ----------
    target:
        ground truth, real ``(H, W)``.
    recons:
        ordered mapping ``method name -> (H, W)`` reconstruction (panel order).
    out_path:
        PNG file to write (parent directories are created).
    measurement:
        optional 2-D array shown first (sampling mask, sinogram, ...); a complex
        array (k-space) is shown as ``log(1 + |y|)``.
    measurement_label:
        title of the measurement panel.
    metrics:
        optional ``method name -> {"psnr": .., "ssim": ..}`` printed on panels.
    zoom:
        ``(row0, col0, size)`` of the square region magnified in every image
        panel; default: a centred square of side ``min(H, W) // 4``.
    title:
        optional figure title.

    Layout: the top row holds [measurement] + methods + ground truth, all in
    the target's grey window, each with the zoom region outlined and magnified
    in an inset placed in the corner farthest from it.  The bottom row holds
    ``|recon - target|`` under each method, on one shared colour scale with a
    colour bar.  Returns the written path.
    """
    gt = _real_array(target, "target", 2)
    recs = _check_recons(gt, recons, 2)
    metrics = metrics or {}
    box = _zoom_box(gt.shape, zoom)
    corner = _inset_corner(gt.shape, box)
    vmin, vmax = _window(gt)
    errors = {name: np.abs(rec - gt) for name, rec in recs.items()}
    emax = _error_max(errors.values())

    meas = None
    if measurement is not None:
        meas = np.asarray(measurement)
        if meas.ndim != 2:
            raise ValueError(f"measurement must be 2-D, got shape {meas.shape}")
        meas = np.log1p(np.abs(meas)) if np.iscomplexobj(meas) else meas.astype(np.float64)

    offset = 1 if measurement is not None else 0
    ncols = offset + len(recs) + 1
    fig = plt.figure(figsize=(2.4 * ncols + 0.8, 5.0 + (0.3 if title else 0.0)), layout="constrained")
    grid = fig.add_gridspec(2, ncols + 1, width_ratios=[1.0] * ncols + [0.07])
    axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(ncols)] for r in range(2)])
    cax = fig.add_subplot(grid[1, ncols])
    for ax in axes.ravel():
        _bare(ax)

    if measurement is not None:
        ax = axes[0, 0]
        ax.imshow(meas, cmap=IMAGE_CMAP, aspect=_aspect(meas.shape), interpolation="nearest")
        ax.set_title(measurement_label, fontsize=9)
        axes[1, 0].axis("off")

    panels = list(recs.items()) + [("Ground truth", gt)]
    error_image = None
    for j, (name, image) in enumerate(panels):
        ax = axes[0, offset + j]
        ax.imshow(image, cmap=IMAGE_CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        _add_zoom(ax, image, box, vmin, vmax, corner)
        top, right = corner
        _put_text(ax, _metric_text(metrics.get(name)), right=top and not right)
        err_ax = axes[1, offset + j]
        if name in errors and j < len(recs):
            error_image = err_ax.imshow(errors[name], cmap=ERROR_CMAP, vmin=0.0, vmax=emax, interpolation="nearest")
        else:
            err_ax.axis("off")
    axes[1, offset].set_ylabel("|recon − target|", fontsize=8)
    axes[0, offset].set_ylabel(_window_text(vmin, vmax), fontsize=7)
    fig.colorbar(error_image, cax=cax, label="absolute error")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, out_path)


def ct_views_figure(
    target_vol,
    recons: Mapping,
    out_path,
    metrics_by_view: Mapping | None = None,
    zoom: Mapping | None = None,
    title: str | None = None,
) -> Path:
    """Axial, coronal and sagittal middle slices of CT volumes, with zoom insets and error maps.

    Parameters
    ----------
    target_vol:
        ground-truth volume ``(D, H, W)``: axial slices along axis 0, coronal
        along axis 1, sagittal along axis 2.
    recons:
        ordered mapping ``method name -> (D, H, W)`` volume.
    out_path:
        PNG file to write.
    metrics_by_view:
        optional ``method name -> {view -> {"psnr": .., "ssim": ..}}`` (the
        output of :func:`diffrecon.metrics.ct_view_metrics` per method),
        printed on the matching panels.
    zoom:
        optional ``view -> (row0, col0, size)`` of the square region magnified in
        that view's image panels; default (and for views not named): a centred
        square of side ``min(rows, cols) // 4`` of the view's slice.
    title:
        optional figure title.

    Layout: for each view an image row (methods + ground truth, grey window of
    the target volume, the zoom region outlined and magnified in an inset in
    the corner farthest from it) followed by an error row ``|recon - target|``;
    all error maps share one colour scale and colour bar.  Returns the written path.
    """
    gt = _real_array(target_vol, "target_vol", 3)
    recs = _check_recons(gt, recons, 3)
    metrics_by_view = metrics_by_view or {}
    zoom = dict(zoom or {})
    unknown = set(zoom) - set(_CT_VIEWS)
    if unknown:
        raise ValueError(f"zoom names unknown views {sorted(unknown)}; views are {', '.join(_CT_VIEWS)}")
    boxes = {view: _zoom_box(take(gt).shape, zoom.get(view)) for view, take in _CT_VIEWS.items()}
    vmin, vmax = _window(gt)

    ncols = len(recs) + 1
    nrows = 2 * len(_CT_VIEWS)
    # each row as tall as its images (coronal / sagittal slices of a short volume are flat): no gaps
    ratios = []
    for take in _CT_VIEWS.values():
        h, w = take(gt).shape
        r = h / w if _aspect((h, w)) == "equal" else 1.0
        ratios += [r, r]
    width = 2.3 * ncols + 0.6
    panel = (width - 0.6) / ncols
    fig = plt.figure(figsize=(width, panel * sum(ratios) * 1.12 + 0.5 + (0.3 if title else 0.0)),
                     layout="constrained")
    grid = fig.add_gridspec(nrows, ncols, height_ratios=ratios)
    axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(ncols)] for r in range(nrows)])
    for ax in axes.ravel():
        _bare(ax)

    panels = list(recs.items()) + [("Ground truth", gt)]
    for i, (view, take) in enumerate(_CT_VIEWS.items()):
        img_row, err_row = axes[2 * i], axes[2 * i + 1]
        gt_slice = take(gt)
        aspect = _aspect(gt_slice.shape)
        box = boxes[view]
        corner = _inset_corner(gt_slice.shape, box)
        emax = _error_max(np.abs(take(rec) - gt_slice) for rec in recs.values())     # one scale per row
        error_image = None
        for j, (name, vol) in enumerate(panels):
            sl = take(vol)
            ax = img_row[j]
            ax.imshow(sl, cmap=IMAGE_CMAP, vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
            if i == 0:
                ax.set_title(name, fontsize=9)
            _add_zoom(ax, sl, box, vmin, vmax, corner)
            top, right = corner
            _put_text(ax, _metric_text((metrics_by_view.get(name) or {}).get(view)), right=top and not right)
            if j < len(recs):
                error_image = err_row[j].imshow(
                    np.abs(sl - gt_slice), cmap=ERROR_CMAP, vmin=0.0, vmax=emax, aspect=aspect,
                    interpolation="nearest",
                )
        # the error row's colour bar in the free cell under the ground truth
        err_row[-1].axis("off")
        cax = err_row[-1].inset_axes([0.05, 0.35, 0.9, 0.18])
        fig.colorbar(error_image, cax=cax, orientation="horizontal")
        cax.tick_params(labelsize=6)
        cax.set_title("|recon − target|", fontsize=7)
        img_row[0].set_ylabel(view, fontsize=9)
        err_row[0].set_ylabel(f"{view} |error|", fontsize=8)
    lead = f"{title} · " if title else ""
    fig.suptitle(f"{lead}{_window_text(vmin, vmax)}; error maps: one colour scale per row", fontsize=10)
    return save_figure(fig, out_path)


def uncertainty_figure(target, mean, std, out_path, n_samples: int | None = None, title: str | None = None) -> Path:
    """Ground truth | posterior mean | pixel-wise std | |mean − target| for one 2-D slice.

    The std and error panels share one colour scale, so regions where the sampler is
    uncertain can be compared with where it is wrong. Returns the written path.
    """
    target, mean, std = (np.asarray(a, dtype=np.float64) for a in (target, mean, std))
    if not target.shape == mean.shape == std.shape or target.ndim != 2:
        raise ValueError(f"uncertainty_figure expects three equal 2-D arrays, got {target.shape}, {mean.shape}, {std.shape}")
    err = np.abs(mean - target)
    vmin, vmax = _window(target)
    emax = _error_max([err, std])
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), layout="constrained")
    panels = [("ground truth", target, IMAGE_CMAP, vmin, vmax),
              ("posterior mean", mean, IMAGE_CMAP, vmin, vmax),
              (f"std over {n_samples} samples" if n_samples else "posterior std", std, ERROR_CMAP, 0.0, emax),
              ("|mean − ground truth|", err, ERROR_CMAP, 0.0, emax)]
    for ax, (name, img, cmap, lo, hi) in zip(axes, panels):
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        _bare(ax)
    fig.colorbar(im, ax=axes[2:], shrink=0.85, label="intensity (target scale)")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, out_path)


def save_preview(image, out_path, title: str | None = None) -> Path:
    """Write a single grey-scale panel with a colour bar.

    A complex image is shown as its magnitude; a 3-D array as its middle
    slice along axis 0.  Returns the written path.
    """
    arr = np.asarray(image)
    if np.iscomplexobj(arr):
        arr = np.abs(arr)
    if arr.ndim == 3:
        arr = arr[arr.shape[0] // 2]
    if arr.ndim != 2:
        raise ValueError(f"save_preview expects a 2-D (or 3-D) array, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    vmin, vmax = _window(arr)
    fig, ax = plt.subplots(figsize=(4.2, 4.0), layout="constrained")
    im = ax.imshow(arr, cmap=IMAGE_CMAP, vmin=vmin, vmax=vmax, aspect=_aspect(arr.shape), interpolation="nearest")
    _bare(ax)
    fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, out_path)


def reconstructions_figure(images: Mapping, out_path, measurement=None, measurement_label: str = "mask",
                           title: str | None = None) -> Path:
    """Panels of 2-D images without a reference (prospective data): [measurement] + each image
    in its own grey window (1st-99.5th percentile). Returns the written path."""
    panels = {name: _real_array(img, name, 2) for name, img in images.items()}
    ncols = len(panels) + (measurement is not None)
    fig, axes = plt.subplots(1, ncols, figsize=(2.6 * ncols + 0.4, 3.0 + (0.3 if title else 0.0)),
                             layout="constrained", squeeze=False)
    axes = axes[0]
    j = 0
    if measurement is not None:
        meas = np.asarray(measurement)
        meas = np.log1p(np.abs(meas)) if np.iscomplexobj(meas) else meas.astype(np.float64)
        axes[0].imshow(meas, cmap=IMAGE_CMAP, aspect=_aspect(meas.shape), interpolation="nearest")
        axes[0].set_title(measurement_label, fontsize=9)
        j = 1
    for ax, (name, img) in zip(axes[j:], panels.items()):
        vmin, vmax = _window(img)
        ax.imshow(img, cmap=IMAGE_CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes:
        _bare(ax)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, out_path)


def read_loss_history(sidecar) -> tuple[dict, np.ndarray, np.ndarray]:
    """``(sidecar dict, steps, losses)`` of a checkpoint's sidecar JSON.

    Raises :class:`~diffrecon.errors.DataFormatError` (one line naming the file) when the file is
    not a JSON object or has no usable ``loss_history`` (a list of ``[step, loss]`` pairs).
    """
    path = Path(sidecar)
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not a JSON file ({exc.msg}, line {exc.lineno})") from None
    history = meta.get("loss_history") if isinstance(meta, dict) else None
    if not history:
        raise DataFormatError(f"{path}: no loss_history (a list of [step, loss] pairs) in this model sidecar")
    try:
        arr = np.asarray(history, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty((0,))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise DataFormatError(f"{path}: loss_history is not a list of [step, loss] pairs")
    return meta, arr[:, 0], arr[:, 1]


def loss_curve_figure(sidecar, out_path, model: str | None = None, dataset: str | None = None,
                      family: str | None = None) -> Path:
    """Training loss against the optimiser step of one trained model, from its sidecar JSON.

    The loss axis is logarithmic (linear when some recorded loss is not positive). The title names
    the model, the dataset (and the mask family or setting of a supervised network), the number of
    training steps and where the weights come from: shipped with the repository (the sidecar has
    ``exported_from``) or trained in this run. ``model``/``dataset`` default to the sidecar's
    ``method``/``dataset``. Returns the written path.
    """
    meta, steps, losses = read_loss_history(sidecar)
    model = model or meta.get("method", "model")
    dataset = dataset or meta.get("dataset", "?")
    n_steps = int(meta.get("step", steps[-1]))
    origin = "shipped weights" if meta.get("exported_from") else "trained in this run"
    what = f"{model} · {dataset}" + (f" · {family}" if family else "")

    fig, ax = plt.subplots(figsize=(5.6, 3.6), layout="constrained")
    ax.plot(steps, losses, marker="o", markersize=3, linewidth=1.4, color="#1f5fa8")
    if np.all(losses > 0):
        ax.set_yscale("log")
        ax.set_ylabel("training loss (log scale)")
    else:
        ax.set_ylabel("training loss")
    ax.set_xlabel("optimiser step")
    ax.grid(True, which="both", alpha=0.3)
    loss_name = meta.get("loss")
    suffix = f", {loss_name} loss" if loss_name else ""
    ax.set_title(f"{what}\n{n_steps} steps{suffix} · {origin}", fontsize=10)
    return save_figure(fig, out_path)
