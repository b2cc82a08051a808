"""Login brute force (django-axes): whose attempts count together, and what a locked-out login
gets back.

Axes counts wrong passwords per (username, connecting address) and, past
``AXES_FAILURE_LIMIT``, refuses that pair's logins (the right password too) for
``AXES_COOLOFF_TIME``. An operator unlocks earlier with ``manage.py axes_reset_username NAME``
(or ``axes_reset``), or by deleting the pair's row under the admin's "Access attempts".
"""

from __future__ import annotations

import math

from axes.helpers import get_cool_off
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse

LOCKED_OUT_MESSAGE = (
    "Too many failed logins for this account from your address: logins are locked. "
    "Try again later, or ask an operator to unlock the account."
)


def client_address(request: HttpRequest) -> str:
    """The address the connection came from; a client-sent ``X-Forwarded-For`` is ignored."""
    return request.META.get("REMOTE_ADDR", "")


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials=None
) -> HttpResponse:
    """429 with the reason and ``Retry-After``: the login page's, or JSON for scripts."""
    cool_off = get_cool_off(request)
    retry_after = math.ceil(cool_off.total_seconds()) if cool_off else None
    if request.headers.get("Accept", "").startswith("application/json"):
        response: HttpResponse = JsonResponse({"detail": LOCKED_OUT_MESSAGE}, status=429)
    else:
        response = TemplateResponse(
            request,
            "registration/locked_out.html",
            {"message": LOCKED_OUT_MESSAGE, "retry_after": retry_after},
            status=429,
        )
        response.render()
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response
