"""`workbench methods [NAME]`: list the registry, or show one method's options and presets."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("methods", help="list SSL methods (with paper references) or show one method's options",
                       description="List the SSL methods, or show the options, defaults and presets of one.")
    p.add_argument("name", nargs="?", help="method to describe")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.config import describe
    from workbench.methods import METHODS, get_method

    if not args.name:
        width = max(len(n) for n in METHODS)
        for name, cls in METHODS.items():
            needs = f" [needs: {', '.join(cls.requires)}]" if cls.requires else ""
            print(f"{name:<{width}}  {cls.summary}{needs}\n{'':<{width}}  {cls.paper}")
        return 0
    cls = get_method(args.name)
    print(f"{cls.name}: {cls.summary}\npaper: {cls.paper}")
    if cls.requires:
        print(f"needs manifest columns: {', '.join(cls.requires)}")
    print("\noptions (pass with --opt NAME=VALUE or in YAML under method_config):")
    for spec in describe(cls.Config):
        print(f"  {spec.name} = {spec.default!r}\n      {spec.help}")
    if cls.presets:
        print("\npresets (--preset NAME):")
        for pname, values in cls.presets.items():
            print(f"  {pname}: {values}")
    return 0
