"""Page URLs: the analyses (namespace ``analyses``) and the operator dashboard (``operations``,
included at ``/operations/`` by ``eidolon_site.urls``)."""

from django.urls import path

from analyses import views

app_name = "analyses"

urlpatterns = [
    path("", views.analysis_list, name="list"),
    path("new/", views.analysis_new, name="new"),
    path("<int:analysis_id>/", views.analysis_detail_page, name="detail"),
    path("<int:analysis_id>/summary/", views.analysis_summary_fragment, name="summary"),
    path("<int:analysis_id>/cancel/", views.analysis_cancel_view, name="cancel"),
    path("<int:analysis_id>/resume/", views.analysis_resume_view, name="resume"),
    path("<int:analysis_id>/cards/<int:card_id>/", views.card_fragment, name="card"),
    path(
        "<int:analysis_id>/cards/<int:card_id>/status/",
        views.card_status_view,
        name="card-status",
    ),
]

operations_urlpatterns = [
    path("", views.operations_dashboard, name="dashboard"),
    path(
        "breakers/<str:name>/<slug:action>/",
        views.breaker_action_view,
        name="breaker-action",
    ),
    path("budgets/<str:name>/resume/", views.budget_resume_view, name="budget-resume"),
]
