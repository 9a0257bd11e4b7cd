"""Rates example: an always-run "API" step whose unchanged output keeps downstream cached."""

import csv
import json
from pathlib import Path

from zenbuild import File, Output, no_cache, pipeline, step

# Stands in for a remote API. It is deliberately NOT declared as a File input, so zenbuild
# cannot know when it changes: that is why fetch_rates is marked @no_cache.
FEED = Path(__file__).parent / "feed" / "rates.json"


@no_cache
@step
def fetch_rates() -> dict:
    payload = json.loads(FEED.read_text())
    # Keep only what downstream needs; volatile fields like "fetched_at" are dropped so
    # they do not defeat the early cutoff.
    rates = {code: float(rate) for code, rate in sorted(payload["rates"].items())}
    return {"base": payload["base"], "rates": rates}


@step
def load_prices(src: File) -> list[dict]:
    with src.open(newline="") as fh:
        return [
            {"item": row["item"], "price": float(row["price_usd"])} for row in csv.DictReader(fh)
        ]


@step
def convert(prices: list[dict], rates: dict, currencies: str = "EUR,GBP,JPY") -> dict:
    codes = [code.strip().upper() for code in currencies.split(",") if code.strip()]
    unknown = [code for code in codes if code not in rates["rates"]]
    if unknown:
        raise ValueError(
            f"no rate for {', '.join(unknown)}; the feed has {', '.join(rates['rates'])}"
        )
    rows = []
    for entry in prices:
        converted = {code: round(entry["price"] * rates["rates"][code], 2) for code in codes}
        rows.append({"item": entry["item"], "base": entry["price"], **converted})
    used = [rates["rates"][code] for code in codes]
    return {"base": rates["base"], "codes": codes, "rates": used, "rows": rows}


@step
def render_report(table: dict, out: Output) -> None:
    base, codes = table["base"], table["codes"]
    used = [f"1 {base} = {rate} {code}" for code, rate in zip(codes, table["rates"])]
    lines = [
        "# Price list",
        "",
        "Rates used: " + ", ".join(used),
        "",
        f"| item | {base} | " + " | ".join(codes) + " |",
        "|---" * (len(codes) + 2) + "|",
    ]
    for row in table["rows"]:
        cells = [f"{row['base']:,.2f}"] + [f"{row[code]:,.2f}" for code in codes]
        lines.append(f"| {row['item']} | " + " | ".join(cells) + " |")
    out.write_text("\n".join(lines) + "\n")


@pipeline
def rates_report(prices: str = "examples/rates/data/prices.csv", currencies: str = "EUR,GBP,JPY"):
    rates = fetch_rates()
    table = convert(load_prices(File(prices)), rates, currencies=currencies)
    render_report(table, Output("build/rates/report.md"))
