"""What the NUL-text request check (server/rpc/nul_text.py) costs on large requests, beside what every call pays
anyway to build the same request: protobuf parsing of its wire bytes (gRPC) and JSON decoding of its proto3 JSON
(the REST gateway: json.loads + jsonmap), all measured interleaved.

Cases: a flow graph of N nodes with Struct params (many small fields: the walk's worst case), 100 message pairs of
200,000 characters each (few large strings: memchr), and a 4 MiB upload chunk (bytes: not walked).

    .venv/bin/python bench/rpc/nul_text.py [--nodes 500] [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from google.protobuf import json_format

from typecase.server.gateway import jsonmap
from typecase.server.rpc.nul_text import nul_field
from typecase.v1 import chat_pb2, flow_pb2, knowledge_pb2


def flow_request(nodes: int) -> flow_pb2.CreateFlowRequest:
    graph = {
        "nodes": [
            {
                "id": f"n{i}",
                "type": "NODE_TYPE_PROMPT",
                "name": f"node {i}",
                "params": {
                    "template": "Answer {{start.question}} " * 4,
                    "model_id": "m",
                    "temperature": 0.2,
                    "stop": ["a", "b", "c"],
                    "vars": {f"v{j}": f"value {j}" for j in range(8)},
                },
                "position": {"x": i, "y": i},
            }
            for i in range(nodes)
        ],
        "edges": [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(nodes - 1)],
    }
    return json_format.ParseDict(
        {"flow": {"name": "big", "description": "d" * 1000, "graph": graph}}, flow_pb2.CreateFlowRequest()
    )


def pairs_request() -> chat_pb2.AddMessagesRequest:
    text = "lorem ipsum dolor sit amet " * 7_500  # ~200,000 characters
    return chat_pb2.AddMessagesRequest(
        session_id="s", pairs=[chat_pb2.MessagePair(question=text, answer=text) for _ in range(100)]
    )


def upload_chunk() -> knowledge_pb2.UploadFileRequest:
    return knowledge_pb2.UploadFileRequest(kb_id="kb", file_name="a.pdf", chunk=bytes(4 * 1024 * 1024))


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure(name: str, message, rounds: int) -> dict:
    wire = message.SerializeToString()
    text = json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True))
    cls = type(message)
    check, parse, decode = [], [], []
    for _ in range(rounds):  # interleaved: the VM's speed drifts
        check += timed(lambda: nul_field(message), 1)
        parse += timed(lambda: cls.FromString(wire), 1)
        decode += timed(lambda: jsonmap.from_json(json.loads(text), cls()), 1)
    row = {
        "case": name,
        "bytes": len(wire),
        "check_us": statistics.median(check) * 1e6,
        "parse_us": statistics.median(parse) * 1e6,
        "decode_us": statistics.median(decode) * 1e6,
    }
    row["vs_parse"] = row["check_us"] / row["parse_us"]
    row["vs_decode"] = row["check_us"] / row["decode_us"]
    return row


def main(args: argparse.Namespace) -> list[dict]:
    rows = [
        measure(f"flow graph, {args.nodes} nodes", flow_request(args.nodes), args.rounds),
        measure("100 pairs x 200k chars", pairs_request(), args.rounds),
        measure("4 MiB upload chunk", upload_chunk(), args.rounds),
    ]
    print(
        f"{'request':<26}{'wire bytes':>11}{'check µs':>10}{'gRPC parse':>11}{'JSON decode':>12}"
        f"{'check/parse':>12}{'check/decode':>13}"
    )
    for r in rows:
        print(
            f"{r['case']:<26}{r['bytes']:>11}{r['check_us']:>10.0f}{r['parse_us']:>11.0f}{r['decode_us']:>12.0f}"
            f"{r['vs_parse']:>12.2f}{r['vs_decode']:>13.2f}"
        )
    return rows


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=30)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse())
