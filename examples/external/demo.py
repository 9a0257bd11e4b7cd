"""Run the external-data example end to end: start the local API, run the pipeline, change
what the API serves, and run again, printing what zenbuild executed each time.

    cd examples/external && python demo.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from server import DataServer  # noqa: E402

RATES = {"base": "USD", "rates": {"EUR": 0.92, "CHF": 0.88, "GBP": 0.79, "JPY": 151.2,
                                  "SGD": 1.34}}


def zenbuild(url: str, *args: str, env: Optional[Dict[str, str]] = None) -> List[str]:
    """`zenbuild run` in this folder; returns the steps that executed."""
    proc = subprocess.run(
        [sys.executable, "-m", "zenbuild", "run", "-p", f"url={url}/rates.json", *args],
        cwd=HERE, capture_output=True, text=True, env={**os.environ, **(env or {})})
    print(proc.stdout + proc.stderr, end="")
    if proc.returncode:
        raise SystemExit(proc.returncode)
    return re.findall(r"^Step (\S+) has finished in", proc.stdout, re.M)


def main() -> None:
    with DataServer() as api:
        api.publish("/rates.json", RATES)
        print("== 1. first run: everything executes")
        zenbuild(api.url)
        print("== 2. nothing changed: the probe sees the same ETag, nothing executes")
        zenbuild(api.url)
        print("== 3. the API publishes new rates (new ETag): fetch_rates and what uses it rerun")
        api.publish("/rates.json", {**RATES, "rates": {**RATES["rates"], "EUR": 0.95}})
        zenbuild(api.url, "--explain")
        print("== 4. the API republishes the same data under a new ETag: early cutoff")
        api.publish("/rates.json", {**RATES, "rates": {**RATES["rates"], "EUR": 0.95}})
        zenbuild(api.url)
        print("== 5. another region (an Env input): convert and render rerun")
        zenbuild(api.url, "--explain", env={"RATES_REGION": "uk"})


if __name__ == "__main__":
    main()
