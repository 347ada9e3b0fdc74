"""A load of mixed dashboard queries from many concurrent clients, with a memory hog beside them.

Usage: load_client.py grpc://HOST:PORT http://HOST:PORT TOKEN SECONDS ADBC_CLIENTS HTTP_CLIENTS
Each ADBC client (the unmodified Go Flight SQL driver, as Grafana's data source uses) has its
own connection and runs the mix in a loop — statements, prepared statements with parameters,
metadata — and each HTTP client posts to /api/v1/sql; one more client repeatedly runs a
query that needs more memory than limits.max_query_memory_mb. Prints one JSON line: queries
run per client kind, every error (there should be none), and the hog's outcomes.
"""
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql

MIX = [
    ("count", "SELECT count(*) FROM raw.telemetry", None),
    ("per_service", "SELECT service, count(*), avg(value) FROM raw.telemetry GROUP BY 1 ORDER BY 1", None),
    ("grafana_buckets",
     "SELECT date_bin(INTERVAL '1 minute', ts) AS time, service, avg(value) AS v FROM raw.telemetry "
     "WHERE metric = 'cpu_pct' AND ts >= TIMESTAMP '2025-11-27T00:00:00Z' "
     "AND ts < TIMESTAMP '2025-11-27T00:00:00Z' + INTERVAL '6 hours' GROUP BY 1, 2 ORDER BY 1", None),
    ("percentiles",
     "SELECT service, approx_percentile_cont(value, 0.95) AS p95, max(value) FROM raw.telemetry GROUP BY 1", None),
    ("top_hosts",
     "SELECT host, sum(CASE WHEN value > 90 THEN 1 ELSE 0 END) AS hot FROM raw.telemetry GROUP BY 1 ORDER BY 2 DESC LIMIT 10", None),
    ("prepared", "SELECT count(*) FROM raw.telemetry WHERE service = ? AND value > ?", ("svc-3", 50.0)),
    ("last_rows", "SELECT * FROM raw.telemetry ORDER BY ts DESC LIMIT 100", None),
]

HOG = ("SELECT count(*) FROM generate_series(1, 20000000) a "
       "JOIN generate_series(1, 20000000) b ON a.value = b.value")

lock = threading.Lock()
ran = {"adbc": 0, "http": 0, "metadata": 0}
errors = []
hog = {"resource_exhausted": 0, "other": []}


def adbc_client(uri, token, deadline, i):
    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {token}"}
    try:
        with flightsql.connect(uri, db_kwargs=kwargs) as conn:
            n = i
            while time.time() < deadline:
                name, sql, params = MIX[n % len(MIX)]
                n += 1
                try:
                    if n % 25 == 0:
                        conn.adbc_get_objects(depth="columns").read_all()
                        with lock:
                            ran["metadata"] += 1
                        continue
                    with conn.cursor() as cur:
                        cur.execute(sql, params)
                        cur.fetchall()
                    with lock:
                        ran["adbc"] += 1
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    with lock:
                        errors.append(f"adbc {name}: {str(e).splitlines()[0]}")
    except Exception as e:  # noqa: BLE001
        with lock:
            errors.append(f"adbc connect: {e}")


def http_client(url, token, deadline, i):
    n = i
    while time.time() < deadline:
        name, sql, params = MIX[n % len(MIX)]
        n += 1
        body = json.dumps({"sql": sql, "params": list(params or [])}).encode()
        req = urllib.request.Request(
            f"{url}/api/v1/sql", data=body, method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                json.loads(r.read())
            with lock:
                ran["http"] += 1
        except urllib.error.HTTPError as e:
            with lock:
                errors.append(f"http {name}: {e.code} {e.read()[:300]!r}")
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"http {name}: {e}")


def hog_client(uri, token, deadline):
    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {token}"}
    with flightsql.connect(uri, db_kwargs=kwargs) as conn:
        while time.time() < deadline:
            try:
                with conn.cursor() as cur:
                    cur.execute(HOG)
                    cur.fetchall()
                with lock:
                    hog["other"].append("succeeded")
            except Exception as e:  # noqa: BLE001
                text = str(e)
                with lock:
                    if re.search(r"ResourceExhausted", text) and "max_query_memory_mb" in text:
                        hog["resource_exhausted"] += 1
                    else:
                        hog["other"].append(text.splitlines()[0])
            time.sleep(2)


def main(uri, url, token, seconds, n_adbc, n_http):
    deadline = time.time() + float(seconds)
    threads = [threading.Thread(target=adbc_client, args=(uri, token, deadline, i)) for i in range(int(n_adbc))]
    threads += [threading.Thread(target=http_client, args=(url, token, deadline, i)) for i in range(int(n_http))]
    threads.append(threading.Thread(target=hog_client, args=(uri, token, deadline)))
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"ran": ran, "errors": errors[:50], "error_count": len(errors), "hog": hog,
                      "seconds": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main(*sys.argv[1:7])
