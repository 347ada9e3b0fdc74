"""The client side of `sakura-bench serve`: the dashboard suite through the unmodified ADBC
Flight SQL driver and through DuckDB in-process over the same Parquet files, then a large result
streamed to pyarrow.flight against pyarrow reading the same Parquet files locally, and against
the same rows served from memory by pyarrow's own Flight server (the client path's ceiling here).

Usage: serve_client.py grpc://HOST:PORT DATA_DIR RUNS THREADS OUT_JSON DAY_START_US [QUERY...]
Progress goes to stdout; the measurements to OUT_JSON. Each query runs once to warm up, then
RUNS times on each side; the medians are reported. Our side makes the calls Grafana's data
source makes with the same Go Flight SQL client (ADBC's statement API: GetFlightInfo, DoGet). The SQL is the same text on both sides; only
timestamp literals are spelled in each dialect (TIMESTAMP '…Z' / TIMESTAMPTZ '…+00').
"""
import datetime as dt
import decimal
import glob
import json
import math
import statistics
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq


def suite(day_start_us: int):
    day = dt.datetime.fromtimestamp(day_start_us / 1e6, dt.timezone.utc)
    end = day + dt.timedelta(days=1)

    def at(t):
        return "{ts:" + t.strftime("%Y-%m-%d %H:%M:%S") + "}"

    start, end_, h1, h6, m5 = (at(day), at(end), at(end - dt.timedelta(hours=1)),
                               at(end - dt.timedelta(hours=6)), at(end - dt.timedelta(minutes=5)))
    return [
        ("last_5m_per_host",
         f"SELECT host, avg(value) AS avg_v, max(value) AS max_v, count(*) AS n FROM raw.telemetry "
         f"WHERE metric = 'cpu_pct' AND ts >= {m5} AND ts < {end_} GROUP BY host ORDER BY host"),
        ("grafana_minute_buckets_1h",
         f"SELECT date_trunc('minute', ts) AS time, service, avg(value) AS cpu FROM raw.telemetry "
         f"WHERE metric = 'cpu_pct' AND ts >= {h1} AND ts < {end_} GROUP BY 1, 2 ORDER BY 1, 2"),
        ("p95_p50_per_service_hourly_day",
         f"SELECT date_trunc('hour', ts) AS hour, service, quantile_cont(value, 0.95) AS p95, "
         f"quantile_cont(value, 0.5) AS p50 FROM raw.telemetry "
         f"WHERE metric = 'latency_ms' AND ts >= {start} AND ts < {end_} GROUP BY 1, 2 ORDER BY 1, 2"),
        ("metric_stats_by_region",
         "SELECT region, metric, count(*) AS n, avg(value) AS avg_v, min(value) AS min_v, "
         "max(value) AS max_v, stddev(value) AS sd FROM raw.telemetry GROUP BY 1, 2 ORDER BY 1, 2"),
        ("top10_hosts_peak_cpu_day",
         "SELECT host, max(value) AS peak FROM raw.telemetry WHERE metric = 'cpu_pct' "
         "GROUP BY host ORDER BY peak DESC, host LIMIT 10"),
        ("top3_hosts_per_service_mem",
         "SELECT service, host, avg_v FROM (SELECT service, host, avg(value) AS avg_v, "
         "row_number() OVER (PARTITION BY service ORDER BY avg(value) DESC) AS rn "
         "FROM raw.telemetry WHERE metric = 'mem_pct' GROUP BY service, host) t "
         "WHERE rn <= 3 ORDER BY service, avg_v DESC"),
        ("distinct_hosts_per_service",
         "SELECT service, count(DISTINCT host) AS hosts FROM raw.telemetry GROUP BY 1 ORDER BY 1"),
        ("last_seen_per_host",
         "SELECT host, max(ts) AS last_seen FROM raw.telemetry GROUP BY host ORDER BY host"),
        ("host_drilldown_1h",
         f"SELECT ts, metric, value FROM raw.telemetry WHERE host = 'web-000' AND ts >= {h1} "
         f"ORDER BY ts DESC LIMIT 500"),
        ("count_rows",
         "SELECT count(*) AS n FROM raw.telemetry"),
        ("top_hosts_by_error_rate",
         "SELECT host, count(*) AS lines, avg(CASE WHEN level = 'ERROR' THEN 1.0 ELSE 0.0 END) "
         "AS error_rate FROM raw.logs GROUP BY host ORDER BY error_rate DESC, host LIMIT 10"),
        ("log_search_timeout_6h",
         f"SELECT service, count(*) AS n FROM raw.logs WHERE message LIKE '%timeout%' "
         f"AND ts >= {h6} GROUP BY 1 ORDER BY 1"),
        ("errors_in_deploy_minutes_join",
         "SELECT e.module_id, count(*) AS errors FROM raw.events e JOIN raw.logs l "
         "ON l.service = e.module_id AND date_trunc('minute', l.ts) = date_trunc('minute', e.ts) "
         "WHERE e.event_type = 'module.deployed' AND l.level = 'ERROR' GROUP BY 1 ORDER BY 1"),
        ("error_logs_of_hot_hosts_join",
         "SELECT l.host, count(*) AS errors FROM raw.logs l JOIN (SELECT host FROM raw.telemetry "
         "WHERE metric = 'cpu_pct' GROUP BY host HAVING max(value) > 999) h ON l.host = h.host "
         "WHERE l.level = 'ERROR' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"),
        ("events_per_type_hour",
         "SELECT date_trunc('hour', ts) AS hour, event_type, count(*) AS n FROM raw.events "
         "GROUP BY 1, 2 ORDER BY 1, 2"),
    ]


def render(sql: str, dialect: str) -> str:
    out, rest = "", sql
    while "{ts:" in rest:
        pre, _, tail = rest.partition("{ts:")
        value, _, rest = tail.partition("}")
        lit = f"TIMESTAMP '{value.replace(' ', 'T')}Z'" if dialect == "df" \
            else f"TIMESTAMPTZ '{value}+00'"
        out += pre + lit
    return out + rest


def same_result(ours, theirs):
    """Whether two results hold the same rows, in any order: floats equal to a relative 1e-9
    (the engines sum in different orders), timestamps as instants (the engines spell the UTC
    zone differently), decimals as floats (DuckDB types `1.0` as one)."""
    def value(v):
        if isinstance(v, decimal.Decimal):
            return float(v)
        if isinstance(v, dt.datetime):
            return v.timestamp()
        return v

    def rows(table):
        out = [tuple(value(v) for v in row.values()) for row in table.to_pylist()]
        # Sorted on floats cut to 6 significant digits, so summation noise does not reorder.
        return sorted(out, key=lambda r: repr(tuple(
            f"{v:.6g}" if isinstance(v, float) else v for v in r)))

    def close(a, b):
        if isinstance(a, float) and isinstance(b, float):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        return a == b

    a, b = rows(ours), rows(theirs)
    return len(a) == len(b) and all(
        len(x) == len(y) and all(close(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


def timed(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), rows


PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def field_bytes(number, value):
    return varint((number << 3) | 2) + varint(len(value)) + value


def statement(sql):
    body = field_bytes(1, sql.encode())
    return field_bytes(1, (PREFIX + "CommandStatementQuery").encode()) + field_bytes(2, body)


class MemoryServer(flight.FlightServerBase):
    """A pyarrow Flight server answering every DoGet with one in-memory table."""

    def __init__(self, table):
        super().__init__("grpc://127.0.0.1:0")
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def client_ceiling(table, runs):
    """The same rows streamed to the same client by a server that does no work (pyarrow's own
    Flight server, the table already in memory, in this process): what this machine's client
    path reaches with nothing to decode. Returns (median s, Arrow bytes received)."""
    server = MemoryServer(table)
    threading.Thread(target=server.serve, daemon=True).start()
    client = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
    got = {}

    def fetch():
        got["t"] = client.do_get(flight.Ticket(b"all")).read_all()
        return got["t"].nbytes

    try:
        s, _ = timed(fetch, runs)
    finally:
        server.shutdown()
    return s, got["t"].nbytes


def main(uri, data, runs, threads, out_json, day_start_us, *only):
    runs, threads = int(runs), int(threads)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA raw")
    for t in ("telemetry", "logs", "events"):
        con.execute(f"CREATE VIEW raw.{t} AS SELECT * FROM read_parquet("
                    f"'{data}/raw/{t}/**/*.parquet', hive_partitioning = true)")
    results = []
    with flightsql.connect(uri) as conn:
        for name, sql in suite(int(day_start_us)):
            if only and name not in only:
                continue

            def ours():
                # The calls Grafana's Flight SQL data source makes (the same Go client):
                # GetFlightInfo(CommandStatementQuery), then DoGet. (DB-API's cursor.execute
                # would first prepare the statement: two more round trips.)
                with conn.cursor() as cur:
                    cur.adbc_statement.set_sql_query(render(sql, "df"))
                    handle, _ = cur.adbc_statement.execute_query()
                    return pa.RecordBatchReader._import_from_c(handle.address).read_all()

            def theirs():
                return con.sql(render(sql, "duckdb")).to_arrow_table()

            s, table = timed(ours, runs)
            d, dtable = timed(theirs, runs)
            rows, drows = table.num_rows, dtable.num_rows
            if rows == 0 and drows == 0:
                # Every query of the suite selects rows of the generated day: none means its
                # time range missed them, and its timing would compare two empty scans.
                sys.exit(f"{name} returned no rows on either side: its time range misses the "
                         f"generated rows (day starting {day_start_us} us)")
            same = same_result(table, dtable)
            results.append({"name": name, "sakura_s": s, "duckdb_s": d, "rows": rows,
                            "same_result": same})
            print(f"  {name}: sakura {s:.3f} s, duckdb {d:.3f} s, {s / d:.2f}x, rows {rows}"
                  + ("" if same else f" (RESULTS DIFFER; DuckDB: {drows} rows)"), flush=True)

    stream = None
    if not only or "stream" in only:
        client = flight.FlightClient(uri)
        cmd = statement("SELECT * FROM raw.telemetry")
        fetched = {}

        def over_flight():
            info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd))
            table = client.do_get(info.endpoints[0].ticket).read_all()
            fetched["t"] = table
            return table.num_rows

        files = glob.glob(f"{data}/raw/telemetry/**/*.parquet", recursive=True)

        def local():
            table = pq.read_table(files, use_threads=True)
            fetched["l"] = table
            return table.num_rows

        pa.set_cpu_count(threads)
        pa.set_io_thread_count(threads)
        f_s, rows = timed(over_flight, runs)
        l_s, lrows = timed(local, runs)
        c_s, c_bytes = client_ceiling(fetched["l"], runs)
        stream = {"rows": rows, "bytes": fetched["t"].nbytes, "local_bytes": fetched["l"].nbytes,
                  "flight_s": f_s, "local_s": l_s, "local_rows": lrows,
                  "ceiling_s": c_s, "ceiling_bytes": c_bytes}
        print(f"  stream: flight {f_s:.2f} s ({fetched['t'].nbytes / f_s / 1e9:.2f} GB/s), "
              f"local parquet {l_s:.2f} s ({fetched['l'].nbytes / l_s / 1e9:.2f} GB/s), "
              f"rows {rows}/{lrows}, pyarrow Flight server from memory {c_s:.2f} s "
              f"({c_bytes / c_s / 1e9:.2f} GB/s)", flush=True)
    with open(out_json, "w") as f:
        json.dump({"queries": results, "stream": stream}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
