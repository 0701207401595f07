"""Issue 24 item 4: every start prints a short banner saying where the console, the admin key, the docs, the
OpenAI-compatible API and gRPC are; TYPECASE_ADMIN_PASSWORD gives the admin a password for the console."""

from __future__ import annotations

import httpx

from tests.conftest import ADMIN_KEY


def banner_of(output: str) -> dict[str, str]:
    lines = output[output.rindex("Typecase is ready.") :].splitlines()[1:]
    rows = {}
    for line in lines:
        if not line.startswith("  "):
            break
        name, _, value = line.strip().partition("  ")
        rows[name] = value.strip()
    return rows


def test_every_start_prints_where_things_are(server_factory, tmp_path):
    server = server_factory(name="first")
    del server.env["TYPECASE_ADMIN_API_KEY"]  # a newcomer's start: the key is generated and kept in the data dir
    server.start().wait_ready()
    key_file = tmp_path / "first" / "admin_api_key"
    key = key_file.read_text().strip()
    first = banner_of(server.output())
    http = f"http://127.0.0.1:{server.http_port}"
    assert first["Admin key"] == str(key_file)
    assert first["API docs"].startswith(f"{http}/docs")
    assert first["OpenAI API"].startswith(f"{http}/openai/v1")
    assert first["gRPC"].startswith(f"127.0.0.1:{server.grpc_port}")
    assert first["Console"].startswith(f"{http}/")
    assert "TYPECASE_ADMIN_PASSWORD" in first["Sign in"]
    assert key not in server.output()[server.output().rindex("Typecase is ready.") :]  # where, never the key
    assert server.stop() == 0

    again = server_factory(name="first", data_dir=tmp_path / "first")
    del again.env["TYPECASE_ADMIN_API_KEY"]
    again.start().wait_ready()
    assert banner_of(again.output())["Admin key"] == str(key_file)  # printed on every start, not only the first
    assert key not in again.output()
    response = httpx.get(f"http://127.0.0.1:{again.http_port}/v1/auth/me", headers={"authorization": f"Bearer {key}"})
    assert response.json()["user"]["username"] == "admin"


def test_admin_password_opens_the_username_and_password_sign_in(server_factory):
    server = server_factory(env={"TYPECASE_ADMIN_PASSWORD": "correct horse battery"}).start()
    server.wait_ready()
    rows = banner_of(server.output())
    assert rows["Sign in"].startswith("user 'admin' with TYPECASE_ADMIN_PASSWORD")
    assert rows["Admin key"].startswith("TYPECASE_ADMIN_API_KEY")
    login = httpx.post(
        server.http_url + "/v1/auth:login", json={"username": "admin", "password": "correct horse battery"}
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    me = httpx.get(server.http_url + "/v1/auth/me", headers={"authorization": f"Bearer {token}"})
    assert me.json()["user"]["role"] == "USER_ROLE_ADMIN", me.text
    wrong = httpx.post(server.http_url + "/v1/auth:login", json={"username": "admin", "password": "nope"})
    assert wrong.status_code == 401, wrong.text
    assert ADMIN_KEY not in server.output()
