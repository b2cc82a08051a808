"""The JSON API (django-ninja), mounted at ``/api/``: OpenAPI at ``/api/openapi.json``, docs at
``/api/docs``.

Every operation needs a user: a personal token (``Authorization: Bearer eid_...``), or the
Django session of a logged-in browser, whose writes must carry the CSRF token
(``X-CSRFToken``) since a browser sends its cookies to any site's requests. No credentials is
401; the handlers read the user from ``request.auth``.

Errors are ``{"detail": ...}``: the services' exceptions become statuses here (the routers
stay free of HTTP), and each 4xx an operation declares is documented with that body.
"""

from __future__ import annotations

import math
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from analyses.api import router as analyses_router
from analyses.services import InvalidAnalysisRequest, SubmissionRateLimited
from eidolon_site.accounts import bearer_token, user_for_token
from reliability.api import router as reliability_router
from reliability.controls import BreakerActionError
from reliability.dbthread import in_db_thread

logger = structlog.get_logger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class BearerTokenAuth(HttpBearer):
    """``Authorization: Bearer <personal token>`` (see ``eidolon_site.accounts``)."""

    async def __call__(self, request: HttpRequest) -> AbstractBaseUser | None:
        raw = bearer_token(request.headers.get("Authorization"))
        return None if raw is None else await self.authenticate(request, raw)

    async def authenticate(self, request: HttpRequest, token: str) -> AbstractBaseUser | None:
        user = await in_db_thread(user_for_token, token)
        if user is not None:
            request.user = user  # the request log names the token's owner
        return user


class SessionCookieAuth(APIKeyCookie):
    """A logged-in browser's session; its unsafe requests must pass Django's CSRF check."""

    param_name = settings.SESSION_COOKIE_NAME

    async def __call__(self, request: HttpRequest) -> AbstractBaseUser | None:
        return await self.authenticate(request, None)

    async def authenticate(self, request: HttpRequest, key: str | None) -> AbstractBaseUser | None:
        user = await request.auser()
        if not user.is_authenticated:
            return None
        if request.method not in SAFE_METHODS and check_csrf(request) is not None:
            raise HttpError(
                403, "CSRF check failed: send the csrftoken cookie's value as X-CSRFToken"
            )
        return user


ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                        "description": "Where: body, query or path, then the field's name.",
                    },
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
                "required": ["loc", "msg", "type"],
            },
        }
    },
    "required": ["detail"],
}
ERROR_DESCRIPTIONS = {
    400: "The request cannot be used (bad source or provider, unreadable body)",
    401: "No valid token or session",
    403: "Not allowed (staff only, or a session write without the CSRF token)",
    404: "No such object among those the caller may see",
    409: "Not possible in the object's current state",
    413: "The request body is larger than EIDOLON_MAX_REQUEST_BYTES",
    422: "Validation failed; each error's loc names the field",
    429: "Too many submissions; Retry-After says when to try again",
}


def document_errors(schema: dict[str, Any]) -> None:
    """Give every error status its ``{"detail": ...}`` body; add those every operation may
    answer: 401 (all), 422 (any input), 400 (a body that is not JSON), 413 (a body too large),
    403 (session writes)."""
    schema["components"]["schemas"]["Error"] = ERROR_SCHEMA
    schema["components"]["schemas"]["ValidationError"] = VALIDATION_ERROR_SCHEMA
    for path_item in schema["paths"].values():
        for method, operation in path_item.items():
            responses = operation["responses"]
            statuses = {401}
            if operation.get("parameters") or operation.get("requestBody"):
                statuses.add(422)
            if operation.get("requestBody"):
                statuses.update((400, 413))
            if method.upper() not in SAFE_METHODS:
                statuses.add(403)
            for status in statuses:
                responses.setdefault(status, {})
            for status, response in responses.items():
                if int(status) >= 400:
                    name = "ValidationError" if int(status) == 422 else "Error"
                    response["description"] = ERROR_DESCRIPTIONS[int(status)]
                    response["content"] = {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                    }
            if 429 in responses:
                responses[429]["headers"] = {
                    "Retry-After": {
                        "description": "Seconds until a submission may be accepted again",
                        "schema": {"type": "integer"},
                    }
                }


class EidolonAPI(NinjaAPI):
    def get_openapi_schema(self, **kwargs: Any):
        schema = super().get_openapi_schema(**kwargs)
        document_errors(schema)
        return schema


api = EidolonAPI(
    title="Eidolon",
    version="1",
    description="Analyse Python codebases with Claude; watch the analyses and steer the "
    "reliability controls. Authenticate with `Authorization: Bearer <token>` "
    "(`manage.py create_token USERNAME`) or a logged-in session.",
    urls_namespace="api",
    auth=[BearerTokenAuth(), SessionCookieAuth()],
)
api.add_router("", analyses_router)
api.add_router("/reliability", reliability_router)


def error_response(
    request: HttpRequest, *, status: int, detail: str, headers: dict[str, str] | None = None
) -> HttpResponse:
    response = api.create_response(request, {"detail": detail}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


@api.exception_handler(AuthenticationError)
def unauthenticated(request: HttpRequest, error: AuthenticationError) -> HttpResponse:
    return error_response(
        request,
        status=401,
        detail="authentication required: Authorization: Bearer <token>, or log in",
        headers={"WWW-Authenticate": 'Bearer realm="eidolon"'},
    )


@api.exception_handler(ObjectDoesNotExist)
def not_found(request: HttpRequest, error: ObjectDoesNotExist) -> HttpResponse:
    return error_response(request, status=404, detail="not found")


@api.exception_handler(RequestDataTooBig)
def body_too_large(request: HttpRequest, error: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    logger.info("api_request_refused", status=413, code="body_too_large", limit=limit)
    return error_response(
        request, status=413, detail=f"the request body is larger than {limit} bytes"
    )


@api.exception_handler(InvalidAnalysisRequest)
def invalid_analysis_request(request: HttpRequest, error: InvalidAnalysisRequest) -> HttpResponse:
    status = 409 if error.code == "finished" else 400
    logger.info("api_request_refused", status=status, code=error.code, reason=error.message)
    return error_response(request, status=status, detail=error.message)


@api.exception_handler(SubmissionRateLimited)
def submission_rate_limited(request: HttpRequest, error: SubmissionRateLimited) -> HttpResponse:
    retry_after = math.ceil(error.retry_after)
    logger.info("api_request_refused", status=429, code="rate_limited", retry_after=retry_after)
    return error_response(
        request, status=429, detail=error.message, headers={"Retry-After": str(retry_after)}
    )


@api.exception_handler(BreakerActionError)
def breaker_action_refused(request: HttpRequest, error: BreakerActionError) -> HttpResponse:
    logger.info("api_request_refused", status=409, code="breaker_state", reason=str(error))
    return error_response(request, status=409, detail=str(error))
