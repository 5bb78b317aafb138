"""Experiment settings (one table column each) and their path-safe names.

MRI:  ``{mask}-R{acceleration}-acs{acs_fraction}-{coil_mode}``, e.g. ``gaussian1d-R4-acs0.08-multicoil``
CT:   ``sv{views}`` (sparse view, views uniform over [0, 180°)) or ``la{degrees}`` (limited angle,
      1° steps from 0°), e.g. ``sv8``, ``la90``.

Coil modes follow score-MRI's four settings:

* ``magnitude``  – real-valued image (|x|) measured through a single coil (Algorithm 2);
* ``singlecoil`` – complex coil-combined image, single-coil k-space (Algorithm 3);
* ``multicoil``  – multi-coil k-space (Algorithms 4 and 5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COIL_MODES = ("magnitude", "singlecoil", "multicoil")

_MRI_RE = re.compile(r"^(?P<mask>[a-z0-9]+)-R(?P<acc>[0-9.]+)-acs(?P<acs>[0-9.]+)-(?P<coil>[a-z]+)$")
_CT_RE = re.compile(r"^(?P<kind>sv|la)(?P<n>[0-9]+)$")


def _fmt(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class MRISetting:
    mask: str
    acceleration: float
    acs_fraction: float
    coil_mode: str

    def __post_init__(self):
        from diffrecon.physics.masks import MASK_KINDS

        if self.mask not in MASK_KINDS:
            raise ValueError(f"mask '{self.mask}' is not one of {', '.join(MASK_KINDS)}")
        if self.coil_mode not in COIL_MODES:
            raise ValueError(f"coil_mode '{self.coil_mode}' is not one of {', '.join(COIL_MODES)}")

    @property
    def name(self) -> str:
        return f"{self.mask}-R{_fmt(self.acceleration)}-acs{_fmt(self.acs_fraction)}-{self.coil_mode}"

    @property
    def label(self) -> str:
        """Short human label for table headers."""
        return f"{self.mask} ×{_fmt(self.acceleration)} ({self.coil_mode})"

    @classmethod
    def parse(cls, name: str) -> "MRISetting":
        m = _MRI_RE.match(name)
        if not m:
            raise ValueError(f"MRI setting '{name}' is not of the form <mask>-R<acc>-acs<fraction>-<coil_mode>")
        return cls(m["mask"], float(m["acc"]), float(m["acs"]), m["coil"])


@dataclass(frozen=True)
class CTSetting:
    kind: str        # "sv" sparse view | "la" limited angle
    n: int           # number of views (sv) or degrees at 1° steps (la)

    def __post_init__(self):
        if self.kind not in ("sv", "la"):
            raise ValueError(f"CT setting kind '{self.kind}' is not one of sv, la")
        if not (1 <= self.n <= (3600 if self.kind == "sv" else 180)):
            raise ValueError(f"CT setting {self.kind}{self.n}: number out of range")

    @property
    def name(self) -> str:
        return f"{self.kind}{self.n}"

    @property
    def label(self) -> str:
        return f"{self.n} views" if self.kind == "sv" else f"{self.n}° limited angle"

    def geometry(self, n: int, projector: str = "linear"):
        """The ASTRA parallel-beam geometry of this setting for n×n slices."""
        from diffrecon.physics.ct import CTGeometry

        if self.kind == "sv":
            return CTGeometry.sparse_view(n, self.n, projector=projector)
        return CTGeometry.limited_angle(n, self.n, step_deg=1.0, projector=projector)

    @classmethod
    def parse(cls, name: str) -> "CTSetting":
        m = _CT_RE.match(name)
        if not m:
            raise ValueError(f"CT setting '{name}' is not of the form sv<views> or la<degrees>")
        return cls(m["kind"], int(m["n"]))


#: Settings of prospective data, measured with each file's own mask: ``prospective-<coil_mode>``.
PROSPECTIVE = "prospective"


def prospective_setting(coil_mode: str) -> str:
    """Setting name of prospective data in ``coil_mode`` (``prospective-multicoil``)."""
    if coil_mode not in COIL_MODES:
        raise ValueError(f"coil_mode '{coil_mode}' is not one of {', '.join(COIL_MODES)}")
    return f"{PROSPECTIVE}-{coil_mode}"


def is_prospective(setting: str) -> bool:
    return setting.startswith(PROSPECTIVE + "-")


def coil_mode_of(setting: str) -> str:
    """Coil mode of an MRI setting name, prospective ones included."""
    if is_prospective(setting):
        return setting[len(PROSPECTIVE) + 1:]
    return MRISetting.parse(setting).coil_mode
