"""An AMQP application for Junebug: answers every inbound message with an echo.

Usage: python amqp_echo_app.py QUEUE [HOST] [PORT] [EVENTS]
QUEUE is the channel's amqp_queue; with EVENTS, stop after that many events.
"""

import json
import sys
import uuid
from datetime import UTC, datetime

import pika

QUEUE = sys.argv[1]  # the channel's amqp_queue
HOST = sys.argv[2] if len(sys.argv) > 2 else "localhost"
PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 5672
EVENTS = int(sys.argv[4]) if len(sys.argv) > 4 else None

connection = pika.BlockingConnection(pika.ConnectionParameters(HOST, PORT))
channel = connection.channel()

# Declare and bind our queues on Junebug's exchange.
channel.exchange_declare("vumi", exchange_type="direct", durable=True)
for kind in ("inbound", "event", "outbound"):
    name = f"{QUEUE}.{kind}"
    channel.queue_declare(name, durable=True)
    channel.queue_bind(name, "vumi", routing_key=name)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def on_inbound(ch, method, properties, body):
    message = json.loads(body)
    if message["session_event"] != "close" and message["content"] is not None:
        reply = {
            "message_version": "20110921",
            "message_type": "user_message",
            "message_id": uuid.uuid4().hex,
            "timestamp": now(),
            "to_addr": message["from_addr"],
            "from_addr": message["to_addr"],
            "in_reply_to": message["message_id"],
            "session_event": None,  # null: keep the session going; "close" ends it
            "content": f"you said: {message['content']}",
            "transport_name": message["transport_name"],
            "transport_type": message["transport_type"],
            "transport_metadata": message["transport_metadata"],
            "helper_metadata": {},
            "routing_metadata": {},
        }
        ch.basic_publish(
            "vumi",
            f"{QUEUE}.outbound",
            json.dumps(reply),
            pika.BasicProperties(delivery_mode=2),  # persistent
        )
    ch.basic_ack(method.delivery_tag)  # after handling: redelivered if we crash first


events_seen = 0


def on_event(ch, method, properties, body):
    global events_seen
    event = json.loads(body)
    print(event["event_type"], "for", event["user_message_id"], flush=True)
    ch.basic_ack(method.delivery_tag)
    events_seen += 1
    if EVENTS is not None and events_seen >= EVENTS:
        ch.stop_consuming()


channel.basic_qos(prefetch_count=20)
channel.basic_consume(f"{QUEUE}.inbound", on_inbound)
channel.basic_consume(f"{QUEUE}.event", on_event)
channel.start_consuming()
connection.close()
