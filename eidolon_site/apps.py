from django.apps import AppConfig


class EidolonSiteConfig(AppConfig):
    name = "eidolon_site"
    verbose_name = "Eidolon site"

    def ready(self) -> None:
        from eidolon_site import checks  # noqa: F401 (registers the middleware deploy checks)
