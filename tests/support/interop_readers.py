"""Opens distill's output directories with the real readers people use and checks what they see.

Run by tests/interop_readers.rs as `python interop_readers.py SPEC.json`. The spec lists outputs:

    {"outputs": [{"name": "generate", "dir": "/tmp/x/traces",
                  "splits": {"train": {"folder": "data", "rows": 24}},
                  "configs": {"pass_rates": {"train": 3}},          # optional extra configs
                  "types": {"id": "string", "seed": "uint64", ...},   # Arrow types of columns
                  "messages": true}],                                 # check the messages column
     "legacy": ["/tmp/x/legacy"]}                                     # must NOT open as a directory

For every output and split: `datasets.load_dataset(DIR)` (the card's YAML `configs`),
`pandas.read_parquet(FOLDER)`, `pyarrow.dataset.dataset(FOLDER)`,
`load_dataset("parquet", data_dir=FOLDER)`, Polars and DuckDB globs (`FOLDER/*.parquet`); row
counts, Arrow column types and the `messages` structure are compared. The dataset card's front
matter is parsed with PyYAML and `huggingface_hub.DatasetCard`. Everything runs offline.
Exit status 0 when every check passes; otherwise each failure is printed and the status is 1.
"""

import json
import os
import sys
import tempfile
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="distill-interop-hf-"))

import datasets  # noqa: E402
import duckdb  # noqa: E402
import huggingface_hub  # noqa: E402
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402
import yaml  # noqa: E402

datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()

FAILURES = []
PASSED = []

# Fields the Hub's dataset-card metadata schema knows (huggingface_hub.DatasetCardData and the
# Hub's validator); a card field outside this set would be ignored on the Hub.
CARD_FIELDS = {
    "pretty_name", "license", "language", "task_categories", "task_ids", "tags",
    "size_categories", "configs", "annotations_creators", "language_creators",
    "multilinguality", "source_datasets", "paperswithcode_id", "license_name",
    "license_link", "dataset_info", "train_eval_index", "viewer",
}
SIZE_CATEGORIES = {
    "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M",
    "100M<n<1B", "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T",
}


def check(label, function):
    """Runs one check; records it as passed or failed with the reason."""
    try:
        function()
        PASSED.append(label)
    except Exception as error:  # noqa: BLE001 - every failure is reported, none stops the run
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        FAILURES.append(f"{label}: {detail}")


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def check_types(schema, types, where):
    """`schema` (pyarrow) has each column of `types` with that type (its string form; `large_`
    variants, which Polars and pandas 3 produce, and non-null list items count as the same type)."""
    for column, expected in types.items():
        expect(column in schema.names, f"{where}: no column `{column}` in {schema.names}")
        actual = str(schema.field(column).type).replace("large_", "").replace(" not null", "")
        expect(actual == expected, f"{where}: column `{column}` is {actual}, expected {expected}")


def check_messages(values, where):
    """Every cell is a list of {role, content} strings ending with the assistant's turn."""
    expect(len(values) > 0, f"{where}: no rows to check `messages` on")
    for index, messages in enumerate(values):
        messages = list(messages)
        expect(len(messages) >= 2, f"{where}: row {index}: {len(messages)} messages")
        for message in messages:
            message = dict(message)
            expect(set(message) == {"role", "content"},
                   f"{where}: row {index}: message keys {sorted(message)}")
            expect(message["role"] in ("system", "user", "assistant"),
                   f"{where}: row {index}: role {message['role']!r}")
            expect(isinstance(message["content"], str), f"{where}: row {index}: content type")
        expect(dict(messages[-1])["role"] == "assistant", f"{where}: row {index}: last role")


def check_card(output):
    """The card parses as YAML and as a huggingface_hub DatasetCard with the Hub's fields."""
    path = os.path.join(output["dir"], "README.md")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    expect(text.startswith("---\n"), f"{path}: no YAML front matter")
    front = yaml.safe_load(text.split("\n---\n", 1)[0][4:])
    unknown = set(front) - CARD_FIELDS
    expect(not unknown, f"{path}: fields the Hub does not know: {sorted(unknown)}")
    for field in ("pretty_name", "task_categories", "size_categories", "configs"):
        expect(field in front, f"{path}: no `{field}`")
    expect(set(front["size_categories"]) <= SIZE_CATEGORIES,
           f"{path}: size_categories {front['size_categories']}")
    card = huggingface_hub.DatasetCard.load(path)
    data = card.data.to_dict()
    expect(data.get("configs") == front["configs"], f"{path}: DatasetCard configs differ")
    expect(len(card.text.strip()) > 0, f"{path}: empty card body")
    for config in front["configs"]:
        for entry in config["data_files"]:
            pattern = os.path.join(output["dir"], entry["path"])
            expect(len(pl.scan_parquet(pattern).collect_schema()) > 0,
                   f"{path}: config {config['config_name']} split {entry['split']}: "
                   f"{entry['path']} names no readable file")
    if "license" in output:
        expect(front.get("license") == output["license"],
               f"{path}: license {front.get('license')!r}, expected {output['license']!r}")


def check_output(output):
    name, root = output["name"], output["dir"]
    types = output.get("types", {})
    splits = output["splits"]

    def hub_loader():
        loaded = datasets.load_dataset(root)
        expect(set(loaded) == set(splits), f"splits {sorted(loaded)}, expected {sorted(splits)}")
        for split, spec in splits.items():
            ds = loaded[split]
            expect(ds.num_rows == spec["rows"], f"{split}: {ds.num_rows} rows, expected {spec['rows']}")
            check_types(ds.data.schema, types, f"load_dataset(DIR)[{split}]")
            if output.get("messages"):
                check_messages(ds["messages"], f"load_dataset(DIR)[{split}]")
        for config, config_splits in output.get("configs", {}).items():
            extra = datasets.load_dataset(root, config)
            for split, rows in config_splits.items():
                expect(extra[split].num_rows == rows,
                       f"config {config} {split}: {extra[split].num_rows} rows, expected {rows}")

    check(f"{name}: datasets.load_dataset(DIR)", hub_loader)
    check(f"{name}: dataset card (yaml, huggingface_hub.DatasetCard)", lambda: check_card(output))

    for split, spec in splits.items():
        folder = os.path.join(root, spec["folder"])
        rows = spec["rows"]
        where = f"{name}/{spec['folder']}"

        def pandas_reader():
            frame = pd.read_parquet(folder)
            expect(len(frame) == rows, f"{len(frame)} rows, expected {rows}")
            check_types(pa.Schema.from_pandas(frame, preserve_index=False),
                        {c: t for c, t in types.items() if not t.startswith(("list", "uint"))},
                        "pandas")
            if output.get("messages"):
                check_messages(frame["messages"].tolist(), "pandas")

        def pyarrow_reader():
            dataset = pads.dataset(folder, format="parquet")
            expect(dataset.count_rows() == rows, f"{dataset.count_rows()} rows, expected {rows}")
            table = dataset.to_table()
            check_types(table.schema, types, "pyarrow.dataset")
            if output.get("messages"):
                check_messages(table.column("messages").to_pylist(), "pyarrow.dataset")

        def parquet_builder():
            loaded = datasets.load_dataset("parquet", data_dir=folder)
            expect(list(loaded) == ["train"], f"splits {list(loaded)}")
            expect(loaded["train"].num_rows == rows, f"{loaded['train'].num_rows} rows, expected {rows}")
            check_types(loaded["train"].data.schema, types, "load_dataset(parquet)")

        def polars_reader():
            frame = pl.read_parquet(os.path.join(folder, "*.parquet"))
            expect(frame.height == rows, f"{frame.height} rows, expected {rows}")
            check_types(frame.to_arrow().schema,
                        {c: t for c, t in types.items() if not t.startswith("list")}, "polars")
            if output.get("messages"):
                check_messages(frame["messages"].to_list(), "polars")

        def duckdb_reader():
            glob = os.path.join(folder, "*.parquet").replace("'", "''")
            count = duckdb.sql(f"SELECT count(*) FROM '{glob}'").fetchall()[0][0]
            expect(count == rows, f"{count} rows, expected {rows}")
            if output.get("messages"):
                roles = duckdb.sql(
                    f"SELECT DISTINCT m.role FROM (SELECT unnest(messages) AS m FROM '{glob}')"
                ).fetchall()
                expect({r[0] for r in roles} <= {"system", "user", "assistant"}, f"roles {roles}")
                kind = duckdb.sql(f"SELECT typeof(messages) FROM '{glob}' LIMIT 1").fetchall()[0][0]
                expect(kind == "STRUCT(\"role\" VARCHAR, content VARCHAR)[]"
                       or kind.replace('"', "") == "STRUCT(role VARCHAR, content VARCHAR)[]",
                       f"messages is {kind}")

        check(f"{where}: pandas.read_parquet(FOLDER)", pandas_reader)
        check(f"{where}: pyarrow.dataset.dataset(FOLDER)", pyarrow_reader)
        check(f"{where}: load_dataset('parquet', data_dir=FOLDER)", parquet_builder)
        check(f"{where}: polars.read_parquet(FOLDER/*.parquet)", polars_reader)
        check(f"{where}: duckdb FROM 'FOLDER/*.parquet'", duckdb_reader)


def check_legacy(directory):
    """A directory in the old layout (shards beside manifest.json) is what the issue saw fail."""
    def opens():
        try:
            pd.read_parquet(directory)
        except Exception:  # noqa: BLE001 - the failure is the expected outcome
            return
        raise AssertionError("pd.read_parquet opened a legacy directory: the checks are not sensitive")

    check(f"legacy {os.path.basename(directory)}: pandas refuses manifest.json beside shards", opens)


def main():
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    for output in spec["outputs"]:
        check_output(output)
    for directory in spec.get("legacy", []):
        check_legacy(directory)
    versions = {m.__name__: m.__version__ for m in (datasets, pd, pa, pl, duckdb, huggingface_hub)}
    print(f"readers: {versions}")
    for label in PASSED:
        print(f"ok   {label}")
    for failure in FAILURES:
        print(f"FAIL {failure}")
    print(f"{len(PASSED)} checks passed, {len(FAILURES)} failed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
