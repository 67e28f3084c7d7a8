"""Bob's notebook: a point-in-time-correct training set from larder's Arrow
Flight endpoint (`larder offline serve`), straight into pandas.

    pip install pyarrow pandas
    LARDER_TOKEN_FILE=/var/run/secrets/larder/token \
    python flight_training_set.py --location grpc://larder-offline.kubeflow.svc:6571 \
        --features kubeflow-alice/driver_daily_stats:acc_rate \
        --entities entities.csv [--namespace kubeflow-bob] [--out training.parquet]

The entity file holds the join keys and `event_timestamp` (RFC 3339, UTC).
The token comes from $LARDER_TOKEN or the file named by $LARDER_TOKEN_FILE
(the PodDefault in deploy/rbac mounts one), as for every larder client.
"""

import argparse
import csv
import json
import os

import pyarrow.flight as flight
import pyarrow.parquet as pq


def bearer_token():
    token = os.environ.get("LARDER_TOKEN", "").strip()
    if not token and os.environ.get("LARDER_TOKEN_FILE"):
        with open(os.environ["LARDER_TOKEN_FILE"]) as f:
            token = f.read().strip()
    return token


def read_entities(path):
    """Entity rows as columns; join keys that look like integers are sent as
    integers, everything else as text."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {name: [] for name in (rows[0].keys() if rows else [])}
    for row in rows:
        for name, value in row.items():
            columns[name].append(
                int(value) if name != "event_timestamp" and value.lstrip("-").isdigit() else value
            )
    return columns


def training_set(location, features, entities, namespace=None, token=None):
    """The training set as a pyarrow Table."""
    request = {"features": features, "entities": entities}
    if namespace:
        request["namespace"] = namespace
    headers = []
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    client = flight.FlightClient(location)
    reader = client.do_get(
        flight.Ticket(json.dumps(request).encode()),
        flight.FlightCallOptions(headers=headers),
    )
    return reader.read_all()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--location", default=os.environ.get("LARDER_FLIGHT", "grpc://127.0.0.1:6571"))
    parser.add_argument("--features", nargs="+", required=True)
    parser.add_argument("--entities", required=True)
    parser.add_argument("--namespace")
    parser.add_argument("--out", help="also write the table to this Parquet file")
    args = parser.parse_args()

    table = training_set(
        args.location, args.features, read_entities(args.entities), args.namespace, bearer_token()
    )
    if args.out:
        pq.write_table(table, args.out)
    frame = table.to_pandas()
    print(frame.to_string(max_rows=20))


if __name__ == "__main__":
    main()
