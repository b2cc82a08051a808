from django.apps import AppConfig


class AnalysesConfig(AppConfig):
    name = "analyses"
    verbose_name = "Analyses"
    default_auto_field = "django.db.models.BigAutoField"
