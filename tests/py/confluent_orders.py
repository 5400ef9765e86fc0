"""Produces orders with an unmodified Confluent client: SchemaRegistryClient against
custflow's registry endpoints and AvroSerializer with its own (smaller, compatible)
Order schema. Usage: python confluent_orders.py REGISTRY_URL BROKERS TOPIC N"""
import json
import sys
import time

from confluent_kafka import SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import StringSerializer

registry, brokers, topic, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
schema = json.dumps({
    "type": "record", "name": "Order", "namespace": "io.custflow",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "order_id", "type": "string"},
        {"name": "customer_id", "type": "string"},
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "status", "type": {"type": "enum", "name": "OrderStatus", "symbols": ["placed", "refunded", "cancelled"]}},
        {"name": "currency", "type": "string"},
        {"name": "total", "type": "double"},
    ],
})
client = SchemaRegistryClient({"url": registry})
producer = SerializingProducer({
    "bootstrap.servers": brokers,
    "enable.idempotence": True,
    "key.serializer": StringSerializer(),
    "value.serializer": AvroSerializer(client, schema),
})
now = int(time.time() * 1000)
failed = []
for i in range(n):
    producer.produce(
        topic,
        key=f"py-{i % 10}",
        value={"event_id": f"py-{i}", "order_id": f"py-o-{i}", "customer_id": f"py-{i % 10}",
               "occurred_at": now - 86_400_000 * (i // 10) - 1000, "status": "placed",
               "currency": "EUR", "total": 10.0 + i},
        on_delivery=lambda err, msg: failed.append(err) if err else None,
    )
producer.flush(30)
registered = client.get_latest_version(f"{topic}-value")
print(json.dumps({"produced": n, "failed": len(failed), "schema_id": registered.schema_id, "version": registered.version}))
