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
