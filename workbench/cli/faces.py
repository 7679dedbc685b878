"""`workbench faces MANIFEST --out DIR`: detect, landmark and align every face (dlib)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from workbench.config import add_arguments
    from workbench.data.faces import FacesConfig

    p = sub.add_parser("faces", help="detect faces, fit 68 landmarks and write aligned crops + a new manifest",
                       description="Detect the face in every image of a manifest (dlib HOG, CNN fallback; HOG "
                                   "skipped on known profiles from the yaw/view column), fit 68 landmarks, check "
                                   "them (meta_face_status: ok, profile or implausible, reason in "
                                   "meta_face_reason), similarity-align ok/implausible faces to a canonical "
                                   "template and give profiles a yaw-aware crop, and write the crops, "
                                   "OUT/manifest.csv (landmarks in crop coordinates) and OUT/failures.csv "
                                   "(failures, and kept faces that need a look). A multi-view group is one task "
                                   "(one batched CNN call). Re-running the same command resumes.")
    p.add_argument("manifest", help="the input manifest CSV")
    p.add_argument("--out", required=True, help="output folder (crops/, manifest.csv, failures.csv)")
    p.add_argument("--restart", action="store_true", help="ignore the progress of an earlier run in --out")
    p.add_argument("--overlay", metavar="PNG", help="also draw landmarks on a sample of crops into this PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_arguments(p, FacesConfig, prefix="")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.config import args_to_dict, from_dict
    from workbench.data.faces import FacesConfig, align_manifest, landmark_overlay_sheet

    cfg = from_dict(FacesConfig, args_to_dict(args, FacesConfig, prefix=""))
    report = align_manifest(args.manifest, args.out, cfg, progress=not args.no_progress, restart=args.restart)
    print(report.summary_line)
    if args.overlay and report.manifest is not None:
        print(f"overlay: {landmark_overlay_sheet(report.manifest, args.overlay)}")
    return 0
