"""`workbench manifest validate|build|formats`: check a manifest, build one from a dataset, list formats."""

from __future__ import annotations

import argparse
import json
import sys


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
                                    "`workbench manifest build FORMAT --help` shows the format's options.")
    fsub = b.add_subparsers(dest="format", metavar="FORMAT")
    for name, builder in BUILDERS.items():
        fp = fsub.add_parser(name, help=builder.description, description=f"{builder.description}. "
                             f"Expected layout: {builder.layout}. Cite: {builder.citation}")
        fp.add_argument("--root", required=True, help="the dataset folder")
        fp.add_argument("--out", required=True, help="the manifest CSV to write (paths become relative to "
                                                      "its folder: put it in or above the images)")
        fp.add_argument("--verify", action="store_true", help="decode every image and drop unreadable ones (slow)")
        fp.add_argument("--strict", action="store_true", help="exit non-zero when any file had a problem")
        fp.add_argument("--max-listed", type=int, default=5, metavar="N", help="example files per problem [default: 5]")
        fp.add_argument("--json", action="store_true", help="print the build report as JSON")
        add_arguments(fp, builder.options, prefix="")
        fp.set_defaults(func=run_build, builder_options=builder.options)
    b.set_defaults(func=_need_format)

    f = msub.add_parser("formats", help="list the dataset formats with their citation and spec file")
    f.set_defaults(func=run_formats)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _need_format(args: argparse.Namespace) -> int:
    from workbench.data.builders import BUILDERS
    from workbench.errors import ConfigError

    raise ConfigError(f"give a dataset format: workbench manifest build FORMAT --root DIR --out MANIFEST "
                      f"(formats: {', '.join(BUILDERS)})")


def run_validate(args: argparse.Namespace) -> int:
    from workbench.data.manifest import validate_manifest

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


def run_formats(args: argparse.Namespace) -> int:
    from pathlib import Path

    from workbench.data.builders import BUILDERS, spec_path

    width = max(len(n) for n in BUILDERS)
    for name, b in BUILDERS.items():
        spec = spec_path(name)
        where = f"spec: data_manifests/{Path(spec).name}" if spec else "spec: (not in this install)"
        print(f"{name:<{width}}  {b.description}\n{'':<{width}}  cite: {b.citation}\n{'':<{width}}  {where}")
    return 0
