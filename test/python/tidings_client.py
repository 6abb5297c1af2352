"""A Python gRPC client of Tidings, generated from proto/ with grpc_tools: the test runs it.

Usage: python3 tidings_client.py HOST:PORT API_KEY
Sends the API key as gRPC metadata (authorization: Bearer <key>) with every call, and makes one
call without it. Subscribes to memory.* (server stream), publishes a memory.created event
(payload as a google.protobuf.Struct), reads it back from the stream, tries an invalid publish,
and prints what happened as one JSON object.
"""
import json
import queue
import sys
import threading

import grpc
from google.protobuf import struct_pb2

from tidings.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc


def main(address: str, api_key: str) -> None:
    channel = grpc.insecure_channel(address)
    events = event_service_pb2_grpc.EventServiceStub(channel)
    auth = [("authorization", f"Bearer {api_key}")]
    result = {}

    try:
        events.ListEventTypes(event_service_pb2.ListEventTypesRequest(), timeout=10)
        result["without_key"] = "OK"
    except grpc.RpcError as err:
        result["without_key"] = err.code().name

    types = events.ListEventTypes(event_service_pb2.ListEventTypesRequest(patterns=["memory.*"]), timeout=10, metadata=auth)
    result["memory_types"] = [t.name for t in types.event_types]

    received: "queue.Queue" = queue.Queue()
    stream = events.Subscribe(event_service_pb2.SubscribeRequest(patterns=["memory.*"]), metadata=auth)

    def read() -> None:
        try:
            for message in stream:
                received.put(message)
        except grpc.RpcError:
            pass  # cancelled at the end

    threading.Thread(target=read, daemon=True).start()
    first = received.get(timeout=10)
    result["first_message"] = first.WhichOneof("message")

    data = struct_pb2.Struct()
    data.update({"memory_id": "py-1", "tier": "hot"})
    event = event_pb2.Event(type="memory.created", source="python/test", data=data)
    event.attributes["agent"] = "python"
    published = events.Publish(event_service_pb2.PublishRequest(event=event), timeout=10, metadata=auth)
    result["published"] = {"id": published.id, "sequence": published.sequence}

    while True:
        message = received.get(timeout=10)
        if message.WhichOneof("message") == "event":
            got = message.event
            result["received"] = {
                "id": got.id,
                "type": got.type,
                "sequence": got.sequence,
                "attributes": dict(got.attributes),
                "data": json.loads(json.dumps(dict(got.data))),
                "cursor": message.cursor,
            }
            break
    stream.cancel()

    try:
        bad = event_pb2.Event(type="no.such_type", source="python/test", data=data)
        events.Publish(event_service_pb2.PublishRequest(event=bad), timeout=10, metadata=auth)
        result["error"] = None
    except grpc.RpcError as err:
        result["error"] = {"code": err.code().name, "details": err.details()}

    print(json.dumps(result))
    channel.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
