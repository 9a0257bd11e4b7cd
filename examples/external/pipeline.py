"""External data example: an HTTP API watched by a version probe (its ETag), a price list that
is a declared File, and the report's region from an environment variable (Env)."""

from __future__ import annotations

import csv
import json
import urllib.request
from typing import Any, Dict, List

from zenbuild import Env, File, Output, pipeline, step

# No proxies: the API is local, and urllib would otherwise read every *_proxy variable.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
REGIONS = {"eu": ["EUR", "CHF"], "uk": ["GBP"], "asia": ["JPY", "SGD"]}


def rates_etag(url: str, **_: Any) -> str:
    """The version probe: a HEAD request whose ETag stands for the API's current data. It runs
    before zenbuild judges fetch_rates, on every run; only a new ETag makes the step execute."""
    with _OPENER.open(urllib.request.Request(url, method="HEAD"), timeout=10) as r:
        return str(r.headers["ETag"]).strip('"')


@step(version=rates_etag, cache_expires_after="1d")  # and at least daily, whatever the ETag says
def fetch_rates(url: str) -> Dict[str, Any]:
    with _OPENER.open(url, timeout=10) as r:
        payload = json.load(r)
    return {"base": payload["base"], "rates": dict(sorted(payload["rates"].items()))}


@step
def load_prices(src: File) -> List[Dict[str, Any]]:
    with src.open(newline="") as fh:
        return [{"item": row["item"], "price": float(row["price_usd"])}
                for row in csv.DictReader(fh)]


@step
def convert(prices: List[Dict[str, Any]], rates: Dict[str, Any], region: str) -> Dict[str, Any]:
    codes = REGIONS.get(region)
    if codes is None:
        raise ValueError(f"unknown region {region!r}; known: {', '.join(REGIONS)}")
    rows = [{"item": p["item"], "USD": p["price"],
             **{c: round(p["price"] * rates["rates"][c], 2) for c in codes}} for p in prices]
    return {"codes": codes, "rates": [rates["rates"][c] for c in codes], "rows": rows}


@step
def render(table: Dict[str, Any], out: Output) -> None:
    codes = table["codes"]
    lines = ["| item | USD | " + " | ".join(codes) + " |", "|---" * (len(codes) + 2) + "|"]
    for row in table["rows"]:
        cells = [row["item"], f"{row['USD']:.2f}"] + [f"{row[c]:.2f}" for c in codes]
        lines.append("| " + " | ".join(cells) + " |")
    out.write_text("\n".join(lines) + "\n")


@pipeline
def external(url: str = "http://127.0.0.1:8765/rates.json", prices: str = "data/prices.csv"):
    rates = fetch_rates(url)
    table = convert(load_prices(File(prices)), rates, Env("RATES_REGION", default="eu"))
    render(table, Output("build/report.md"))
