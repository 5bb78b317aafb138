"""Rule download_dataset: fetch, check and extract a dataset's archives; record file names only."""
import json
from pathlib import Path

from diffrecon.data.download import download_all, read_url_list
from diffrecon.logs import log_to

with log_to(snakemake.log[0]):
    cfg = snakemake.params.download
    records = download_all(read_url_list(cfg.get("urls_file")), cfg["dest"], only=cfg.get("archives"))
    out = Path(snakemake.output[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=2))
