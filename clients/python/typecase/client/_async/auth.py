"""`client.auth`: login, tokens, the caller, users, API keys and invite codes (AuthService)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from typecase.client import _requests as rq
from typecase.client._async.resource import AsyncResource
from typecase.v1 import auth_pb2, auth_pb2_grpc

if TYPE_CHECKING:
    from typecase.client._async.client import AsyncClient


class AsyncAuth(AsyncResource):
    """Login, tokens, the caller, users, API keys, self-registration and invite codes (AuthService)."""

    def __init__(self, client: AsyncClient, stub: auth_pb2_grpc.AuthServiceStub) -> None:
        super().__init__(client)
        self.stub = stub

    async def login(self, username: str, password: str, *, use: bool = True,
                    timeout: float | None = None) -> auth_pb2.LoginResponse:
        """Exchange a password for tokens; with `use`, later calls send the access token."""
        request = auth_pb2.LoginRequest(username=username, password=password)
        response = await self._unary(self.stub.Login, request, auth_pb2.LoginResponse, timeout)
        if use:
            self._client.credential = response.access_token
        return response

    async def refresh(self, refresh_token: str, *, use: bool = True,
                      timeout: float | None = None) -> auth_pb2.RefreshTokenResponse:
        request = auth_pb2.RefreshTokenRequest(refresh_token=refresh_token)
        response = await self._unary(self.stub.RefreshToken, request, auth_pb2.RefreshTokenResponse, timeout)
        if use:
            self._client.credential = response.access_token
        return response

    async def me(self, *, timeout: float | None = None) -> auth_pb2.GetMeResponse:
        """The authenticated caller (`.user`) and the API key used (`.api_key_id`)."""
        return await self._unary(self.stub.GetMe, auth_pb2.GetMeRequest(), auth_pb2.GetMeResponse, timeout)

    async def create_user(self, username: str, password: str, *, role: str = "user", display_name: str = "",
                          email: str = "", timeout: float | None = None) -> auth_pb2.User:
        request = rq.create_user(username, password, role, display_name, email)
        return (await self._unary(self.stub.CreateUser, request, auth_pb2.CreateUserResponse, timeout)).user

    async def get_user(self, user_id: str, *, timeout: float | None = None) -> auth_pb2.User:
        request = auth_pb2.GetUserRequest(user_id=user_id)
        return (await self._unary(self.stub.GetUser, request, auth_pb2.GetUserResponse, timeout)).user

    def list_users(self, *, keyword: str = "", page_size: int = 100,
                   timeout: float | None = None) -> AsyncIterator[auth_pb2.User]:
        request = auth_pb2.ListUsersRequest(keyword=keyword, page_size=page_size)
        return self._pages(self.stub.ListUsers, request, "users", timeout)

    async def delete_user(self, user_id: str, *, timeout: float | None = None) -> None:
        request = auth_pb2.DeleteUserRequest(user_id=user_id)
        await self._unary(self.stub.DeleteUser, request, auth_pb2.DeleteUserResponse, timeout)

    async def create_api_key(self, name: str, *, owner_id: str = "", expire_time: datetime | None = None,
                             scopes: Sequence[str] = (),
                             timeout: float | None = None) -> auth_pb2.CreateApiKeyResponse:
        """Create an API key; the response's `.secret` is shown only this once. `scopes`: "api" (the default) and/or
        "proxy" (an access key for the LLM API proxy)."""
        request = rq.create_api_key(name, owner_id, expire_time, scopes)
        return await self._unary(self.stub.CreateApiKey, request, auth_pb2.CreateApiKeyResponse, timeout)

    def list_api_keys(self, *, owner_id: str = "", show_revoked: bool = False, page_size: int = 100,
                      timeout: float | None = None) -> AsyncIterator[auth_pb2.ApiKey]:
        request = auth_pb2.ListApiKeysRequest(owner_id=owner_id, show_revoked=show_revoked, page_size=page_size)
        return self._pages(self.stub.ListApiKeys, request, "api_keys", timeout)

    async def delete_api_key(self, api_key_id: str, *, timeout: float | None = None) -> None:
        request = auth_pb2.DeleteApiKeyRequest(api_key_id=api_key_id)
        await self._unary(self.stub.DeleteApiKey, request, auth_pb2.DeleteApiKeyResponse, timeout)

    async def register(self, username: str, password: str, *, invite_code: str = "", display_name: str = "",
                       email: str = "", use: bool = True,
                       timeout: float | None = None) -> auth_pb2.RegisterResponse:
        """Create one's own account (when the server allows self-registration) and sign in; with `use`, later calls
        send the access token."""
        request = auth_pb2.RegisterRequest(username=username, password=password, invite_code=invite_code,
                                           display_name=display_name, email=email)
        response = await self._unary(self.stub.Register, request, auth_pb2.RegisterResponse, timeout)
        if use:
            self._client.credential = response.access_token
        return response

    async def create_invite_code(self, *, note: str = "", max_uses: int = 1, role: str = "user",
                                 expire_time: datetime | None = None,
                                 timeout: float | None = None) -> auth_pb2.CreateInviteCodeResponse:
        """Create an invite code (admins); the response's `.code` is shown only this once."""
        request = rq.create_invite_code(note, max_uses, role, expire_time)
        return await self._unary(self.stub.CreateInviteCode, request, auth_pb2.CreateInviteCodeResponse, timeout)

    def list_invite_codes(self, *, show_revoked: bool = False, page_size: int = 100,
                          timeout: float | None = None) -> AsyncIterator[auth_pb2.InviteCode]:
        request = auth_pb2.ListInviteCodesRequest(show_revoked=show_revoked, page_size=page_size)
        return self._pages(self.stub.ListInviteCodes, request, "invite_codes", timeout)

    async def delete_invite_code(self, invite_code_id: str, *, timeout: float | None = None) -> None:
        request = auth_pb2.DeleteInviteCodeRequest(invite_code_id=invite_code_id)
        await self._unary(self.stub.DeleteInviteCode, request, auth_pb2.DeleteInviteCodeResponse, timeout)
