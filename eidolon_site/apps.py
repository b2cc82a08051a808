from django.apps import AppConfig


class EidolonSiteConfig(AppConfig):
    name = "eidolon_site"
    verbose_name = "Eidolon site"
