"""`workbench manifest validate|build|stats|formats`: check a manifest, build one from a dataset, measure how
visible expression is in its pixels, list formats."""

from __future__ import annotations

import argparse
import json
import sys

from workbench.cli import seed_arg


def register(sub) -> None:
    from workbench.config import add_arguments
    from workbench.data.builders import BUILDERS

    p = sub.add_parser("manifest", help="validate a manifest, build one from a dataset, list dataset formats",
                       description="Dataset manifests: one CSV row per image (see docs/ARCHITECTURE.md).")
    msub = p.add_subparsers(dest="manifest_command", metavar="ACTION")

    v = msub.add_parser("validate", help="check a manifest and list every problem (one line each)",
                        description="Check the schema, labels, paths and image files of a manifest; "
                                    "exits non-zero when there is an error.")
    v.add_argument("manifest", help="the manifest CSV")
    v.add_argument("--no-files", action="store_true", help="skip checking that the image files exist")
    v.add_argument("--deep", action="store_true", help="decode every image (slow; catches corrupt files)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument("--max-listed", type=int, default=5, metavar="N",
                   help="examples quoted per problem [default: 5]")
    v.set_defaults(func=run_validate)

    b = msub.add_parser("build", help="build a manifest from a dataset in its original layout",
                        description="Build a manifest from a dataset folder in its original layout. "
                                    "`workbench manifest build FORMAT --help` shows the format's options. When "
                                    "--out is outside the dataset folder, a symbolic link to the (read-only) "
                                    "dataset root is made next to the manifest so its paths stay relative; "
                                    "nothing is copied. Put --out inside or above the dataset folder to avoid "
                                    "the link.")
    fsub = b.add_subparsers(dest="format", metavar="FORMAT")
    for name, builder in BUILDERS.items():
        fp = fsub.add_parser(name, help=builder.description, description=f"{builder.description}. "
                             f"Expected layout: {builder.layout}. Cite: {builder.citation}")
        fp.add_argument("--root", required=True, help="the dataset folder")
        fp.add_argument("--out", required=True, help="the manifest CSV to write (paths become relative to "
                                                      "its folder: put it in or above the images; elsewhere "
                                                      "a link to --root is made beside it, nothing is copied)")
        fp.add_argument("--verify", action="store_true", help="decode every image and drop unreadable ones (slow)")
        fp.add_argument("--strict", action="store_true", help="exit non-zero when any file had a problem")
        fp.add_argument("--max-listed", type=int, default=5, metavar="N", help="example files per problem [default: 5]")
        fp.add_argument("--json", action="store_true", help="print the build report as JSON")
        add_arguments(fp, builder.options, prefix="")
        fp.set_defaults(func=run_build, builder_options=builder.options)
    b.set_defaults(func=_need_format)

    st = msub.add_parser("stats", help="how visible expression is in the pixels (variance shares, probes)",
                         description="Pixel statistics of a labelled face set: identity and expression shares "
                                     "of the pixel variance, a subject-disjoint raw-pixel expression probe and "
                                     "(with landmarks) a landmark-geometry probe, each with a 95%% person "
                                     "bootstrap interval, beside real posed sets (JAFFE, CK+48). Images are "
                                     "decoded in memory; nothing is cached.")
    st.add_argument("manifest", help="the manifest CSV (needs identity and expression columns)")
    st.add_argument("--size", type=int, default=48, help="grey image side for the statistics [default: 48, "
                                                         "the size of the reference figures]")
    st.add_argument("--folds", type=int, default=5, help="person-wise cross-validation folds [default: 5]")
    st.add_argument("--seed", type=seed_arg, default=0, help="seed of the folds and the bootstrap [default: 0]")
    st.add_argument("--max-images", type=int, default=4000, help="whole people are kept up to this many "
                                                                  "images [default: 4000]")
    st.add_argument("--out", help="also save the statistics as a results folder here")
    st.add_argument("--json", action="store_true", help="print JSON instead of the report")
    st.set_defaults(func=run_stats)

    f = msub.add_parser("formats", help="list the dataset formats with their citation and spec file")
    f.set_defaults(func=run_formats)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _need_format(args: argparse.Namespace) -> int:
    from workbench.data.builders import BUILDERS
    from workbench.errors import ConfigError

    raise ConfigError(f"give a dataset format: workbench manifest build FORMAT --root DIR --out MANIFEST "
                      f"(formats: {', '.join(BUILDERS)})")


def run_validate(args: argparse.Namespace) -> int:
    from workbench.data.validation import validate_manifest

    report = validate_manifest(args.manifest, check_files=not args.no_files, deep=args.deep,
                               max_listed=args.max_listed)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else 2
    if report.ok:
        checked = "files not checked" if args.no_files else ("images decoded" if args.deep else "files present")
        print(f"ok: {report.summary_line or f'{report.n_rows} rows'} ({checked})")
        for w in report.warnings:
            print(f"warning: {w.message}")
        return 0
    for prob in report.problems:
        print(str(prob))
    n = len(report.errors)
    print(f"error: {args.manifest}: {n} problem{'s' if n != 1 else ''} found", file=sys.stderr)
    return 2


def run_build(args: argparse.Namespace) -> int:
    from workbench.config import args_to_dict
    from workbench.data.builders import build_manifest

    options = args_to_dict(args, args.builder_options, prefix="")
    report = build_manifest(args.format, args.root, args.out, verify=args.verify, **options)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines(max_listed=args.max_listed):
            print(line)
    return 1 if (args.strict and report.problems) else 0


def run_stats(args: argparse.Namespace) -> int:
    from workbench.analysis.pixel_stats import manifest_pixel_stats
    from workbench.errors import ConfigError

    if args.size < 16 or args.folds < 2 or (args.max_images is not None and args.max_images < 10):
        raise ConfigError("stats: --size must be >= 16, --folds >= 2 and --max-images >= 10")
    stats = manifest_pixel_stats(args.manifest, size=args.size, folds=args.folds, seed=args.seed,
                                 max_images=args.max_images)
    if args.out:
        stats.save(args.out)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
    else:
        print("\n".join(stats.lines()))
    return 0


def run_formats(args: argparse.Namespace) -> int:
    from pathlib import Path

    from workbench.data.builders import BUILDERS, spec_path

    width = max(len(n) for n in BUILDERS)
    for name, b in BUILDERS.items():
        spec = spec_path(name)
        where = f"spec: data_manifests/{Path(spec).name}" if spec else "spec: (not in this install)"
        print(f"{name:<{width}}  {b.description}\n{'':<{width}}  cite: {b.citation}\n{'':<{width}}  {where}")
    return 0
