"""Writers and plots built on result records (:mod:`robustmm.records`): CSV, Markdown, figures."""
from ..records import SCHEMA, Result, append_jsonl, load_results, read_jsonl, write_json, write_jsonl

__all__ = ["SCHEMA", "Result", "append_jsonl", "load_results", "read_jsonl", "write_json", "write_jsonl"]
