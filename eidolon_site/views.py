from django.template.response import TemplateResponse


def home(request):
    return TemplateResponse(request, "eidolon_site/home.html")
