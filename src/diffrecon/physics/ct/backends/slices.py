"""``cpu`` backend: ASTRA 2-D projectors, one slice at a time, over a pool of worker threads.

Each of the ``n_threads`` workers owns a 2-D projector, float32 buffers linked into ASTRA and
its FP / BP / FBP algorithm objects, all created once, so calls create no ASTRA objects. The
slices of a stack are split into ``n_threads`` contiguous chunks, one per thread (ASTRA
releases the GIL while it runs). ASTRA's CPU FP/BP pair is an exact matrix transpose pair, so
``<A x, y> = <x, A^T y>`` to float32 rounding. FBP uses ASTRA's default Ram-Lak filter.

The same pool serves FBP for the other backends: the ``matrix`` backend (CPU, same
projector) and the ``cuda`` backend (``gpu=True``: ASTRA's 2-D ``FP_CUDA``/``BP_CUDA``/
``FBP_CUDA`` with one worker).
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor

import astra
import numpy as np
import torch

from diffrecon.physics.ct.geometry import CTGeometry


class SliceWorker:
    """One 2-D projector with persistent linked buffers and FP/BP/FBP algorithms.

    Not thread-safe by itself: :class:`SlicesBackend` hands each worker to one thread at a
    time through a queue.
    """

    def __init__(self, geom: CTGeometry, gpu: bool = False) -> None:
        self.ids_proj: list[int] = []
        self.ids_data: list[int] = []
        self.ids_alg: list[int] = []
        try:
            vg = geom.astra_vol_geom()
            pg = geom.astra_proj_geom()
            proj_type = "cuda" if gpu else geom.projector
            self.proj = astra.create_projector(proj_type, pg, vg)
            self.ids_proj.append(self.proj)
            self.vol = np.zeros(geom.image_shape, dtype=np.float32)
            self.sino = np.zeros(geom.sino_shape, dtype=np.float32)
            vid = astra.data2d.link("-vol", vg, self.vol)
            self.ids_data.append(vid)
            sid = astra.data2d.link("-sino", pg, self.sino)
            self.ids_data.append(sid)
            suffix = "_CUDA" if gpu else ""
            self.fp = self._alg("FP" + suffix, ProjectionDataId=sid, VolumeDataId=vid)
            self.bp = self._alg("BP" + suffix, ProjectionDataId=sid, ReconstructionDataId=vid)
            # FBP (CPU default filter is Ram-Lak); FBP_CUDA defaults to ram-lak too.
            self.fbp = self._alg("FBP" + suffix, ProjectionDataId=sid, ReconstructionDataId=vid)
        except Exception:
            self.release()
            raise

    def _alg(self, kind: str, **ids) -> int:
        cfg = astra.astra_dict(kind)
        cfg.update(ids)
        cfg["ProjectorId"] = self.proj
        aid = astra.algorithm.create(cfg)
        self.ids_alg.append(aid)
        return aid

    # each method: copy input into the linked buffer, run, copy result out
    def forward(self, img: np.ndarray, out: np.ndarray) -> None:
        np.copyto(self.vol, img)
        astra.algorithm.run(self.fp)
        np.copyto(out, self.sino)

    def adjoint(self, sino: np.ndarray, out: np.ndarray) -> None:
        np.copyto(self.sino, sino)
        astra.algorithm.run(self.bp)
        np.copyto(out, self.vol)

    def filtered_bp(self, sino: np.ndarray, out: np.ndarray) -> None:
        np.copyto(self.sino, sino)
        astra.algorithm.run(self.fbp)
        np.copyto(out, self.vol)

    def release(self) -> None:
        if self.ids_alg:
            astra.algorithm.delete(self.ids_alg)
        if self.ids_data:
            astra.data2d.delete(self.ids_data)
        if self.ids_proj:
            for pid in self.ids_proj:
                astra.projector.delete(pid)
        self.ids_alg, self.ids_data, self.ids_proj = [], [], []


class SlicesBackend:
    """The ``cpu`` backend (see the module docstring); ``gpu=True``: 2-D CUDA workers (for FBP)."""

    name = "cpu"

    def __init__(self, geometry: CTGeometry, n_threads: int, gpu: bool = False) -> None:
        self.geometry = geometry
        self.n_threads = int(n_threads)
        self.workers: list[SliceWorker] = []
        self._idle: queue.SimpleQueue[SliceWorker] = queue.SimpleQueue()
        self._pool: ThreadPoolExecutor | None = None
        try:
            for _ in range(self.n_threads):
                w = SliceWorker(geometry, gpu=gpu)
                self.workers.append(w)
                self._idle.put(w)
            if self.n_threads > 1:
                self._pool = ThreadPoolExecutor(max_workers=self.n_threads, thread_name_prefix="astra-ct")
        except Exception:
            self.close()
            raise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run("forward", x.numpy(), self.geometry.sino_shape))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run("adjoint", y.numpy(), self.geometry.image_shape))

    def fbp(self, y: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run("filtered_bp", y.numpy(), self.geometry.image_shape))

    def gram(self) -> None:
        return None                                  # the volume layout suits per-slice calls

    def run(self, method: str, src: np.ndarray, hw_out: tuple[int, int]) -> np.ndarray:
        """``SliceWorker.<method>`` on every slice of ``src`` (D, ...) float32; returns (D, *hw_out)."""
        out = np.empty((src.shape[0], *hw_out), dtype=np.float32)
        n_slices = src.shape[0]
        n_jobs = min(self.n_threads, n_slices)

        def job(lo: int, hi: int) -> None:
            worker = self._idle.get()
            try:
                fn = getattr(worker, method)
                for i in range(lo, hi):
                    fn(src[i], out[i])
            finally:
                self._idle.put(worker)

        if n_jobs <= 1 or self._pool is None:
            job(0, n_slices)
            return out
        bounds = np.linspace(0, n_slices, n_jobs + 1).round().astype(int)
        futures = [self._pool.submit(job, int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        for f in futures:
            f.result()
        return out

    def close(self) -> None:
        """Shut the thread pool and delete the workers' ASTRA objects (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for w in self.workers:
            w.release()
        self.workers = []
