"""Per-section counts of an Autobahn (kosoku) report: `python3 Tests/autobahn_sections.py index.json`.
Prints one line per section (1 to 13) and exits 1 if any case's behaviour is FAILED or ERROR."""
import collections
import json
import sys


def main(path):
    index = json.load(open(path))
    sections = collections.defaultdict(collections.Counter)
    for cases in index.values():
        for case, result in cases.items():
            section = int(case.split(".")[0])
            bad = result["behavior"] in ("FAILED", "ERROR") or result["behaviorClose"] in ("FAILED", "ERROR")
            sections[section]["failed" if bad else "passed"] += 1
    failed = 0
    for section in sorted(sections):
        counts = sections[section]
        failed += counts["failed"]
        print(f"autobahn section {section}: {counts['passed']} passed, {counts['failed']} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
