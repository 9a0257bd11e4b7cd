"""`zenbuild cache`: info, gc (entries, blobs, old trash), verify, clear and keygen."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

import click

from zenbuild.cli.options import no_wait_option as _no_wait
from zenbuild.cli.options import project_dir_option as _project_dir


def _locked_store(project_dir: Optional[str], no_wait: bool) -> Any:
    from zenbuild.project import load_project
    from zenbuild.store.db import Store

    store = Store(load_project(project_dir).store, create=False)
    try:
        store.lock(wait=not no_wait, on_wait=lambda pid: click.echo(
            f"Waiting for another zenbuild run (pid {pid}) in this project to finish...", err=True))
    except BaseException:
        store.close()
        raise
    return store


def _when(t: Optional[float]) -> str:
    import time as _time

    return _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(t)) if t else "-"


@click.group()
def cache() -> None:
    """Inspect, verify and trim the local store."""


@cache.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@_project_dir
def cache_info(as_json: bool, project_dir: Optional[str]) -> None:
    """Size, entry and blob counts, oldest entry, the trash."""
    from zenbuild.inspect import trash
    from zenbuild.inspect.cache_admin import human, info
    from zenbuild.project import load_project
    from zenbuild.store.db import Store

    config = load_project(project_dir)
    store = Store(config.store, create=False)
    try:
        i = info(store)
        trashed = trash.folders(store)
    finally:
        store.close()
    trash_bytes = sum(f.size for f in trashed)
    if as_json:
        click.echo(json.dumps({**i.__dict__, "store": config.store, "trash_folders": len(trashed),
                               "trash_bytes": trash_bytes}, sort_keys=True))
        return
    click.echo(f"store:        {config.store}")
    click.echo(f"entries:      {i.entries} (across {len(i.steps)} steps)")
    click.echo(f"blobs:        {i.blobs}, {human(i.blob_bytes)}"
               + (f" ({i.unreferenced_blobs} not needed by any entry)" if i.unreferenced_blobs else ""))
    click.echo(f"database:     {human(i.db_bytes)}")
    click.echo(f"oldest entry: {_when(i.oldest_created)}")
    click.echo(f"least recently used: {_when(i.least_recently_used)}")
    if trashed:
        click.echo(f"trash:        {len(trashed)} folders, {human(trash_bytes)}, oldest "
                   f"{_when(trashed[0].when)} (`cache gc` removes those older than "
                   f"{config.cache.get('trash_keep') or trash.DEFAULT_KEEP})")
    if config.cache.get("remote"):
        from zenbuild.store.remote import redact

        click.echo(f"remote:       {redact(str(config.cache['remote']))}")


@cache.command("gc")
@click.option("--max-size", metavar="SIZE", default=None,
              help="Trim least recently used entries until blobs fit, e.g. 5GB "
                   "(default: [cache] max_size).")
@click.option("--older-than", metavar="AGE", default=None,
              help="Remove entries not used for AGE, e.g. 30d (units s, m, h, d, w; at least "
                   "1h: use is recorded to the hour).")
@click.option("--trash-older-than", metavar="AGE", default=None,
              help="Remove trash folders (your versions of outputs a restore moved aside) "
                   "made more than AGE ago (default: [cache] trash_keep, else 30d).")
@_no_wait
@_project_dir
def cache_gc(max_size: Optional[str], older_than: Optional[str], trash_older_than: Optional[str],
             no_wait: bool, project_dir: Optional[str]) -> None:
    """Remove old or least recently used entries, every blob no kept entry needs, and old
    trash folders (each one named)."""
    from zenbuild.inspect import trash
    from zenbuild.inspect.cache_admin import gc, human, parse_age, parse_size
    from zenbuild.project import load_project

    config = load_project(project_dir)
    size_text = max_size or config.cache.get("max_size")
    limit = parse_size(str(size_text)) if size_text else None
    age = parse_age(older_than) if older_than else None
    trash_age = parse_age(trash_older_than or str(config.cache.get("trash_keep")
                                                  or trash.DEFAULT_KEEP))
    from zenbuild.store.db import TOUCH_EVERY_S

    if age is not None and age < TOUCH_EVERY_S:
        from zenbuild.errors import ConfigError

        raise ConfigError(
            f"--older-than {older_than}: give at least 1h. A run records when it used an entry "
            "only to within an hour (so that a no-op run writes nothing), so a shorter age "
            "could remove entries the last run used."
        )
    store = _locked_store(project_dir, no_wait)
    try:
        r = gc(store, limit, age)
        trashed = trash.prune(store, trash_age, on_remove=lambda f: click.echo(
            f"removed trash folder {f.path} ({f.files} files, {human(f.size)}, moved there "
            f"{_when(f.when)})"))
        from zenbuild.store.unstored import Unstored

        _, stale = Unstored(store).prune(config.root)  # lines no file matches any more
    finally:
        store.close()
    broken = f" ({r.broken_entries} of them broken)" if r.broken_entries else ""
    click.echo(f"removed {r.removed_entries + r.broken_entries} entries{broken} and "
               f"{r.removed_blobs} blobs, freed {human(r.freed_bytes)}; kept {r.kept_entries} "
               f"entries, {human(r.kept_bytes)}"
               + (f"; removed {len(trashed)} trash folders" if trashed else "")
               + (f"; pruned {stale} stale lines of {os.path.join(store.path, 'unstored')}"
                  if stale else ""))


@cache.command("verify")
@click.option("--repair", is_flag=True,
              help="Remove the corrupt blobs, damaged rows and broken entries found.")
@_no_wait
@_project_dir
def cache_verify(repair: bool, no_wait: bool, project_dir: Optional[str]) -> None:
    """Rehash every blob and read every row; report what is damaged (exit 1 if anything),
    and with --repair remove it (the steps concerned run again)."""
    from zenbuild.inspect.cache_admin import human, verify

    store = _locked_store(project_dir, no_wait)
    try:
        r = verify(store, repair)
    finally:
        store.close()
    done = "removed" if repair else "found"
    for digest in r.corrupt:
        click.echo(f"corrupt blob {digest}: {done}")
    for table, why in r.bad_rows:
        click.echo(f"damaged row in {table}, {why}: {done}")
    for step_name, fp in r.removed_entries:
        click.echo(f"broken entry {fp[:12]} of step {step_name}: it needs a corrupt or missing "
                   f"blob ({done}; the step will run again)")
    click.echo(f"checked {r.checked} blobs ({human(r.checked_bytes)}): {len(r.corrupt)} corrupt, "
               f"{len(r.bad_rows)} damaged rows, {len(r.removed_entries)} broken entries"
               + (" removed" if repair else ""))
    if not r.clean:
        if not repair:
            click.echo("Run `zenbuild cache verify --repair` to remove them.")
        sys.exit(1)


@cache.command("clear")
@_no_wait
@_project_dir
def cache_clear(no_wait: bool, project_dir: Optional[str]) -> None:
    """Remove every cache entry and blob (run history is kept)."""
    from zenbuild.inspect.cache_admin import clear, human

    store = _locked_store(project_dir, no_wait)
    try:
        n_entries, n_blobs, size = clear(store)
    finally:
        store.close()
    click.echo(f"removed {n_entries} entries and {n_blobs} blobs ({human(size)})")


@cache.command("keygen")
@click.option("--out", metavar="PATH", default=None,
              help="Where to write the private key (PATH.pub gets the public key; default: "
                   "~/.config/zenbuild/signing-key). Existing files are never overwritten.")
def cache_keygen(out: Optional[str]) -> None:
    """Write an Ed25519 key pair for signing remote-cache entries (docs/remote-cache.md)."""
    from zenbuild.inspect.keys import default_key_path, keygen, keygen_text

    for line in keygen_text(*keygen(out or default_key_path())):
        click.echo(line)
