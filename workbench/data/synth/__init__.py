"""The synthetic face generator: the embedded default dataset (no network, no licences).

Parametric faces with the factors the workbench studies: identity (face shape, skin, hair, brows,
eyes, glasses, facial hair), expression (the 8 canonical classes as FACS action units with an
intensity, plus valence/arousal), head pose, and nuisance (light, background, scale/shift, blur,
noise). Every image comes with its 68 iBUG landmarks. Identity dominates pixel variance; expression
is a local, recognisable change, as in real faces.

Quick start::

    from workbench.data.synth import SynthConfig, generate_dataset, render_face
    manifest = generate_dataset(SynthConfig(identities=24, images_per_identity=24), "data/synth")
    img, landmarks = render_face(3, "surprise", 0.8, yaw=20, size=96)

CLI: ``workbench synth --out DIR [--views K | --clips] [--contact-sheet]``.

Output: ``DIR/images/000000.png ...``, ``DIR/manifest.csv`` and ``DIR/synth_config.json``. Manifest
columns: ``path, split, expression, identity, intensity, valence, arousal, yaw, pitch, roll, landmarks``
plus ``view, group`` (views mode) or ``clip, frame, meta_clip_expression`` (clip mode).

- **Expressions** are balanced per identity (round robin over the 8 classes, shifted per identity);
  each is a set of action units (:data:`ACTION_UNITS`) moving landmarks (:data:`AU_MOTION`) with an
  ``intensity`` in [intensity_min, intensity_max]; neutral has intensity 0.
- **Valence/arousal** = intensity x the class position in :data:`VALENCE_AROUSAL` (a convention of the
  generator: happiness (0.8, 0.45), sadness (-0.65, -0.4), surprise (0.15, 0.85), fear (-0.6, 0.75),
  disgust (-0.7, 0.35), anger (-0.65, 0.7), contempt (-0.5, 0.2), neutral (0, 0)).
- **Pose** in degrees: yaw > 0 turns the nose to the image right, pitch > 0 lifts the chin, roll > 0
  rotates clockwise in the image.
- **Landmarks**: 68 iBUG points after pose/scale/shift, pixel centres at integer coordinates.
- **Splits**: subject-disjoint, seeded (15 % val, 15 % test of the identities by default).
- **Regions**: :data:`MOVING_REGIONS` says which of ``brows, eyes, nose, mouth, cheeks_jaw`` each
  expression moves (ground truth for attention scoring).
- **Determinism**: one random stream per identity, instance and image (see :mod:`.dataset`), so any
  image can be regenerated alone with :func:`synth_item`.
"""

from workbench.data.synth.dataset import (
    SynthConfig,
    SynthItem,
    generate_dataset,
    identity_splits,
    synth_item,
    validate,
)
from workbench.data.synth.expressions import (
    ACTION_UNITS,
    AU_MOTION,
    AU_REGIONS,
    MOVING_REGIONS,
    REGION_LANDMARKS,
    REGIONS,
    VALENCE_AROUSAL,
    expression_aus,
    valence_arousal,
)
from workbench.data.synth.identity import Identity, make_identity, sample_identity
from workbench.data.synth.render import Nuisance, render_aus, render_face, sample_nuisance
from workbench.data.synth.sheet import write_contact_sheet

__all__ = [
    "ACTION_UNITS",
    "AU_MOTION",
    "AU_REGIONS",
    "MOVING_REGIONS",
    "REGIONS",
    "REGION_LANDMARKS",
    "VALENCE_AROUSAL",
    "Identity",
    "Nuisance",
    "SynthConfig",
    "SynthItem",
    "expression_aus",
    "generate_dataset",
    "identity_splits",
    "make_identity",
    "render_aus",
    "render_face",
    "sample_identity",
    "sample_nuisance",
    "synth_item",
    "valence_arousal",
    "validate",
    "write_contact_sheet",
]
