"""Result records and the writers/plots built on them."""
from .result import SCHEMA, Result, append_jsonl, load_results, read_jsonl, write_json, write_jsonl

__all__ = ["SCHEMA", "Result", "append_jsonl", "load_results", "read_jsonl", "write_json", "write_jsonl"]
