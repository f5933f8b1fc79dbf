"""Write the rule's `content` param, one item a line, to its output (the qualitative prompts)."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")
out = Path(snakemake.output[0])
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text("".join(f"{line}\n" for line in snakemake.params.content))
