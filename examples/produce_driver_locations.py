"""Charlie's stream: the current location of each driver, as JSON messages
on Kafka topic `driver-locations`, one message per driver per tick.

    python examples/produce_driver_locations.py --bootstrap 127.0.0.1:9092

Each message is {"driver_id", "lat", "lon", "event_timestamp"}; the event
timestamp is the time of the tick (UTC, RFC 3339 with microseconds), so every
(driver, event_timestamp) is distinct. Drivers wander around Athens. The
message key is the driver id, so one driver's messages stay in order on one
partition.

`larder ingest --source driver_locations_stream -n kubeflow-charlie` reads
them (see docs/INGEST.md). Needs kafka-python (`pip install kafka-python`).
"""

import argparse
import datetime as dt
import json
import random
import sys
import time

from kafka import KafkaProducer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    p.add_argument("--topic", default="driver-locations")
    p.add_argument("--drivers", type=int, default=5, help="how many drivers")
    p.add_argument("--first-driver", type=int, default=1001, help="id of the first driver")
    p.add_argument("--ticks", type=int, default=0, help="ticks to send (0: until interrupted)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)

    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap.split(","),
        key_serializer=lambda k: str(k).encode(),
        value_serializer=lambda v: json.dumps(v).encode(),
        acks="all",
    )
    rng = random.Random(args.seed)
    drivers = list(range(args.first_driver, args.first_driver + args.drivers))
    where = {d: (37.98 + rng.uniform(-0.05, 0.05), 23.73 + rng.uniform(-0.05, 0.05)) for d in drivers}
    sent = 0
    tick = 0
    try:
        while args.ticks == 0 or tick < args.ticks:
            now = dt.datetime.now(dt.timezone.utc)
            for d in drivers:
                lat, lon = where[d]
                lat += rng.uniform(-0.001, 0.001)
                lon += rng.uniform(-0.001, 0.001)
                where[d] = (lat, lon)
                producer.send(
                    args.topic,
                    key=d,
                    value={
                        "driver_id": d,
                        "lat": round(lat, 6),
                        "lon": round(lon, 6),
                        "event_timestamp": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                    },
                )
                sent += 1
            tick += 1
            if args.ticks == 0 or tick < args.ticks:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush()
        producer.close()
    print(f"sent {sent} messages to {args.topic}", file=sys.stderr)


if __name__ == "__main__":
    main()
