"""Run the FinOps Foundation's FOCUS validator (its own Python 3.12 venv, `make
focus-validator`) over a file and read its JUnit report: rule id -> pass/fail/skip."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.helpers import REPO

VALIDATOR = REPO / ".venv-focus" / "bin" / "focus-validator"

# focus-validator 2.2.1 reports both alternatives of the OR rule InvoiceId-C-003-C
# ("InvoiceId MUST be null when the charge has no invoice" / "MUST NOT be null when it
# has one") as separate rules, so any dataset with the InvoiceId column fails exactly one
# of them while C-003-C itself passes. We have no invoice ids (null), so C-005-C is the
# one; every other rule must pass or be skipped.
KNOWN_VALIDATOR_ARTEFACT = {"InvoiceId-C-005-C"}


def python312() -> str | None:
    """The interpreter `make focus-validator` would use, if the machine has one."""
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(REPO), "print-py312"],
        capture_output=True,
        text=True,
        check=False,
    )
    path = out.stdout.strip()
    return path or shutil.which("python3.12")


def validate(data_file: Path, report: Path) -> dict[str, str]:
    """Validate against FOCUS 1.2 offline; returns every rule's status."""
    site = next((VALIDATOR.parent.parent / "lib").glob("python3.*/site-packages"))
    # the validator opens its currency list by a path relative to site-packages
    proc = subprocess.run(
        [
            str(VALIDATOR),
            "--data-file",
            str(data_file),
            "--validate-version",
            "1.2",
            "--block-download",
            "--output-type",
            "unittest",
            "--output-destination",
            str(report),
        ],
        cwd=site,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    statuses: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        rule_id = case.attrib["name"].split(" :: ")[0]
        if case.find("failure") is not None or case.find("error") is not None:
            statuses[rule_id] = "fail"
        elif case.find("skipped") is not None:
            statuses[rule_id] = "skip"
        else:
            statuses[rule_id] = "pass"
    return statuses
