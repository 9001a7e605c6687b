"""Produce records with librdkafka (confluent-kafka), as a stock producer would.

Reads one record value per line from stdin, produces each to the given topic
and partition with the given compression codec, waits for every delivery
report, and prints {"<partition>": <next offset>} as JSON. Used by
tests/it/librdkafka.rs; the venv comes from `scripts/stack.sh up`.
"""

import argparse
import json
import sys

from confluent_kafka import Producer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partition", type=int, required=True)
    parser.add_argument("--compression", default="none")
    args = parser.parse_args()

    producer = Producer(
        {
            "bootstrap.servers": args.brokers,
            "compression.type": args.compression,
            "linger.ms": 20,
            "batch.num.messages": 500,
        }
    )
    next_offset = {}
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))
            return
        p = str(msg.partition())
        next_offset[p] = max(next_offset.get(p, 0), msg.offset() + 1)

    for line in sys.stdin.buffer:
        value = line.rstrip(b"\n")
        while True:
            try:
                producer.produce(args.topic, value, partition=args.partition, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(30)
    if errors or left:
        print(f"delivery failed: {errors[:3]} ({left} undelivered)", file=sys.stderr)
        return 1
    print(json.dumps(next_offset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
