"""Write the rule's `content` param as JSON to its output (run configs, the evaluation protocol)."""
import json
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")
out = Path(snakemake.output[0])
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(snakemake.params.content, indent=2) + "\n")
