"""The analyses pages and the operator dashboard: thin views over the selectors, the services and
the page data of ``analyses.pages`` (templates in ``templates/analyses/`` and
``templates/reliability/``).

Every page needs a login; another user's analysis or card is "not found"; staff see everything
and alone see the dashboard, whose buttons need ``reliability.operate_controls`` too. Writes
are POSTs under CSRF protection.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from analyses.forms import AnalysisFilterForm, AnalysisForm, CardStatusForm
from analyses.models import Analysis, Card
from analyses.pages import analysis_list_page, analysis_page
from analyses.selectors import analyses_visible_to, cards_visible_to
from analyses.services import (
    InvalidAnalysisRequest,
    SubmissionRateLimited,
    analysis_cancel,
    analysis_resume,
    analysis_submit,
    card_set_status,
)
from reliability.controls import (
    ACTIONS_BY_SLUG,
    BreakerActionError,
    budget_resume,
    may_operate_controls,
)
from reliability.dashboard import dashboard_snapshot
from reliability.models import CircuitBreaker, RateLimitBudget

# Sent by analysis.js when it wants a card back as a fragment rather than a redirect.
FRAGMENT_HEADER = "X-Eidolon-Fragment"


def _visible_analysis(request: HttpRequest, analysis_id: int) -> Analysis:
    return get_object_or_404(analyses_visible_to(request.user), pk=analysis_id)


def _visible_card(request: HttpRequest, analysis_id: int, card_id: int) -> Card:
    return get_object_or_404(cards_visible_to(request.user), pk=card_id, analysis_id=analysis_id)


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


@login_required
@require_GET
def analysis_list(request: HttpRequest) -> HttpResponse:
    filter_form = AnalysisFilterForm(request.GET)
    status = filter_form.cleaned_data["status"] if filter_form.is_valid() else ""
    context = analysis_list_page(request.user, status=status, page_number=request.GET.get("page"))
    return TemplateResponse(request, "analyses/list.html", {**context, "filter_form": filter_form})


def _new_analysis_page(
    request: HttpRequest, form: AnalysisForm, *, status: int = 200, error: str = ""
) -> TemplateResponse:
    return TemplateResponse(
        request, "analyses/new.html", {"form": form, "error": error}, status=status
    )


@login_required
@require_http_methods(["GET", "POST"])
def analysis_new(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _new_analysis_page(request, AnalysisForm())
    form = AnalysisForm(request.POST)
    if not form.is_valid():
        return _new_analysis_page(request, form, status=400)
    try:
        analysis = analysis_submit(user=request.user, **form.cleaned_data)
    except SubmissionRateLimited as limited:
        response = _new_analysis_page(request, form, status=429, error=limited.message)
        response["Retry-After"] = str(math.ceil(limited.retry_after))
        return response
    except InvalidAnalysisRequest as invalid:
        form.add_error(invalid.field, invalid.message)
        return _new_analysis_page(request, form, status=400)
    messages.success(request, f"Analysis #{analysis.pk} is queued.")
    return redirect("analyses:detail", analysis_id=analysis.pk)


@login_required
@require_GET
def analysis_detail_page(request: HttpRequest, analysis_id: int) -> HttpResponse:
    analysis = _visible_analysis(request, analysis_id)
    return TemplateResponse(request, "analyses/detail.html", analysis_page(analysis))


@login_required
@require_GET
def analysis_summary_fragment(request: HttpRequest, analysis_id: int) -> HttpResponse:
    """The summaries and score alone: what the page swaps in when the analysis finishes."""
    analysis = _visible_analysis(request, analysis_id)
    return TemplateResponse(
        request, "analyses/_summary.html", {"analysis": analysis, "summary": analysis.summary}
    )


def _act_on_analysis(
    request: HttpRequest, analysis_id: int, action: Callable[..., object], done: str
) -> HttpResponse:
    analysis = _visible_analysis(request, analysis_id)
    try:
        action(analysis_id=analysis.pk, actor=_actor(request))
    except InvalidAnalysisRequest as refused:
        messages.warning(request, refused.message)
    else:
        messages.success(request, done)
    return redirect("analyses:detail", analysis_id=analysis.pk)


@login_required
@require_POST
def analysis_cancel_view(request: HttpRequest, analysis_id: int) -> HttpResponse:
    return _act_on_analysis(
        request, analysis_id, analysis_cancel, "Cancel requested: what is done is kept."
    )


@login_required
@require_POST
def analysis_resume_view(request: HttpRequest, analysis_id: int) -> HttpResponse:
    return _act_on_analysis(
        request, analysis_id, analysis_resume, "Resumed: the functions left are queued again."
    )


@login_required
@require_GET
def card_fragment(request: HttpRequest, analysis_id: int, card_id: int) -> HttpResponse:
    """One card as the page shows it, for analysis.js to insert when it is created."""
    card = _visible_card(request, analysis_id, card_id)
    return TemplateResponse(request, "analyses/_card.html", {"card": card})


@login_required
@require_POST
def card_status_view(request: HttpRequest, analysis_id: int, card_id: int) -> HttpResponse:
    card = _visible_card(request, analysis_id, card_id)
    form = CardStatusForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(
            "status must be one of: new, acknowledged, dismissed, fixed",
            content_type="text/plain",
        )
    card_set_status(card=card, status=form.cleaned_data["status"], actor=_actor(request))
    if request.headers.get(FRAGMENT_HEADER):
        return TemplateResponse(request, "analyses/_card.html", {"card": card})
    detail = reverse("analyses:detail", kwargs={"analysis_id": analysis_id})
    return redirect(f"{detail}#card-{card.pk}")


# --- the operator dashboard -------------------------------------------------------------------


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous users go to the login page; signed-in users who are not staff get a 403."""

    @wraps(view)
    def staff_only(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("the operator dashboard is for staff")
        return view(request, *args, **kwargs)

    return login_required(staff_only)


def operator_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff who also hold ``reliability.operate_controls``; other staff get a 403."""

    @wraps(view)
    def operators_only(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not may_operate_controls(request.user):
            raise PermissionDenied("operating the controls needs reliability.operate_controls")
        return view(request, *args, **kwargs)

    return staff_required(operators_only)


@staff_required
@require_GET
def operations_dashboard(request: HttpRequest) -> HttpResponse:
    context = {
        **dashboard_snapshot(now=time.time()),
        "may_operate": may_operate_controls(request.user),
    }
    return TemplateResponse(request, "reliability/operations.html", context)


@operator_required
@require_POST
def breaker_action_view(request: HttpRequest, name: str, action: str) -> HttpResponse:
    """Reset, force open, disable or enable a breaker (``action`` as in the URL: force-open); the
    drastic ones only with a reason, which the form asks for."""
    operate = ACTIONS_BY_SLUG.get(action)
    if operate is None or not CircuitBreaker.objects.filter(name=name).exists():
        raise Http404("no such breaker or action")
    reason = request.POST.get("reason", "").strip()
    if operate.needs_reason and not reason:
        messages.warning(request, f"{operate.label}: give a reason first; nothing was done.")
        return redirect("operations:dashboard")
    try:
        breaker = operate(name=name, actor=_actor(request), reason=reason or None)
    except BreakerActionError as refused:
        messages.warning(request, str(refused))
    else:
        messages.success(request, f"Breaker {name} is now {breaker.get_state_display()}.")
    return redirect("operations:dashboard")


@operator_required
@require_POST
def budget_resume_view(request: HttpRequest, name: str) -> HttpResponse:
    """End a budget's pause now."""
    if not RateLimitBudget.objects.filter(name=name).exists():
        raise Http404("no such budget")
    budget_resume(name=name, actor=_actor(request))
    messages.success(request, f"Budget {name} admits requests again.")
    return redirect("operations:dashboard")
