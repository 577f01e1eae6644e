"""Prints the fully merged and evaluated config (every ``default.yaml`` of its chain, ``_base_``, ``${}`` evaluated,
overrides applied): what a run of it will use.

    python tools/print_config.py CONFIG [--a.b value ...]
"""
import argparse
import sys

import yaml

from mmdet3d.utils.config import load_config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
    except (ValueError, FileNotFoundError) as e:
        print(f"print_config.py: error: {e}", file=sys.stderr)
        return 2
    print(f"# {args.config}" + (f" {' '.join(overrides)}" if overrides else ""))
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None, width=120), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
