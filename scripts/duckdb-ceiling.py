#!/usr/bin/env python3
"""How fast DuckDB itself takes records into Butterfly's `records` table on this machine.

Makes 1,000,000 post-like rows in a temporary table, then copies them into a fresh `records`
table with `INSERT ... SELECT` in transactions of a given size, and prints rows/s, the final
checkpoint included. Six ways: with the table's two indexes kept up to date; with no index at
all; with no index during the load and both built afterwards; with the `rid` index alone; with
a BIGINT repo id column indexed in place of `did` (what a schema without the VARCHAR index would
pay); and as the store writes, with both indexes and two `links` rows per record (a real
backfill writes about 1.9) in the same transaction, `links (rid)` indexed. The `rid` values are
laid out as the store's are (the high 40 bits from the repo, 40 records per repo), which keeps
index upkeep cheap. No Butterfly code runs: this is the ceiling a backfill into DuckDB can
approach.
Needs `pip install duckdb==1.5.6`.

Usage: scripts/duckdb-ceiling.py [ROWS]
"""
import os
import sys
import tempfile
import time

import duckdb

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
INDEXES = ["CREATE INDEX records_did ON records (did)", "CREATE INDEX records_rid ON records (rid)"]
RID_ONLY = INDEXES[1:]
REPO_ID = ["CREATE INDEX records_repo ON records (repo)", INDEXES[1]]


def run(label, indexes, batch_rows, folder, late_indexes=(), repo_column=False, links=False):
    path = os.path.join(folder, f"ceiling-{label}-{batch_rows}.duckdb")
    con = duckdb.connect(path)
    con.execute("SET checkpoint_threshold = '256MB'")
    con.execute(
        "CREATE TABLE records (did VARCHAR NOT NULL, collection VARCHAR NOT NULL, "
        "rkey VARCHAR NOT NULL, cid VARCHAR NOT NULL, rev VARCHAR NOT NULL, record JSON NOT NULL, "
        "indexed_at TIMESTAMPTZ NOT NULL, rid BIGINT NOT NULL"
        + (", repo BIGINT NOT NULL)" if repo_column else ")")
    )
    for statement in indexes:
        con.execute(statement)
    if links:
        con.execute(
            "CREATE TABLE links (target VARCHAR NOT NULL, did VARCHAR NOT NULL, "
            "collection VARCHAR NOT NULL, rkey VARCHAR NOT NULL, path VARCHAR NOT NULL, "
            "rid BIGINT NOT NULL)"
        )
        con.execute("CREATE INDEX links_rid ON links (rid)")
    con.execute(
        f"""CREATE TEMP TABLE source AS SELECT
          'did:plc:' || md5((i // 40)::VARCHAR)[:24] AS did, 'app.bsky.feed.post' AS collection,
          '3l' || md5(i::VARCHAR)[:11] AS rkey, 'bafyrei' || md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS cid,
          '3labcdefghijk' AS rev,
          '{{"$type":"app.bsky.feed.post","text":"' || md5(i::VARCHAR) || repeat(' hello world', 15)
            || '","createdAt":"2024-01-01T00:00:00.000Z"}}' AS record,
          now() AS indexed_at, (((hash(i // 40) >> 25) << 24) | (hash(i) & 16777215))::BIGINT AS rid,
          {"(hash(i // 40) >> 25)::BIGINT AS repo," if repo_column else ""} i // {batch_rows} AS part
        FROM range({ROWS}) t(i)"""
    )
    parts = con.execute("SELECT max(part) + 1 FROM source").fetchone()[0]
    started = time.time()
    for part in range(parts):
        con.execute("BEGIN")
        con.execute(f"INSERT INTO records SELECT * EXCLUDE (part) FROM source WHERE part = {part}")
        if links:
            con.execute(
                "INSERT INTO links SELECT 'at://' || did || '/app.bsky.feed.post/' || rkey || l::VARCHAR, "
                "did, collection, rkey, CASE l WHEN 0 THEN 'reply.root.uri' ELSE 'reply.parent.uri' END, rid "
                f"FROM source, range(2) r(l) WHERE part = {part}"
            )
        con.execute("COMMIT")
    loaded = time.time()
    for statement in late_indexes:
        con.execute(statement)
    indexed = time.time()
    con.execute("CHECKPOINT")
    done = time.time()
    con.close()
    seconds = done - started
    print(
        f"{label:>14}  {batch_rows:>9,} rows per transaction  {ROWS / seconds:>10,.0f} rows/s"
        f"  (load {loaded - started:.2f} s, index {indexed - loaded:.2f} s,"
        f" checkpoint {done - indexed:.2f} s)",
        flush=True,
    )


with tempfile.TemporaryDirectory() as folder:
    for batch_rows in (50_000, 245_760):
        run("indexes", INDEXES, batch_rows, folder)
        run("no index", [], batch_rows, folder)
        run("indexes after", [], batch_rows, folder, late_indexes=INDEXES)
        run("rid only", RID_ONLY, batch_rows, folder)
        run("repo id + rid", REPO_ID, batch_rows, folder, repo_column=True)
        run("store + links", INDEXES, batch_rows, folder, links=True)
