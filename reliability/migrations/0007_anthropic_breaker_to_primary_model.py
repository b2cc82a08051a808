"""The single ``anthropic`` breaker and budget become the primary model's
(``anthropic:<EIDOLON_AI_MODELS[0]>``): operators' tuning, state, totals and history carry over
to the model that served before there were several. Renamed only while the primary's row does
not exist yet (``first_start`` creates the members after ``migrate``); otherwise left alone."""

from django.conf import settings
from django.db import migrations

FAMILY = "anthropic"


def primary_name() -> str:
    return f"{FAMILY}:{settings.EIDOLON_AI_MODELS[0]}"


def rename(apps, schema_editor, *, old: str, new: str) -> None:
    ControlChange = apps.get_model("reliability", "ControlChange")
    using = schema_editor.connection.alias
    for model_name, target in (("CircuitBreaker", "breaker"), ("RateLimitBudget", "budget")):
        model = apps.get_model("reliability", model_name)
        rows = model.objects.using(using)
        if rows.filter(name=new).exists() or not rows.filter(name=old).exists():
            continue
        rows.filter(name=old).update(name=new)
        ControlChange.objects.using(using).filter(target=target, name=old).update(name=new)


def forwards(apps, schema_editor) -> None:
    rename(apps, schema_editor, old=FAMILY, new=primary_name())


def backwards(apps, schema_editor) -> None:
    rename(apps, schema_editor, old=primary_name(), new=FAMILY)


class Migration(migrations.Migration):
    dependencies = [
        ("reliability", "0006_operate_controls_permission"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
