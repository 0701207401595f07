"""A chat turn's attachments fill a flow's start variables of type file (nodes/start.py with_files/chat_files)."""

from __future__ import annotations

from typecase.server.flow.nodes.start import chat_files, run_inputs, with_files

STORED = [
    {"name": "a.txt", "mime_type": "text/plain", "size_bytes": "12", "url": "object:chat/s/1/a.txt"},
    {"name": "b.png", "mimeType": "image/png", "url": "https://example.com/b.png"},
    {"name": "c.pdf", "mime_type": "application/pdf", "file_id": "F1"},
]


def test_file_variables_take_the_attachments_in_order_and_a_list_variable_takes_the_rest():
    files = chat_files(STORED)
    assert files[0] == {
        "name": "a.txt",
        "mime_type": "text/plain",
        "size_bytes": 12,
        "url": "object:chat/s/1/a.txt",
        "file_id": "",
    }
    assert files[1]["mime_type"] == "image/png" and files[2]["file_id"] == "F1"
    params = {
        "variables": [
            {"name": "question"},
            {"name": "first", "type": "file"},
            {"name": "label", "type": "text"},
            {"name": "rest", "type": "file", "list": True},
        ]
    }
    inputs = run_inputs(params, with_files(params, {"question": "q"}, files))
    assert inputs["first"]["name"] == "a.txt"
    assert [f["name"] for f in inputs["rest"]] == ["b.png", "c.pdf"]
    assert inputs["label"] == "" and len(inputs["files"]) == 3


def test_a_value_the_caller_gave_is_kept_and_no_attachments_change_nothing():
    params = {"variables": [{"name": "doc", "type": "file"}, {"name": "other", "type": "file"}]}
    inputs = with_files(params, {"doc": "F9"}, chat_files(STORED[:1]))
    assert inputs["doc"] == "F9" and inputs["other"]["name"] == "a.txt"
    assert with_files(params, {"question": "q"}, []) == {"question": "q"}
