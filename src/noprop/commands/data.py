"""``noprop data list|verify|download``: what datasets are on disk, are they intact, fetch them.

    noprop data list --data-dir ../shared/data      # known datasets, present?, size, verified?
    noprop data verify mnist --data-dir ../shared/data   # md5 of every file, then a full decode
    noprop data download cifar-10                   # into the per-user cache (or --data-dir)

The data root is ``--data-dir``, else ``$NOPROP_DATA``, else the per-user cache (docs/data.md).
``list`` and ``verify`` exit with 1 when a dataset present on disk fails its check.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from noprop.data import CATALOG, EMBEDDED_TABLES, DataError, WrongDatasetError, load_dataset, verify_found
from noprop.data.catalog import DatasetInfo
from noprop.data.download import download_dataset
from noprop.data.integrity import verify_file
from noprop.data.locate import DataRoot, Found, download_dir, find, missing_message, resolve_root

EXIT_FAILED_CHECK = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, verify and download datasets",
                       description="Datasets noprop knows by name: where they are, whether they are "
                       "intact (official md5), and downloading them.")
    actions = p.add_subparsers(dest="data_command", required=True, parser_class=type(p))

    ls = actions.add_parser("list", help="known datasets: present?, size, verified?")
    _data_dir_flag(ls)
    ls.set_defaults(handler=cmd_list)

    verify = actions.add_parser("verify", help="hash every file and decode the dataset")
    verify.add_argument("names", nargs="*", metavar="NAME", help="datasets to verify (default: all present)")
    _data_dir_flag(verify)
    verify.set_defaults(handler=cmd_verify)

    download = actions.add_parser("download", help="download datasets from their official locations")
    download.add_argument("names", nargs="+", metavar="NAME", help=", ".join(CATALOG))
    _data_dir_flag(download)
    download.add_argument("--version", choices=("python", "binary"), default="python",
                          help="CIFAR: the official python (pickles) or binary version (default python)")
    download.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    download.set_defaults(handler=cmd_download)


def _data_dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", dest="data_dir", type=Path, default=None,
                   help="data root (one sub-folder per dataset) or a dataset folder; "
                   "default $NOPROP_DATA, then the per-user cache")


def _infos(names: list[str]) -> list[DatasetInfo]:
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise DataError(f"unknown dataset {unknown[0]!r}; datasets with files: {', '.join(CATALOG)}")
    return [CATALOG[n] for n in names]


def _describe_root(root: DataRoot) -> str:
    origins = {"cache": "per-user cache", "NOPROP_DATA": "from $NOPROP_DATA"}
    origin = origins.get(root.source, "from --data-dir")
    return f"data root: {root.path} ({origin})"


def _check(info: DatasetInfo, found: Found) -> tuple[str, str | None]:
    """``("verified", None)``, or the status and the reason of the first failing file."""
    try:
        verify_found(info, found)
    except WrongDatasetError as err:
        return "missing", str(err)
    except DataError as err:
        return "CORRUPT", str(err)
    return "verified", None


def _layout_name(found: Found) -> str:
    names = {"idx": "IDX .gz files", "cifar-archive": "python-version archive",
             "cifar-folder": "python-version folder", "cifar-binary-archive": "binary-version archive",
             "cifar-binary-folder": "binary-version folder"}
    return names.get(found.layout.kind, found.layout.kind)


def cmd_list(args: argparse.Namespace) -> int:
    root = resolve_root(args.data_dir)
    print(_describe_root(root))
    rows = [(name, "embedded", "-", "built in (scikit-learn)") for name in ("digits", *EMBEDDED_TABLES)]
    failed = False
    checked: dict[tuple, tuple[str, str | None]] = {}
    for info in CATALOG.values():
        found = find(info, root.path)
        if found is None:
            rows.append((info.name, "missing", "-", f"would be {download_dir(info, root.path)}"))
            continue
        key = (info.folder, found.directory, found.layout.files)
        if key not in checked:
            checked[key] = _check(info, found)
        status, problem = checked[key]
        failed |= status == "CORRUPT"
        if status == "missing":
            rows.append((info.name, status, "-", str(problem)))
            continue
        where = f"{found.directory} ({_layout_name(found)})" + (f": {problem}" if problem else "")
        rows.append((info.name, status, f"{found.bytes_on_disk / 1e6:.1f} MB", where))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'dataset':<{widths[0]}}  {'status':<{widths[1]}}  {'size':>{widths[2]}}  location")
    for name, status, size, where in rows:
        print(f"{name:<{widths[0]}}  {status:<{widths[1]}}  {size:>{widths[2]}}  {where}")
    return EXIT_FAILED_CHECK if failed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    root = resolve_root(args.data_dir)
    print(_describe_root(root))
    infos = _infos(args.names) if args.names else [i for i in CATALOG.values() if find(i, root.path)]
    if not infos:
        print("no datasets found to verify")
        return 0
    failed = False
    for info in infos:
        found = find(info, root.path)
        if found is None:
            print(f"MISSING  {missing_message(info, root)}")
            failed = True
            continue
        for f in found.layout.files:
            path = found.directory / f.path
            try:
                verify_file(path, f)
                print(f"{info.name}: ok      {path}")
            except DataError:
                status, problem = _check(info, found)
                if status == "missing" and not args.names:  # another dataset's files: not ours to judge
                    print(f"{info.name}: skipped: {problem}")
                else:
                    print(f"{info.name}: FAILED  {problem}")
                    failed = True
                break
        else:
            failed |= not _decodes(info, found)
    return EXIT_FAILED_CHECK if failed else 0


def _decodes(info: DatasetInfo, found: Found) -> bool:
    """Load the (already verified) dataset fully and print what it holds."""
    try:
        data = load_dataset(info.name, found.directory, download=False)
    except DataError as err:
        print(f"{info.name}: FAILED  {err}")
        return False
    print(f"{info.name}: readable: {len(data.train_x)} train / {len(data.test_x)} test images of "
          f"{data.spec.describe()}, {data.num_classes} classes")
    return True


def cmd_download(args: argparse.Namespace) -> int:
    root = resolve_root(args.data_dir)
    print(_describe_root(root))
    for info in _infos(args.names):
        found = download_dataset(info, root.path, progress=not args.quiet, version=args.version)
        print(f"{info.name}: verified in {found.directory}")
    return 0
